//! Progress bars on stderr while a terminal watches and `--quiet` is off: counting and encoding
//! rows, shipping partitions, growing tree levels. In CI logs and pipes they stay hidden and the
//! log keeps its one line per phase.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};

static SHOWN: AtomicBool = AtomicBool::new(false);

/// Shows bars from now on if stderr is a terminal and the command is not quiet.
pub fn init(quiet: bool) {
    SHOWN.store(!quiet && std::io::stderr().is_terminal(), Ordering::Relaxed);
}

/// A bar for `phase` counting `unit` up to `total` (a spinner when the total is unknown); a
/// hidden one, whose calls do nothing, unless bars are shown.
pub fn bar(phase: &'static str, total: Option<u64>, unit: &'static str) -> ProgressBar {
    if !SHOWN.load(Ordering::Relaxed) {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (ProgressBar::new(total), "{msg:>9} [{bar:30}] {human_pos}/{human_len} {prefix} ({elapsed})"),
        None => (ProgressBar::new_spinner(), "{msg:>9} {spinner} {human_pos} {prefix} ({elapsed})"),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    // A bar dropped on an error path clears itself too.
    let bar = bar.with_finish(ProgressFinish::AndClear);
    bar.set_message(phase);
    bar.set_prefix(unit);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
