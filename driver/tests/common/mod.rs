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

/// The shared secret of the tests' drivers and executors (`CANOPY_AUTH_TOKEN_FILE` in their
/// environment), so they may listen on non-loopback addresses.
pub const TEST_TOKEN: &str = "canopy-test-token-0123456789";

pub fn token_file() -> &'static Path {
    static FILE: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, path) = FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{TEST_TOKEN}\n")).unwrap();
        (dir, path)
    });
    path
}

pub fn driver_command(args: &[&str]) -> Command {
    let mut command = Command::new(driver_bin());
    command
        .args(args)
        .env("CANOPY_EXECUTOR_BIN", executor_bin())
        .env("CANOPY_AUTH_TOKEN_FILE", token_file())
        .env_remove("RUST_LOG")
        .env_remove("CANOPY_DATA");
    command
}

/// A client's credentials with the tests' token.
pub fn test_security() -> canopy_runtime::security::Security {
    let token = canopy_runtime::security::Token::from_file(token_file()).unwrap();
    canopy_runtime::security::Security { token: Some(token), ..Default::default() }
}

/// `canopy-executor` with the tests' token.
pub fn executor_command() -> Command {
    let mut command = Command::new(executor_bin());
    command.env("CANOPY_AUTH_TOKEN_FILE", token_file()).env_remove("RUST_LOG");
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
        Executor::start_with(executor_command(), "127.0.0.1", extra)
    }

    /// Starts an executor on `host` (in its network namespace, if it has one).
    pub fn start_on(host: &Host, extra: &[&str]) -> Executor {
        Executor::start_with(host.command(&executor_bin()), &host.ip, extra)
    }

    fn start_with(mut command: Command, ip: &str, extra: &[&str]) -> Executor {
        let mut child = command
            .env("CANOPY_AUTH_TOKEN_FILE", token_file())
            .args(["--listen", &format!("{ip}:0"), "--quiet"])
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
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).stderr(Stdio::null()).status();
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

/// A trigger for [`driver_with_trigger`]: runs `act` once the grower logs tree level `depth` done.
pub fn after_level(depth: u32, mut act: impl FnMut()) -> impl FnMut(&str) -> bool {
    let marker = format!("depth={depth}");
    move |line: &str| {
        let fire = line.contains("tree level done") && line.contains(&marker);
        if fire {
            act();
        }
        fire
    }
}

/// The bytes of model file `name` in a run's output directory `dir`.
pub fn model_bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join("models").join(name)).expect("model file readable")
}

/// Scores `data` with the model file `model` into `out` (`canopy-driver predict --quiet`).
pub fn predict(model: &Path, data: &Path, out: &Path) -> Output {
    let arg = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    driver(&["predict", "--quiet", "--model", &arg(model), "--data", &arg(data), "--out", &arg(out)])
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET on 127.0.0.1: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Polls `addr` + `path` until it answers 200 or `seconds` pass.
pub fn wait_http_ok(addr: &str, path: &str, seconds: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if http_get(addr, path).is_ok_and(|(s, _)| s == 200) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("http://{addr}{path} did not answer 200 within {seconds} s");
}

/// A background process killed on drop (Prometheus, the Pushgateway).
pub struct Service(pub Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Debian package's binary, or a failure that says how to get it.
pub fn required_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("`{name}` is not installed: run scripts/test.sh (it installs Debian's prometheus packages)"))
}

/// A host of a small test cluster: its own network namespace with a veth pair and an address
/// when the tests run as root, else a 127.0.0.x address.
pub struct Host {
    pub ip: String,
    /// The address that reaches the test's own host (where the driver listens) from here.
    pub gateway: String,
    netns: Option<String>,
}

impl Host {
    /// A command that runs `program` on this host.
    pub fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    pub fn is_namespace(&self) -> bool {
        self.netns.is_some()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(ns) = &self.netns {
            // Deleting the namespace deletes its end of the veth pair, and so the pair.
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run_ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `n` hosts: network namespaces when possible (root, `ip netns`), else loopback addresses.
pub fn hosts(n: usize) -> Vec<Host> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    (0..n)
        .map(|_| {
            let k = NEXT.fetch_add(1, Ordering::Relaxed);
            let ns = format!("canopy-{}-{k}", std::process::id());
            let (outside, inside) = (format!("cvo{}-{k}", std::process::id() % 10000), format!("cvi{}-{k}", std::process::id() % 10000));
            let (gateway, ip) = (format!("10.213.{k}.1"), format!("10.213.{k}.2"));
            let made = run_ip(&["netns", "add", &ns])
                && run_ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside])
                && run_ip(&["link", "set", &inside, "netns", &ns])
                && run_ip(&["addr", "add", &format!("{gateway}/24"), "dev", &outside])
                && run_ip(&["link", "set", &outside, "up"])
                && run_ip(&["netns", "exec", &ns, "ip", "addr", "add", &format!("{ip}/24"), "dev", &inside])
                && run_ip(&["netns", "exec", &ns, "ip", "link", "set", &inside, "up"])
                && run_ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            if made {
                Host { ip, gateway, netns: Some(ns) }
            } else {
                let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()).status();
                let _ = Command::new("ip").args(["link", "del", &outside]).stderr(Stdio::null()).status();
                Host { ip: format!("127.0.0.{}", 10 + k % 200), gateway: "127.0.0.1".into(), netns: None }
            }
        })
        .collect()
}

/// Reads one sample of a metric from a Prometheus text endpoint.
pub fn metric(addr: &str, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics").ok()?;
    body.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
