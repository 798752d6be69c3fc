//! Results for people and programs: files written atomically, FLOP counts for people, and
//! (with the `cli` feature) progress bars and the trade-off plot.

#[cfg(feature = "cli")]
pub mod plot;

#[cfg(feature = "cli")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr when it is a terminal, hidden otherwise.
#[cfg(feature = "cli")]
pub fn progress_bar(total: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    let shown = PROGRESS.with(std::cell::Cell::get);
    if shown && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} images {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

pub use crate::files::write_atomic;

#[cfg(feature = "cli")]
thread_local! {
    /// Whether [`progress_bar`] may draw on this thread (the Python package turns it off
    /// unless asked).
    static PROGRESS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Turns this thread's progress bars on or off until dropped, then puts the old setting back.
#[cfg(feature = "cli")]
pub struct ProgressGuard(bool);

#[cfg(feature = "cli")]
impl ProgressGuard {
    pub fn set(on: bool) -> ProgressGuard {
        ProgressGuard(PROGRESS.with(|p| p.replace(on)))
    }
}

#[cfg(feature = "cli")]
impl Drop for ProgressGuard {
    fn drop(&mut self) {
        PROGRESS.with(|p| p.set(self.0));
    }
}

/// Formats a FLOP count with a unit (M or G).
pub fn flops(n: u64) -> String {
    if n >= 10_000_000_000 {
        format!("{:.2} G", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}
