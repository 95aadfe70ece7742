//! `canopy-executor`: parses arguments, binds, prints its address, serves.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use canopy_executor::{ExecutorMetrics, FaultInjection};
use clap::Parser;

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
    /// Name in reports, logs and metrics; defaults to `executor-<port>`.
    #[arg(long, env = "CANOPY_EXECUTOR_ID")]
    executor_id: Option<String>,
    /// Only warnings and errors on stderr.
    #[arg(long)]
    quiet: bool,
    /// Fault injection for tests: sleep before every histogram task.
    #[arg(long, hide = true, default_value_t = 0)]
    inject_task_delay_ms: u64,
    /// Fault injection for tests: claim another protocol version.
    #[arg(long, hide = true)]
    inject_protocol_version: Option<u32>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    canopy_runtime::init_tracing(args.quiet);
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("listener has no local address")?;
    let executor_id = args.executor_id.unwrap_or_else(|| format!("executor-{}", addr.port()));
    let faults =
        FaultInjection { task_delay: Duration::from_millis(args.inject_task_delay_ms), protocol_version: args.inject_protocol_version };
    // Metrics first, so the handshake can announce where they are.
    let registry = canopy_runtime::metrics::registry(&[("component", "executor"), ("executor_id", &executor_id)])
        .context("cannot create the metrics registry")?;
    let metrics = ExecutorMetrics::register(&registry).context("cannot register metrics")?;
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut metrics_addr = String::new();
    let mut metrics_task = None;
    if let Some(listen) = args.metrics_listen {
        let metrics_listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen for metrics on {listen}"))?;
        metrics_addr = metrics_listener.local_addr().context("metrics listener has no address")?.to_string();
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        metrics_task = Some(tokio::spawn(canopy_runtime::metrics::serve(metrics_listener, registry, ready.clone(), shutdown)));
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "canopy-executor listening on {addr}").context("cannot write to stdout")?;
        out.flush().context("cannot flush stdout")?;
    }
    tracing::info!(%addr, metrics = %metrics_addr, executor = %executor_id, "executor ready");
    // Stop on Ctrl-C or SIGTERM (what process managers and Kubernetes send).
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let not_ready = ready.clone();
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        not_ready.store(false, Ordering::Relaxed);
    };
    ready.store(true, Ordering::Relaxed);
    let served = canopy_executor::serve(listener, executor_id, faults, metrics, metrics_addr, shutdown).await;
    let _ = stop_tx.send(true);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    served.context("executor server failed")?;
    Ok(())
}
