//! `haste bench --layers --steps`: where each HASTE layer's time goes, step by step, per input
//! channel and window pixel (the unit of the fixed per-patch work, see
//! [`crate::haste::steps`]).

use crate::compress::ConvLayerReport;
use crate::haste::StepCycles;
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
    println!(" {:>8}", "fixed");
    let mut total = StepCycles::default();
    for l in &profiled {
        let s = &l.stats.steps;
        total.add(s);
        print!(
            "{:<28} {:>14} {:>6.1}%",
            super::bench::truncate(&l.name, 28),
            format!("{}>{} @{}", l.c_in, l.c_out, l.input_hw.0),
            100.0 * (1.0 - l.stats.mean_kept_fraction())
        );
        print_row(s);
    }
    print!("{:<28} {:>14} {:>7}", "all HASTE layers", "", "");
    print_row(&total);
}

fn print_row(s: &StepCycles) {
    for (_, t) in s.named() {
        print!(" {:>8.2}", s.per_channel_pixel(t));
    }
    println!(" {:>8.2}", s.per_channel_pixel(s.fixed()));
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
            })
        })
        .collect();
    json!(rows)
}
