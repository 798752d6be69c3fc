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
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
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

/// Formats a FLOP count with a unit (M or G).
pub fn flops(n: u64) -> String {
    if n >= 10_000_000_000 {
        format!("{:.2} G", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}
