//! `haste sweep`: several L values over the same images (dense once), as a table, CSV, JSON
//! and the accuracy-vs-FLOPs-reduction plot.

use super::args::SweepArgs;
use super::Session;
use crate::error::{Error, Result};
use crate::eval::HasteReport;
use crate::report::plot::{plot_tradeoff, TradeoffPoint};
use crate::report::write_atomic;
use serde_json::json;

/// One row of the sweep: a global L or a calibrated policy.
struct Row {
    hyperplanes: Option<usize>,
    max_drop: Option<f64>,
    /// The policy's predicted drop (calibrated rows).
    predicted_drop: Option<f64>,
    top1: f64,
    top5: f64,
    flops: u64,
    overhead: u64,
    reduction: f64,
    reduction_conv_only: f64,
    speedup: f64,
    images_per_second: f64,
    nonfinite_logits: u64,
    nonfinite_inputs: u64,
}

impl Row {
    /// The row of a HASTE run `h` (at `hyperplanes` L, or calibrated for a maximum drop,
    /// with the drop its policy predicted), timed against a dense run of `dense_seconds`.
    fn of(
        h: &HasteReport,
        dense_seconds: f64,
        hyperplanes: Option<usize>,
        calibrated: Option<(f64, f64)>,
    ) -> Row {
        Row {
            hyperplanes,
            max_drop: calibrated.map(|c| c.0),
            predicted_drop: calibrated.map(|c| c.1),
            top1: h.eval.top1,
            top5: h.eval.top5,
            flops: h.flops.flops,
            overhead: h.flops.overhead_flops,
            reduction: h.flops.reduction(),
            reduction_conv_only: h.flops.reduction_conv_only(),
            speedup: dense_seconds / h.eval.compute_seconds.max(1e-9),
            images_per_second: h.eval.compute_images_per_second(),
            nonfinite_logits: h.eval.nonfinite_logits,
            nonfinite_inputs: h.nonfinite_inputs(),
        }
    }
}

pub fn run(a: SweepArgs) -> Result<()> {
    let options: Vec<_> = a
        .hyperplanes
        .iter()
        .map(|&l| a.knobs.options(l))
        .collect::<Result<_>>()?;
    if options.is_empty() && a.max_drop.is_empty() {
        return Err(Error::InvalidArgument(
            "give --hyperplanes L,L,... or --max-drop X,X,... (calibrated policies)".into(),
        ));
    }
    for path in [&a.plot, &a.csv, &a.json_out].into_iter().flatten() {
        check_writable(path)?;
    }
    let mut s = Session::open(&a.model, &a.data)?;
    let dense = s.dense()?;
    let dense_flops = s.plan.dense_macs();
    let mut rows = Vec::new();
    // The first L's layer summary: the data-free gate is the same for every L (the first
    // batch's choices of tile and dense layers may differ between them).
    let mut layers = String::new();
    for c in &options {
        let h = s.haste(c)?;
        if layers.is_empty() {
            layers = super::eval::layer_summary(&h.layers);
        }
        rows.push(Row::of(
            &h,
            dense.compute_seconds,
            Some(c.config.hyperplanes),
            None,
        ));
    }
    for (x, h, predicted) in super::calibrate::calibrated_points(&a, &mut s)? {
        rows.push(Row::of(
            &h,
            dense.compute_seconds,
            None,
            Some((x, predicted)),
        ));
    }
    // The operating point: the largest FLOPs reduction within 1 point of dense top-1.
    let best = rows
        .iter()
        .filter(|r| r.top1 >= dense.top1 - 1.0)
        .max_by(|x, y| x.reduction.total_cmp(&y.reduction));
    let model_name = a
        .model
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = json!({
        "model": a.model.model.display().to_string(),
        "data": a.data.data.display().to_string(),
        "images": dense.images,
        "settings": options.first().map(super::eval::describe),
        "layers": layers,
        "dense": {
            "top1": dense.top1, "top5": dense.top5, "flops": dense_flops,
            "images_per_second": dense.compute_images_per_second(),
        },
        "points": rows.iter().map(|r| json!({
            "hyperplanes": r.hyperplanes, "max_drop": r.max_drop,
            "predicted_top1_drop": r.predicted_drop, "top1": r.top1, "top5": r.top5,
            "top1_drop": dense.top1 - r.top1, "flops": r.flops, "flops_overhead": r.overhead,
            "flops_reduction": r.reduction, "flops_reduction_conv_only": r.reduction_conv_only,
            "speedup": r.speedup, "images_per_second": r.images_per_second,
            "nonfinite_logits": r.nonfinite_logits, "nonfinite_inputs": r.nonfinite_inputs,
        })).collect::<Vec<_>>(),
        "skipped_images": dense.skipped,
        "nonfinite_logits": dense.nonfinite_logits,
        "best_within_1pt": best.map(|b| json!({"hyperplanes": b.hyperplanes, "max_drop": b.max_drop, "flops_reduction": b.reduction, "top1": b.top1})),
    });
    if let Some(p) = &a.csv {
        let mut csv = String::from(
            "hyperplanes,top1,top5,top1_dense,top5_dense,flops,dense_flops,flops_overhead,flops_reduction,flops_reduction_conv_only,speedup,max_drop,predicted_top1_drop\n",
        );
        for r in &rows {
            csv.push_str(&format!(
                "{},{:.2},{:.2},{:.2},{:.2},{},{},{},{:.3},{:.3},{:.3},{},{}\n",
                r.hyperplanes.map(|l| l.to_string()).unwrap_or_default(),
                r.top1,
                r.top5,
                dense.top1,
                dense.top5,
                r.flops,
                dense_flops,
                r.overhead,
                r.reduction,
                r.reduction_conv_only,
                r.speedup,
                r.max_drop.map(|x| x.to_string()).unwrap_or_default(),
                r.predicted_drop
                    .map(|x| format!("{x:.3}"))
                    .unwrap_or_default(),
            ));
        }
        write_atomic(p, csv.as_bytes())?;
    }
    if let Some(p) = &a.json_out {
        write_atomic(p, format!("{result:#}\n").as_bytes())?;
    }
    if let Some(p) = &a.plot {
        let points: Vec<TradeoffPoint> = rows
            .iter()
            .map(|r| TradeoffPoint {
                label: r.label(),
                flops_reduction: r.reduction,
                top1: r.top1,
            })
            .collect();
        let title = format!("{model_name}: HASTE trade-off ({} images)", dense.images);
        plot_tradeoff(p, &title, dense.top1, &points)?;
    }
    if a.data.json {
        super::emit_json(result);
        return Ok(());
    }
    println!(
        "{} on {} ({} images)",
        a.model.model.display(),
        a.data.data.display(),
        dense.images
    );
    if let Some(c) = options.first() {
        println!("HASTE {}", super::eval::describe(c));
        println!("layers {layers}");
    }
    println!(
        "{:>6} {:>8} {:>8} {:>8} {:>12} {:>11} {:>11} {:>9}",
        "L", "top-1", "top-5", "drop", "FLOPs", "reduction", "conv only", "wall*"
    );
    println!(
        "{:>6} {:>7.2}% {:>7.2}% {:>8} {:>12} {:>11} {:>11} {:>9}",
        "dense",
        dense.top1,
        dense.top5,
        "",
        crate::report::flops(dense_flops),
        "",
        "",
        "1.00x"
    );
    for r in &rows {
        println!(
            "{:>6} {:>7.2}% {:>7.2}% {:>+7.2} {:>12} {:>10.1}% {:>10.1}% {:>8.2}x{}",
            r.short_label(),
            r.top1,
            r.top5,
            r.top1 - dense.top1,
            crate::report::flops(r.flops),
            r.reduction,
            r.reduction_conv_only,
            r.speedup,
            r.predicted_drop
                .map(|p| format!(
                    "  (calibrated for a drop <= {}: predicted {p:.2})",
                    r.max_drop.unwrap_or(0.0)
                ))
                .unwrap_or_default()
        );
    }
    println!("* wall-clock ratio dense/HASTE from this one pass (loading excluded); for a timing,");
    println!("  use `haste bench` (warm-up, several runs, median).");
    match best {
        Some(b) => println!(
            "largest FLOPs reduction within 1 point of dense: {} ({:.1} %, top-1 {:.2} %)",
            b.label(),
            b.reduction,
            b.top1
        ),
        None => println!("no setting stays within 1 point of dense top-1"),
    }
    for p in [&a.plot, &a.csv, &a.json_out].into_iter().flatten() {
        println!("wrote {}", p.display());
    }
    for l in super::warnings("dense", &dense, None) {
        println!("{l}");
    }
    for r in rows
        .iter()
        .filter(|r| r.nonfinite_logits + r.nonfinite_inputs > 0)
    {
        println!(
            "warning: {}: {} non-finite logit(s), {} non-finite convolution input(s)",
            r.label(),
            r.nonfinite_logits,
            r.nonfinite_inputs
        );
    }
    Ok(())
}

impl Row {
    fn label(&self) -> String {
        match (self.hyperplanes, self.max_drop) {
            (Some(l), _) => format!("L={l}"),
            (None, Some(x)) => format!("max drop {x}"),
            (None, None) => String::new(),
        }
    }

    /// For the table's first column.
    fn short_label(&self) -> String {
        match (self.hyperplanes, self.max_drop) {
            (Some(l), _) => l.to_string(),
            (None, Some(x)) => format!("<={x}"),
            (None, None) => String::new(),
        }
    }
}

/// Fails early (before a long sweep) if an output file's folder does not exist.
fn check_writable(path: &std::path::Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: folder {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}
