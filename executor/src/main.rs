//! `canopy-executor`: parses arguments, binds, prints its address, serves.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use canopy_executor::FaultInjection;
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
    /// Name in reports and logs; defaults to `executor-<port>`.
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
    let faults = FaultInjection {
        task_delay: Duration::from_millis(args.inject_task_delay_ms),
        protocol_version: args.inject_protocol_version,
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "canopy-executor listening on {addr}").context("cannot write to stdout")?;
        out.flush().context("cannot flush stdout")?;
    }
    tracing::info!(%addr, executor = %executor_id, "executor ready");
    // Stop on Ctrl-C or SIGTERM (what process managers and Kubernetes send).
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    };
    canopy_executor::serve(listener, executor_id, faults, shutdown).await.context("executor server failed")?;
    Ok(())
}
