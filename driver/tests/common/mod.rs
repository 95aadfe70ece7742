//! Helpers for the driver's integration tests: real binaries, real processes, real sockets.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn driver_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_canopy-driver"))
}

/// `canopy-executor` sits next to the driver once the workspace is built (`cargo test --workspace`).
pub fn executor_bin() -> PathBuf {
    let path = driver_bin().with_file_name(format!("canopy-executor{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} is missing: run the tests with `cargo test --workspace`", path.display());
    path
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn driver_command(args: &[&str]) -> Command {
    let mut command = Command::new(driver_bin());
    command.args(args).env("CANOPY_EXECUTOR_BIN", executor_bin()).env_remove("RUST_LOG").env_remove("CANOPY_DATA");
    command
}

/// Runs the driver to completion.
pub fn driver(args: &[&str]) -> Output {
    driver_command(args).output().expect("driver runs")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts success, showing stderr otherwise.
pub fn assert_ok(output: &Output) {
    assert!(output.status.success(), "driver failed:\n{}", stderr(output));
}

pub fn report(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// An executor process started by the test; killed when dropped.
pub struct Executor {
    pub child: Child,
    pub addr: String,
}

impl Executor {
    pub fn start(extra: &[&str]) -> Executor {
        let mut child = Command::new(executor_bin())
            .args(["--listen", "127.0.0.1:0", "--quiet"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("executor starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("executor prints its address");
        let addr = line.trim().strip_prefix("canopy-executor listening on ").expect("address line").to_string();
        Executor { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid().to_string()]).status().expect("kill runs");
        assert!(status.success());
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the driver, calls `on_line` for each stderr line until it returns true, then waits.
pub fn driver_with_trigger(args: &[&str], mut on_line: impl FnMut(&str) -> bool) -> (std::process::ExitStatus, String) {
    let mut child = driver_command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("driver starts");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut fired = false;
    let mut line = String::new();
    while err.read_line(&mut line).expect("stderr readable") > 0 {
        if !fired && on_line(&line) {
            fired = true;
        }
        log.push_str(&line);
        line.clear();
    }
    assert!(fired, "the trigger line never came:\n{log}");
    let status = child.wait().expect("driver exits");
    (status, log)
}
