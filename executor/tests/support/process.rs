//! The executor binary as a child process of a test; killed when dropped.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Executor {
    pub child: Child,
    pub addr: String,
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `canopy-executor` on a free loopback port as `id`, with `args`, once it says where it listens.
pub fn start(id: &str, args: &[String]) -> Executor {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy-executor"))
        .args(["--listen", "127.0.0.1:0", "--quiet", "--executor-id", id])
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("canopy-executor listening on ").unwrap().to_string();
    Executor { child, addr }
}
