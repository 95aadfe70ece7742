//! Executors as the driver sees them: local processes it spawns, connections with the
//! protocol handshake, and the heartbeat monitor that declares silent executors dead.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_proto::v1::executor_client::ExecutorClient;
use canopy_proto::v1::{HandshakeRequest, HeartbeatRequest};
use canopy_proto::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::error::{DriverError, Result};

/// Finds `canopy-executor`: an explicit path, `CANOPY_EXECUTOR_BIN`, or next to this binary.
pub fn executor_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("CANOPY_EXECUTOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().map_err(|e| DriverError::ExecutorSpawn { binary: "canopy-executor".into(), reason: e.to_string() })?;
    // Test binaries live in target/*/deps; the executor is one level up.
    for dir in me.ancestors().skip(1).take(2) {
        let candidate = dir.join(format!("canopy-executor{}", std::env::consts::EXE_SUFFIX));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DriverError::ExecutorSpawn {
        binary: "canopy-executor".into(),
        reason: format!("not found next to {}; build it (cargo build) or pass --executor-bin", me.display()),
    })
}

/// Executor processes started by the driver on 127.0.0.1; killed when dropped.
pub struct LocalExecutors {
    children: Vec<Child>,
    pub addrs: Vec<String>,
}

impl LocalExecutors {
    pub async fn spawn(count: usize, binary: &Path, quiet: bool, extra_args: &[String]) -> Result<Self> {
        let mut children = Vec::with_capacity(count);
        let mut addrs = Vec::with_capacity(count);
        let fail = |reason: String| DriverError::ExecutorSpawn { binary: binary.to_path_buf(), reason };
        for i in 0..count {
            let mut command = Command::new(binary);
            command
                .arg("--listen")
                .arg("127.0.0.1:0")
                .arg("--executor-id")
                .arg(format!("executor-{}", i + 1))
                .arg("--metrics-listen")
                .arg("127.0.0.1:0")
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            if quiet {
                command.arg("--quiet");
            }
            let mut child = command.spawn().map_err(|e| fail(e.to_string()))?;
            let stdout = child.stdout.take().ok_or_else(|| fail("no stdout".into()))?;
            let mut lines = BufReader::new(stdout).lines();
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .map_err(|_| fail("did not report its address within 30 s".into()))?
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail("exited before reporting its address".into()))?;
            let addr = line
                .strip_prefix("canopy-executor listening on ")
                .ok_or_else(|| fail(format!("unexpected first line {line:?}")))?
                .trim()
                .to_string();
            addrs.push(addr);
            children.push(child);
        }
        Ok(LocalExecutors { children, addrs })
    }

    /// Process ids, for tests that kill one.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }
}

/// A connected executor.
#[derive(Clone)]
pub struct ExecutorHandle {
    pub id: String,
    pub addr: String,
    pub pid: u32,
    /// Where the executor serves Prometheus metrics; empty if it does not.
    pub metrics_addr: String,
    pub channel: Channel,
    pub control: ExecutorClient<Channel>,
    /// Becomes true when heartbeats stop; calls in flight give up at once.
    pub dead: watch::Receiver<bool>,
    dead_tx: Arc<watch::Sender<bool>>,
}

impl ExecutorHandle {
    pub fn declare_dead(&self) {
        let _ = self.dead_tx.send(true);
    }
    pub fn is_dead(&self) -> bool {
        *self.dead.borrow()
    }
}

/// Connects and shakes hands; a version mismatch or refusal names the address.
pub async fn connect(addr: &str, timeout: Duration) -> Result<ExecutorHandle> {
    let unreachable = |reason: String| DriverError::Unreachable { addr: addr.to_string(), reason };
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| unreachable(format!("not a host:port address ({e})")))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    let channel = tokio::time::timeout(timeout, endpoint.connect())
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", timeout.as_secs_f64())))?
        .map_err(|e| unreachable(error_chain(&e)))?;
    let mut control =
        ExecutorClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES);
    let reply = tokio::time::timeout(timeout, control.handshake(HandshakeRequest { protocol_version: PROTOCOL_VERSION }))
        .await
        .map_err(|_| unreachable("handshake timed out".into()))?
        .map_err(|status| match status.code() {
            tonic::Code::FailedPrecondition | tonic::Code::Unimplemented => {
                DriverError::Refused { addr: addr.to_string(), reason: status.message().to_string() }
            }
            _ => unreachable(format!("{}: {}", status.code(), status.message())),
        })?
        .into_inner();
    let (dead_tx, dead) = watch::channel(false);
    info!(executor = %reply.executor_id, %addr, pid = reply.pid, "executor connected");
    Ok(ExecutorHandle {
        id: reply.executor_id,
        addr: addr.to_string(),
        pid: reply.pid,
        metrics_addr: reply.metrics_addr,
        channel,
        control,
        dead,
        dead_tx: Arc::new(dead_tx),
    })
}

/// The error and its causes on one line (transport errors hide the useful part in sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Polls every executor; one silent for `timeout` is declared dead. Stops when dropped.
pub struct HeartbeatMonitor {
    task: tokio::task::JoinHandle<()>,
}

impl HeartbeatMonitor {
    pub fn start(executors: Vec<ExecutorHandle>, interval: Duration, timeout: Duration) -> Self {
        let task = tokio::spawn(async move {
            let mut last_ok: Vec<Instant> = vec![Instant::now(); executors.len()];
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let probes = executors.iter().map(|e| {
                    let mut client = e.control.clone();
                    async move { tokio::time::timeout(interval, client.heartbeat(HeartbeatRequest {})).await.is_ok_and(|r| r.is_ok()) }
                });
                let answers = futures::future::join_all(probes).await;
                for (i, ok) in answers.into_iter().enumerate() {
                    if ok {
                        last_ok[i] = Instant::now();
                    } else if !executors[i].is_dead() && last_ok[i].elapsed() >= timeout {
                        warn!(executor = %executors[i].id, "no heartbeat for {:.1} s; declaring it dead", timeout.as_secs_f64());
                        executors[i].declare_dead();
                    }
                }
            }
        });
        HeartbeatMonitor { task }
    }
}

impl Drop for HeartbeatMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}
