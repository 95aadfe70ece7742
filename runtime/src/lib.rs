//! What both binaries share: heap accounting, the metrics endpoint, tracing setup.

pub mod heap;
pub mod metrics;

/// Logs go to stderr (stdout is for reports and the executor's address line). `quiet` keeps
/// warnings and errors only; `RUST_LOG` overrides either.
pub fn init_tracing(quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second init (tests) is harmless; ignore its error.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}
