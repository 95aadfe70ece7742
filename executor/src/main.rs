//! `canopy-executor`: parses arguments, binds, prints its address, serves; registers with a
//! driver when given one, and decommissions on SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use canopy_executor::registration::DriverLink;
use canopy_executor::{ExecutorMetrics, ExecutorService, FaultInjection};
use canopy_runtime::security::SecurityFlags;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

#[global_allocator]
static HEAP: canopy_runtime::heap::CountingAllocator = canopy_runtime::heap::CountingAllocator;

/// A Canopy executor. Prints `canopy-executor listening on ADDR` on stdout once ready.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "CANOPY_EXECUTOR_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve Prometheus metrics (/metrics, /healthz, /readyz) on this address; port 0 picks one.
    #[arg(long, env = "CANOPY_EXECUTOR_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Name in reports, logs and metrics, unique per driver; defaults to `<hostname>-<port>`.
    #[arg(long, env = "CANOPY_EXECUTOR_ID")]
    executor_id: Option<String>,
    /// Register with the driver at HOST:PORT (its `--listen` address) and serve its jobs.
    #[arg(long, env = "CANOPY_DRIVER")]
    driver: Option<String>,
    /// host:port where the driver reaches this executor. Default: the listen address, or when
    /// listening on all interfaces, the local address of the route to the driver.
    #[arg(long, env = "CANOPY_EXECUTOR_ADVERTISE")]
    advertise: Option<String>,
    /// Give up (exit 1) if no driver accepts the registration within this time.
    #[arg(long, env = "CANOPY_DRIVER_WAIT_SECONDS", default_value_t = 120.0)]
    driver_wait_seconds: f64,
    /// After SIGTERM, how long to wait for the driver to move our partitions away before exiting,
    /// counted from the signal (set it a few seconds below Kubernetes' terminationGracePeriodSeconds).
    #[arg(long, env = "CANOPY_EXECUTOR_GRACE_SECONDS", default_value_t = 30.0)]
    grace_seconds: f64,
    /// Most memory (MiB) this executor may use for the data it holds; a partition that would
    /// exceed it is refused (RESOURCE_EXHAUSTED). Default: 80% of the container's or machine's memory.
    #[arg(long, env = "CANOPY_EXECUTOR_MAX_MEMORY_MB")]
    max_memory_mb: Option<u64>,
    #[command(flatten)]
    security: SecurityFlags,
    /// Only warnings and errors on stderr.
    #[arg(long)]
    quiet: bool,
    /// Exit when the parent process does (set by a driver that spawns its executors).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
    /// Fault injection for tests: sleep before every histogram task.
    #[arg(long, hide = true, default_value_t = 0)]
    inject_task_delay_ms: u64,
    /// Fault injection for tests: claim another protocol version.
    #[arg(long, hide = true)]
    inject_protocol_version: Option<u32>,
}

#[tokio::main]
async fn main() {
    let code = match run(Args::parse()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    // Exit now: dropping the runtime would wait for a task still running on a blocking thread,
    // past the grace period a decommission promised.
    std::process::exit(code);
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).ok().with_context(|| format!("--{name} must be a number of seconds >= 0, got {value}"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "executor".into())
}

/// Resolves when the parent process is gone (we were re-parented).
async fn parent_exited() {
    let parent = std::os::unix::process::parent_id();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    canopy_runtime::init_tracing(args.quiet);
    let driver_wait = seconds("driver-wait-seconds", args.driver_wait_seconds)?;
    let grace = seconds("grace-seconds", args.grace_seconds)?;
    let security = args.security.load()?;
    security.check_listen(args.listen, "--listen")?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("listener has no local address")?;
    let executor_id = args.executor_id.unwrap_or_else(|| format!("{}-{}", hostname(), addr.port()));
    let faults =
        FaultInjection { task_delay: Duration::from_millis(args.inject_task_delay_ms), protocol_version: args.inject_protocol_version };
    // Metrics first, so the handshake can announce where they are.
    let registry = canopy_runtime::metrics::registry(&[("component", "executor"), ("executor_id", &executor_id)])
        .context("cannot create the metrics registry")?;
    let metrics = ExecutorMetrics::register(&registry).context("cannot register metrics")?;
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut metrics_addr = String::new();
    let mut metrics_task = None;
    if let Some(listen) = args.metrics_listen {
        let metrics_listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen for metrics on {listen}"))?;
        metrics_addr = metrics_listener.local_addr().context("metrics listener has no address")?.to_string();
        let serve = canopy_runtime::metrics::serve(metrics_listener, registry, ready.clone(), stopped(stop_rx.clone()));
        metrics_task = Some(tokio::spawn(serve));
    }
    let memory_budget = match args.max_memory_mb {
        Some(0) => anyhow::bail!("--max-memory-mb must be at least 1"),
        Some(mb) => mb.saturating_mul(1 << 20),
        None => canopy_runtime::memory_limit_bytes() / 5 * 4,
    };
    let service = ExecutorService::new(executor_id.clone(), faults, metrics, metrics_addr.clone(), memory_budget);
    let mut server = tokio::spawn(canopy_executor::serve(listener, service.clone(), security.clone(), stopped(stop_rx.clone())));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "canopy-executor listening on {addr}").context("cannot write to stdout")?;
        out.flush().context("cannot flush stdout")?;
    }
    info!(%addr, metrics = %metrics_addr, executor = %executor_id, "executor ready");
    ready.store(true, Ordering::Relaxed);

    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let link = args.driver.map(|driver| DriverLink {
        driver,
        executor_id: executor_id.clone(),
        advertise: args.advertise,
        listen: addr,
        cores: std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        memory_bytes: canopy_runtime::memory_limit_bytes(),
        security: security.clone(),
    });
    let mut heartbeats = None;
    if let Some(link) = &link {
        let registered = tokio::select! {
            r = link.register(Some(driver_wait)) => r,
            _ = terminate.recv() => { stop(&stop_tx, server, metrics_task).await; return Ok(()); }
            _ = interrupt.recv() => { stop(&stop_tx, server, metrics_task).await; return Ok(()); }
        };
        match registered {
            Ok(interval) => {
                let service = service.clone();
                heartbeats = Some(tokio::spawn(link.clone().keep_registered(interval, move || service.abandon_job())));
            }
            Err(e) => {
                stop(&stop_tx, server, metrics_task).await;
                return Err(e.into());
            }
        }
    }

    let parent = async { if args.exit_with_parent { parent_exited().await } else { std::future::pending().await } };
    tokio::select! {
        served = &mut server => {
            served.context("executor server task failed")?.context("executor server failed")?;
            return Ok(());
        }
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
        _ = parent => {
            // Nobody is left to move our partitions to or to talk to: no decommission, no
            // graceful stop; exiting closes the sockets and frees the data at once.
            warn!("the driver that started this executor is gone; exiting");
            return Ok(());
        }
    }
    // Decommission: take no new job, let the driver move our partitions and end our job, and
    // exit once it has (or when the grace period is over, or on a second signal). Everything,
    // telling the driver included, fits in the grace period counted from the signal.
    let deadline = tokio::time::Instant::now() + grace;
    ready.store(false, Ordering::Relaxed);
    service.start_decommission();
    let mut has_job = service.job_watch();
    info!(grace_seconds = grace.as_secs_f64(), job_active = *has_job.borrow(), "decommissioning");
    if let Some(h) = heartbeats {
        h.abort();
    }
    if let Some(link) = &link {
        // Once our job has ended there is nothing left to hand back: stop waiting for the answer
        // (the driver may be gone: a finished Kubernetes Job's Service has no address left).
        let had_job = *has_job.borrow();
        let mut job_ended = has_job.clone();
        let tell = tokio::time::timeout_at(deadline, link.decommission());
        tokio::select! {
            told = tell => {
                if let Err(e) = told.unwrap_or_else(|_| Err("no answer within the grace period".into())) {
                    if *has_job.borrow() {
                        warn!(error = %e, "could not tell the driver; a driver running our job sees the decommission in its next heartbeat");
                    } else {
                        info!(error = %e, "could not tell the driver, which has no job of ours");
                    }
                }
            }
            _ = job_ended.wait_for(|active| !*active), if had_job => info!("our job ended before the driver answered the decommission"),
        }
    }
    tokio::select! {
        r = tokio::time::timeout_at(deadline, has_job.wait_for(|active| !*active)) => match r {
            Ok(_) => info!("no job left; exiting"),
            Err(_) => warn!(grace_seconds = grace.as_secs_f64(), "grace period over with a job still active; exiting"),
        },
        _ = terminate.recv() => warn!("second signal; exiting now"),
        _ = interrupt.recv() => warn!("second signal; exiting now"),
    }
    stop(&stop_tx, server, metrics_task).await;
    Ok(())
}

async fn stop(
    stop_tx: &tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    metrics_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
) {
    let _ = stop_tx.send(true);
    // Connections close at once; a task still running is not waited for long.
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
}
