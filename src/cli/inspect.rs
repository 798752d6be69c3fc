//! `haste inspect`: what HASTE does in each convolution, so a fragile layer stands out.

use super::args::InspectArgs;
use super::Session;
use crate::compress::{CompressOptions, LayerChoice, Policy};
use crate::error::Result;
use serde_json::json;

/// Relative output error above which a layer is flagged as fragile.
const FRAGILE_ERROR: f64 = 0.25;

/// Share of channels in buckets of size 1, 2, 3-4, 5-8, 9-16, 17+.
fn histogram_shares(hist: &[u64]) -> [f64; 6] {
    let mut bins = [0u64; 6];
    for (size, &count) in hist.iter().enumerate().skip(1) {
        let b = match size {
            1 => 0,
            2 => 1,
            3..=4 => 2,
            5..=8 => 3,
            9..=16 => 4,
            _ => 5,
        };
        bins[b] += size as u64 * count;
    }
    let total: u64 = bins.iter().sum();
    bins.map(|b| {
        if total == 0 {
            0.0
        } else {
            100.0 * b as f64 / total as f64
        }
    })
}

pub fn run(a: InspectArgs) -> Result<()> {
    let compress = CompressOptions {
        measure_error: true,
        ..a.knobs.options(a.hyperplanes)?
    };
    let policy = a
        .policy
        .as_deref()
        .map(|p| Policy::load(p, &a.model.model))
        .transpose()?;
    let mut s = Session::open(&a.model, &a.data)?;
    let h = match &policy {
        Some(p) => s.policy_probed(p, true)?,
        None => s.haste(&compress)?,
    };
    // What the HASTE layers ran with: one L, or the policy's per layer.
    let setting = match &a.policy {
        Some(p) => format!("the policy {}", p.display()),
        None => format!("HASTE L={}", a.hyperplanes),
    };
    let rows: Vec<_> = h
        .layers
        .iter()
        .map(|l| {
            let compressed = l.choice == LayerChoice::Compressed;
            let err = if compressed { l.relative_error } else { None };
            let reduction = l.reduction();
            let overhead_share = 100.0 * l.overhead_flops as f64 / l.flops.max(1) as f64;
            (l, compressed, err, reduction, overhead_share)
        })
        .collect();
    if a.data.json {
        let layers: Vec<_> = rows
            .iter()
            .map(|(l, compressed, err, reduction, overhead_share)| {
                json!({
                    "conv_index": l.conv_index, "name": l.name, "c_in": l.c_in, "c_out": l.c_out,
                    "kernel": [l.kernel.0, l.kernel.1], "input_hw": [l.input_hw.0, l.input_hw.1],
                    "mode": l.choice.describe(), "compressed": compressed,
                    "mean_buckets": l.stats.mean_buckets(),
                    "mean_buckets_fraction": l.stats.mean_kept_fraction(),
                    "mean_zero_channels": l.stats.mean_zero_channels(),
                    "bucket_size_hist": l.stats.bucket_size_hist,
                    "dense_flops": l.dense_flops, "flops": l.flops, "flops_overhead": l.overhead_flops,
                    "flops_reduction": reduction, "overhead_share": overhead_share,
                    "relative_error": err, "nonfinite_inputs": l.stats.nonfinite_inputs,
                    "predicted_time_ratio": l.predicted_time_ratio, "tile": l.tile,
                })
            })
            .collect();
        let j = json!({
            "model": a.model.model.display().to_string(), "images": h.eval.images,
            "hyperplanes": if policy.is_some() { json!(null) } else { json!(a.hyperplanes) },
            "policy": a.policy.as_ref().map(|p| p.display().to_string()),
            "top1": h.eval.top1, "top5": h.eval.top5,
            "flops_reduction": h.flops.reduction(), "layers": layers,
            "skipped_images": h.eval.skipped, "nonfinite_logits": h.eval.nonfinite_logits,
            "nonfinite_inputs": h.nonfinite_inputs(),
        });
        super::emit_json(j);
        return Ok(());
    }
    println!(
        "{} with {setting} on {} images: top-1 {:.2} %, FLOPs reduction {:.1} % (overhead included)",
        a.model.model.display(),
        h.eval.images,
        h.eval.top1,
        h.flops.reduction()
    );
    println!(
        "{:>3} {:<34} {:>5} {:>5} {:>3} {:>7} {:>13} {:>30} {:>7} {:>7} {:>7}",
        "#",
        "layer",
        "C_in",
        "C_out",
        "K",
        "HxW",
        "buckets/patch",
        "channels in buckets of size",
        "FLOPs",
        "ovhd",
        "error"
    );
    println!("{:>81} {:>30}", "", "1 / 2 / 3-4 / 5-8 / 9-16 / 17+ %");
    let mut fragile = Vec::new();
    for (l, compressed, err, reduction, overhead_share) in &rows {
        let name: String = l.name.chars().take(34).collect();
        let shape = format!("{}x{}", l.input_hw.0, l.input_hw.1);
        if !compressed {
            // Layers sent back to dense by the first batch show the time HASTE was predicted.
            let predicted = l.predicted_time_ratio.map_or(String::new(), |r| {
                format!(" (predicted {r:.2}x dense time)")
            });
            println!(
                "{:>3} {:<34} {:>5} {:>5} {:>3} {:>7} {:>13}{predicted}",
                l.conv_index,
                name,
                l.c_in,
                l.c_out,
                l.kernel.0,
                shape,
                l.choice.describe()
            );
            continue;
        }
        let shares = histogram_shares(&l.stats.bucket_size_hist);
        let hist = shares
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join("/");
        let flag = match err {
            Some(e) if *e > FRAGILE_ERROR => {
                fragile.push(l.conv_index);
                " !"
            }
            _ => "",
        };
        println!(
            "{:>3} {:<34} {:>5} {:>5} {:>3} {:>7} {:>6.1} ({:>3.0}%) {:>30} {:>6.1}% {:>6.1}% {:>7}{flag}",
            l.conv_index,
            name,
            l.c_in,
            l.c_out,
            l.kernel.0,
            shape,
            l.stats.mean_buckets(),
            100.0 * l.stats.mean_kept_fraction(),
            hist,
            -reduction,
            overhead_share,
            err.map_or("-".into(), |e| format!("{e:.3}")),
        );
    }
    println!(
        "FLOPs: change of the layer's FLOPs against dense (overhead included); ovhd: share of the"
    );
    println!("layer's HASTE FLOPs spent hashing and merging; error: ||HASTE - dense|| / ||dense|| of the");
    println!("layer's output on the same input.");
    if !fragile.is_empty() {
        println!(
            "fragile layers (error > {FRAGILE_ERROR}): {:?} -- consider --start-layer or --magnitude-bins",
            fragile
        );
    }
    for l in super::warnings("HASTE", &h.eval, Some(&h)) {
        println!("{l}");
    }
    Ok(())
}
