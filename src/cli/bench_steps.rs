//! `haste bench --layers --steps`: where each HASTE layer's time goes, step by step, per input
//! channel and window pixel (the unit of the fixed per-patch work, see
//! [`crate::haste::steps`]).

use crate::compress::ConvLayerReport;
use crate::haste::{LayerStats, StepCycles};
use serde_json::json;

/// One row per HASTE layer that profiled its steps, then the sum over them.
pub fn print_steps(layers: &[ConvLayerReport]) {
    let profiled: Vec<_> = layers
        .iter()
        .filter(|l| !l.stats.steps.is_empty())
        .collect();
    let Some(first) = profiled.first() else {
        println!("\nsteps   no HASTE layer ran");
        return;
    };
    let unit = if first.stats.steps.cycles {
        "TSC cycles"
    } else {
        "ns"
    };
    println!("\nper step, {unit} per input channel and window pixel (fixed = all but filter_merge and kernel)");
    print!(
        "{:<28} {:>14} {:>7}",
        "HASTE layer", "c_in>c_out @hw", "merged"
    );
    for (name, _) in StepCycles::default().named() {
        print!(" {:>8}", short(name));
    }
    println!(" {:>8} {:>8}", "fixed", "k_rate");
    let mut total = StepCycles::default();
    let mut rates = KernelRates::default();
    for l in &profiled {
        let s = &l.stats.steps;
        total.add(s);
        print!(
            "{:<28} {:>14} {:>6.1}%",
            super::bench::truncate(&l.name, 28),
            format!("{}>{} @{}", l.c_in, l.c_out, l.input_hw.0),
            100.0 * (1.0 - l.stats.mean_kept_fraction())
        );
        let layer = KernelRates::of(l);
        rates.add(&layer);
        print_row(s, layer.ratio());
    }
    print!("{:<28} {:>14} {:>7}", "all HASTE layers", "", "");
    print_row(&total, rates.ratio());
    println!(
        "k_rate  the reduced convolution's multiply-adds per second over the dense layer's \
         (its share of the step ticks times the layer's HASTE time, against the dense time)"
    );
}

fn print_row(s: &StepCycles, kernel_rate: Option<f64>) {
    for (_, t) in s.named() {
        print!(" {:>8.2}", s.per_channel_pixel(t));
    }
    print!(" {:>8.2}", s.per_channel_pixel(s.fixed()));
    match kernel_rate {
        Some(r) => println!(" {r:>8.2}"),
        None => println!(" {:>8}", "-"),
    }
}

/// Multiply-adds and seconds per image of a layer's reduced convolution and of its dense
/// run, summed over layers: their ratio is the rate the reduced convolution keeps of the
/// dense kernel's (the "95 % of the dense multiply-add rate", in the network).
#[derive(Default)]
struct KernelRates {
    kernel_macs: f64,
    kernel_s: f64,
    dense_macs: f64,
    dense_s: f64,
}

impl KernelRates {
    /// A layer's, from its step ticks (the kernel's share of them, times the layer's
    /// measured HASTE time) and its timing; zeros when it was not timed.
    fn of(l: &ConvLayerReport) -> KernelRates {
        KernelRates::from_parts(&l.stats, l.timing, l.dense_flops)
    }

    /// [`Self::of`] from a layer's statistics, its (HASTE, dense) seconds per batch and its
    /// dense multiply-adds per image.
    fn from_parts(stats: &LayerStats, timing: Option<(f64, f64)>, dense_macs: u64) -> Self {
        let ticks = stats.steps.total();
        match timing {
            Some((haste_s, dense_s)) if ticks > 0 && stats.images > 0 => KernelRates {
                kernel_macs: stats.flops.conv as f64 / stats.images as f64,
                kernel_s: haste_s * stats.steps.kernel as f64 / ticks as f64,
                dense_macs: dense_macs as f64,
                dense_s,
            },
            _ => KernelRates::default(),
        }
    }

    fn add(&mut self, o: &KernelRates) {
        self.kernel_macs += o.kernel_macs;
        self.kernel_s += o.kernel_s;
        self.dense_macs += o.dense_macs;
        self.dense_s += o.dense_s;
    }

    /// Kernel rate over dense rate (`None` without timings).
    fn ratio(&self) -> Option<f64> {
        let ok = self.kernel_s > 0.0 && self.dense_macs > 0.0 && self.dense_s > 0.0;
        ok.then(|| (self.kernel_macs / self.kernel_s) / (self.dense_macs / self.dense_s))
    }
}

/// Column heads short enough for one line.
fn short(name: &str) -> &str {
    match name {
        "input_merge" => "in_merge",
        "window_copy" => "copy",
        "filter_merge" => "f_merge",
        "bookkeeping" => "bookkeep",
        other => other,
    }
}

/// The same as JSON: per layer, each step's ticks per channel and window pixel.
pub fn steps_json(layers: &[ConvLayerReport]) -> serde_json::Value {
    let rows: Vec<_> = layers
        .iter()
        .filter(|l| !l.stats.steps.is_empty())
        .map(|l| {
            let s = &l.stats.steps;
            let mut per: serde_json::Map<_, _> = s
                .named()
                .iter()
                .map(|&(n, t)| (n.to_string(), json!(s.per_channel_pixel(t))))
                .collect();
            per.insert("fixed".into(), json!(s.per_channel_pixel(s.fixed())));
            json!({
                "name": l.name, "c_in": l.c_in, "c_out": l.c_out,
                "input_hw": [l.input_hw.0, l.input_hw.1],
                "unit": if s.cycles { "tsc_cycles" } else { "ns" },
                "channel_pixels": s.channel_pixels,
                "merged_fraction": 1.0 - l.stats.mean_kept_fraction(),
                "per_channel_pixel": per,
                "kernel_rate_vs_dense": KernelRates::of(l).ratio(),
            })
        })
        .collect();
    json!(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's rate over the dense layer's: per image on both sides, the kernel's time
    /// its share of the steps' ticks; nothing without a timing or a profiled patch.
    #[test]
    fn kernel_rate_counts_both_sides_per_image() {
        let mut stats = LayerStats {
            images: 8,
            ..LayerStats::default()
        };
        // Half the dense multiply-adds per image (8 images), the kernel 3/4 of the ticks.
        stats.flops.conv = 8 * 500;
        stats.steps.kernel = 750;
        stats.steps.project = 250;
        // HASTE 0.8 s a batch (its kernel 0.6 s) against 1.0 s dense: 500 / 0.6 over 1000.
        let rate = KernelRates::from_parts(&stats, Some((0.8, 1.0)), 1000).ratio();
        assert!(
            rate.is_some_and(|r| (r - 500.0 / 0.6 / 1000.0).abs() < 1e-12),
            "{rate:?}"
        );
        assert_eq!(KernelRates::from_parts(&stats, None, 1000).ratio(), None);
        let unprofiled = LayerStats {
            steps: StepCycles::default(),
            ..stats
        };
        assert_eq!(
            KernelRates::from_parts(&unprofiled, Some((0.8, 1.0)), 1000).ratio(),
            None
        );
    }
}
