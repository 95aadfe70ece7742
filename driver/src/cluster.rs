//! Executors as the driver sees them: local processes it spawns, connections with the
//! protocol handshake, and the heartbeat monitor that declares silent executors dead and
//! notices the ones that are decommissioning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_proto::v1::executor_client::ExecutorClient;
use canopy_proto::v1::{HandshakeRequest, HeartbeatRequest};
use canopy_proto::{ExecutorId, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, PROTOCOL_VERSION};
use canopy_runtime::security::{AuthChannel, Security, Token};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::{DriverError, Result};
use crate::registry::Registry;

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

/// Executor processes started by the driver on 127.0.0.1; killed when dropped, and they exit
/// by themselves if the driver dies first.
pub struct LocalExecutors {
    /// Held for their drop, which kills them.
    _children: Vec<Child>,
    /// Holds their token file; removed with them.
    _secrets: tempfile::TempDir,
}

impl LocalExecutors {
    /// Starts `count` executors named `executor-1`... that register with the driver at
    /// `driver`, one after the other, so they register in name order.
    /// They share our TLS files, and our token, which they read from a file only we can read.
    pub async fn spawn(spec: &SpawnSpec, driver: &str, registry: &Registry, security: &Security) -> Result<Self> {
        let (count, binary) = (spec.count, spec.binary.as_path());
        let mut children = Vec::with_capacity(count);
        let fail = |reason: String| DriverError::ExecutorSpawn { binary: binary.to_path_buf(), reason };
        let secrets = tempfile::Builder::new()
            .prefix("canopy-secrets-")
            .tempdir()
            .map_err(|e| fail(format!("cannot create a private directory: {e}")))?;
        let token_file = secrets.path().join("token");
        if let Some(token) = &security.token {
            token.write_private(&token_file).map_err(|e| fail(e.to_string()))?;
        }
        for i in 0..count {
            let id = ExecutorId(format!("executor-{}", i + 1));
            let mut command = Command::new(binary);
            command
                .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--exit-with-parent"])
                .arg("--executor-id")
                .arg(&id.0)
                .arg("--driver")
                .arg(driver)
                .args(security.tls_args())
                .args(&spec.extra_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            if spec.quiet {
                command.arg("--quiet");
            }
            if security.token.is_some() {
                command.arg("--auth-token-file").arg(&token_file);
            }
            let mut child = command.spawn().map_err(|e| fail(e.to_string()))?;
            let stdout = child.stdout.take().ok_or_else(|| fail("no stdout".into()))?;
            let mut lines = BufReader::new(stdout).lines();
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .map_err(|_| fail("did not report its address within 30 s".into()))?
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail("exited before reporting its address".into()))?;
            if !line.starts_with("canopy-executor listening on ") {
                return Err(fail(format!("unexpected first line {line:?}")));
            }
            children.push(child);
            let deadline = Instant::now() + Duration::from_secs(30);
            while registry.get(&id).is_none() {
                if Instant::now() > deadline {
                    return Err(fail(format!("{id} did not register with the driver at {driver} within 30 s")));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(LocalExecutors { _children: children, _secrets: secrets })
    }
}

/// A connected executor.
#[derive(Clone)]
pub struct ExecutorHandle {
    pub id: ExecutorId,
    pub addr: String,
    pub pid: u32,
    /// Differs between two starts of the executor process.
    pub incarnation: u64,
    /// Where the executor serves Prometheus metrics; empty if it does not.
    pub metrics_addr: String,
    pub channel: AuthChannel,
    pub control: ExecutorClient<AuthChannel>,
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
pub async fn connect(addr: &str, timeout: Duration, security: &Security) -> Result<ExecutorHandle> {
    let unreachable = |reason: String| DriverError::Unreachable { addr: addr.to_string(), reason };
    let endpoint = security.endpoint(addr).map_err(unreachable)?.connect_timeout(timeout).tcp_nodelay(true);
    let channel = tokio::time::timeout(timeout, endpoint.connect())
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", timeout.as_secs_f64())))?
        .map_err(|e| unreachable(canopy_runtime::error_chain(&e)))?;
    let channel = security.authorize(channel);
    let mut control =
        ExecutorClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_REQUEST_BYTES);
    let reply = tokio::time::timeout(timeout, control.handshake(HandshakeRequest { protocol_version: PROTOCOL_VERSION }))
        .await
        .map_err(|_| unreachable("handshake timed out".into()))?
        .map_err(|status| match status.code() {
            tonic::Code::FailedPrecondition | tonic::Code::Unimplemented | tonic::Code::Unauthenticated => {
                DriverError::Refused { addr: addr.to_string(), reason: status.message().to_string() }
            }
            _ => unreachable(format!("{}: {}", status.code(), status.message())),
        })?
        .into_inner();
    let (dead_tx, dead) = watch::channel(false);
    info!(executor = %reply.executor_id, %addr, pid = reply.pid, "executor connected");
    Ok(ExecutorHandle {
        id: ExecutorId(reply.executor_id),
        addr: addr.to_string(),
        pid: reply.pid,
        incarnation: reply.incarnation,
        metrics_addr: reply.metrics_addr,
        channel,
        control,
        dead,
        dead_tx: Arc::new(dead_tx),
    })
}

/// Polls every registered executor: one silent for `timeout` is declared dead and leaves the
/// registry; one that answers "decommissioning" is marked as leaving. Stops when dropped.
pub struct HeartbeatMonitor {
    task: tokio::task::JoinHandle<()>,
}

impl HeartbeatMonitor {
    pub fn start(registry: Registry, interval: Duration, timeout: Duration) -> Self {
        let task = tokio::spawn(async move {
            let mut last_ok: BTreeMap<ExecutorId, Instant> = BTreeMap::new();
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let members = registry.members();
                last_ok.retain(|id, _| members.iter().any(|m| m.handle.id == *id));
                let probes = members.iter().map(|m| {
                    let mut client = m.handle.control.clone();
                    async move { tokio::time::timeout(interval, client.heartbeat(HeartbeatRequest {})).await.ok().and_then(|r| r.ok()) }
                });
                let answers = futures::future::join_all(probes).await;
                for (member, answer) in members.iter().zip(answers) {
                    let id = &member.handle.id;
                    let seen = last_ok.entry(id.clone()).or_insert_with(Instant::now);
                    match answer {
                        Some(reply) => {
                            *seen = Instant::now();
                            if reply.into_inner().decommissioning {
                                registry.mark_leaving(id);
                            }
                        }
                        None if seen.elapsed() >= timeout && !member.handle.is_dead() => {
                            warn!(executor = %id, "no heartbeat for {:.1} s; declaring it dead", timeout.as_secs_f64());
                            member.handle.declare_dead();
                            registry.remove(id);
                        }
                        None => {}
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

/// Local executors to start: how many, and how.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub binary: PathBuf,
    pub count: usize,
    pub quiet: bool,
    pub extra_args: Vec<String>,
}

/// Where a driver's executors come from; any combination works, all go into one registry.
#[derive(Debug, Clone, Default)]
pub struct ClusterSpec {
    /// Serve registrations here (`--listen`); local executors need it, so they get a loopback
    /// port when it is not given.
    pub listen: Option<std::net::SocketAddr>,
    pub spawn: Option<SpawnSpec>,
    /// Executors already running, dialled in this order (`--executor-addrs`).
    pub addrs: Vec<String>,
    /// A `train` run waits for this many before it starts.
    pub min_executors: usize,
    /// A `train` run uses at most this many at once.
    pub max_executors: Option<usize>,
    pub registration_timeout: Duration,
    /// How the driver and its executors authenticate each other.
    pub security: Security,
}

impl ClusterSpec {
    /// Most executors a run uses at once: a sweep's count, else `--max-executors` (no cap
    /// when not given: partitions bound it).
    pub fn cap(&self, count: Option<usize>) -> usize {
        count.unwrap_or_else(|| self.max_executors.unwrap_or(usize::MAX))
    }
}

/// The driver's executors for the whole command: the registry, the registration endpoint, the
/// processes it spawned, and the heartbeat monitor.
pub struct Cluster {
    pub registry: Registry,
    pub endpoint: Option<crate::service::DriverEndpoint>,
    pub spec: ClusterSpec,
    _local: Option<LocalExecutors>,
    _monitor: HeartbeatMonitor,
}

impl Cluster {
    pub async fn start(spec: ClusterSpec, timeouts: &crate::run::Timeouts, metrics: &crate::metrics::DriverMetrics) -> Result<Self> {
        let registry = Registry::new(metrics.clone());
        let mut security = spec.security.clone();
        if spec.spawn.is_some() && !security.is_authenticated() {
            // Zero configuration for local runs, and still no unauthenticated port.
            security.token = Some(Token::generate().map_err(|e| DriverError::Internal(e.to_string()))?);
        }
        let listen = spec.listen.or_else(|| spec.spawn.as_ref().map(|_| ([127, 0, 0, 1], 0).into()));
        let endpoint = match listen {
            Some(listen) => {
                security.check_listen(listen, "--listen").map_err(|e| DriverError::Config(e.to_string()))?;
                Some(crate::service::start(listen, registry.clone(), &security, timeouts.connect, timeouts.heartbeat_interval).await?)
            }
            None => None,
        };
        for addr in &spec.addrs {
            let handle = connect(addr, timeouts.connect, &security).await?;
            if let Err(existing) = registry.admit(handle.clone(), 0, 0) {
                return Err(DriverError::Config(format!(
                    "executors at {} and {addr} both call themselves '{}'; executor ids must be unique",
                    existing.handle.addr, handle.id
                )));
            }
        }
        let local = match (&spec.spawn, &endpoint) {
            (Some(s), Some(endpoint)) => {
                // Spawned executors reach us on loopback whatever we listen on.
                let driver = std::net::SocketAddr::new([127, 0, 0, 1].into(), endpoint.addr.port()).to_string();
                Some(LocalExecutors::spawn(s, &driver, &registry, &security).await?)
            }
            _ => None,
        };
        let monitor = HeartbeatMonitor::start(registry.clone(), timeouts.heartbeat_interval, timeouts.heartbeat);
        metrics.set_wanted(spec.min_executors);
        Ok(Cluster { registry, endpoint, spec, _local: local, _monitor: monitor })
    }

    /// The executors a run starts with: the first `count` registered (a sweep's run), or with
    /// `None` every available one up to `--max-executors` once `--min-executors` are there.
    pub async fn members_for_run(&self, count: Option<usize>) -> Result<Vec<crate::registry::Member>> {
        let need = count.unwrap_or(self.spec.min_executors.max(1));
        let take = self.spec.cap(count);
        let timeout = self.spec.registration_timeout;
        match self.registry.wait_for(need, timeout).await {
            Ok(mut available) => {
                available.truncate(take);
                Ok(available)
            }
            Err(registered) => Err(DriverError::NotEnoughExecutors {
                needed: need,
                registered,
                waited_seconds: timeout.as_secs_f64(),
                listen: self.endpoint.as_ref().map_or_else(|| "nowhere (no --listen)".to_string(), |e| e.addr.to_string()),
            }),
        }
    }
}
