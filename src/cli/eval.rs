//! `haste eval`: accuracy, FLOPs and speed of a model on a dataset; with `--hyperplanes L`,
//! dense and HASTE side by side on the same images.

use super::args::EvalArgs;
use super::Session;
use crate::compress::Policy;
use crate::error::Result;
use crate::report::flops;
use serde_json::json;

pub fn run(mut a: EvalArgs) -> Result<()> {
    let compress = a.hyperplanes.map(|l| a.knobs.options(l)).transpose()?;
    let mut policy = a
        .policy
        .as_deref()
        .map(|p| Policy::load(p, &a.model.model))
        .transpose()?;
    if a.max_drop.is_some() {
        // Scored on images the calibration did not see.
        a.data.skip = a.data.skip.max(a.calibration_images);
    }
    let mut s = Session::open(&a.model, &a.data)?;
    let calibrated = super::calibrate::calibrated_policy(&a, &mut s)?;
    if let Some((p, _)) = &calibrated {
        policy = Some(p.clone());
    }
    let policy_path = a.policy.as_deref().or(a.save_policy.as_deref());
    let dense_flops = s.plan.dense_macs();
    // With HASTE, both networks run each batch in turns: one pass, and speeds measured at
    // the same moments.
    let (dense, haste) = if compress.is_some() || policy.is_some() {
        let (d, h) = s.in_turns(compress.as_ref(), policy.as_ref())?;
        (d, Some(h))
    } else {
        (s.dense()?, None)
    };
    if a.data.json {
        let mut j = json!({
            "model": a.model.model.display().to_string(),
            "data": a.data.data.display().to_string(),
            "images": dense.images,
            "top1": dense.top1,
            "top5": dense.top5,
            "dense_flops": dense_flops,
            "seconds": dense.seconds,
            "images_per_second": dense.images_per_second(),
            "compute_seconds": dense.compute_seconds,
            "compute_images_per_second": dense.compute_images_per_second(),
            "batch": a.data.batch,
            "threads": s.plan.threads(),
            "skipped_images": dense.skipped,
            "nonfinite_logits": dense.nonfinite_logits,
        });
        if let Some(h) = &haste {
            let o = j.as_object_mut().expect("object");
            let settings = match (&compress, &policy) {
                (Some(c), _) => json!({
                    "hyperplanes": c.config.hyperplanes,
                    "sparsity": c.config.sparsity,
                    "tile": if c.chooses_tiles() { json!("auto") } else { json!(c.config.tile) },
                    "start_layer": c.start_layer,
                    "skip_1x1": c.skip_pointwise,
                    "magnitude_bins": format!("{:?}", c.magnitude),
                    "seed": c.config.seed,
                }),
                (None, Some(p)) => policy_json(policy_path, p),
                (None, None) => json!({}),
            };
            for (k, v) in settings.as_object().expect("object") {
                o.insert(k.clone(), v.clone());
            }
            let more = json!({
                "top1_dense": dense.top1,
                "top5_dense": dense.top5,
                "top1": h.eval.top1,
                "top5": h.eval.top5,
                "top1_drop": dense.top1 - h.eval.top1,
                "flops": h.flops.flops,
                "flops_overhead": h.flops.overhead_flops,
                "flops_reduction": h.flops.reduction(),
                "flops_reduction_conv_only": h.flops.reduction_conv_only(),
                "compressed_convs": h.layers.iter().filter(|l| l.choice == crate::compress::LayerChoice::Compressed).count(),
                "layer_tiles": h.layers.iter().map(|l| l.tile).collect::<Vec<_>>(),
                "overhead_dense_convs": h.layers.iter().filter(|l| l.choice == crate::compress::LayerChoice::DenseOverhead).count(),
                "few_merged_dense_convs": h.layers.iter().filter(|l| l.choice == crate::compress::LayerChoice::DenseFewMerged).count(),
                "haste_seconds": h.eval.seconds,
                "haste_images_per_second": h.eval.images_per_second(),
                "haste_compute_images_per_second": h.eval.compute_images_per_second(),
                "speedup": dense.compute_seconds / h.eval.compute_seconds.max(1e-9),
                "top1_disagreements": h.eval.predictions.top1_disagreements(&dense.predictions),
                "nonfinite_logits_dense": dense.nonfinite_logits,
                "nonfinite_logits": h.eval.nonfinite_logits,
                "nonfinite_inputs": h.nonfinite_inputs(),
            });
            for (k, v) in more.as_object().expect("object") {
                o.insert(k.clone(), v.clone());
            }
            if let Some((_, seconds)) = &calibrated {
                o.insert("objective".into(), json!(a.objective));
                o.insert("calibration_seconds".into(), json!(seconds));
                o.insert("first_image".into(), json!(a.data.skip));
            }
        }
        super::emit_json(j);
        return Ok(());
    }
    println!("model        {}", a.model.model.display());
    println!(
        "data         {} ({} images)",
        a.data.data.display(),
        dense.images
    );
    match &haste {
        Some(h) => {
            match (&compress, &policy) {
                (Some(c), _) => println!("HASTE        {}", describe(c)),
                (None, Some(p)) => println!("HASTE        {}", describe_policy(p)),
                (None, None) => {}
            }
            if let Some(why) = policy.as_ref().and_then(Policy::why_all_dense) {
                println!("why          {why}");
            }
            if let Some((_, seconds)) = &calibrated {
                println!(
                    "calibrated   on images 0 to {} (labels unread, {} objective) in {seconds:.1} s; scored from image {}{}",
                    a.calibration_images - 1,
                    a.objective,
                    a.data.skip,
                    a.save_policy.as_ref().map_or(String::new(), |p| format!("; policy written to {}", p.display()))
                );
            }
            println!("layers       {}", layer_summary(&h.layers));
            println!(
                "             {:>12} {:>12} {:>10}",
                "dense", "HASTE", "change"
            );
            println!(
                "top-1        {:>11.2}% {:>11.2}% {:>+9.2} pt",
                dense.top1,
                h.eval.top1,
                h.eval.top1 - dense.top1
            );
            println!(
                "top-5        {:>11.2}% {:>11.2}% {:>+9.2} pt",
                dense.top5,
                h.eval.top5,
                h.eval.top5 - dense.top5
            );
            if let Some(c) = policy.as_ref().and_then(|p| p.calibration.as_ref()) {
                println!(
                    "             predicted top-1 change {:+.2} pt (+-{:.2}), conv time x{:.2}, from {} calibration images",
                    -c.predicted_top1_drop, c.predicted_top1_drop_se, c.predicted_time_ratio, c.images
                );
            }
            println!(
                "FLOPs/image  {:>12} {:>12} {:>+9.1} %  (overhead {} included; convs alone {:+.1} %)",
                flops(dense_flops),
                flops(h.flops.flops),
                -h.flops.reduction(),
                flops(h.flops.overhead_flops),
                -h.flops.reduction_conv_only()
            );
            println!(
                "images/s     {:>12.1} {:>12.1} {:>9.2}x (in the model, in turns on each batch, {} threads, batch {})",
                dense.compute_images_per_second(),
                h.eval.compute_images_per_second(),
                dense.compute_seconds / h.eval.compute_seconds.max(1e-9),
                s.plan.threads(),
                a.data.batch
            );
        }
        _ => {
            println!("top-1        {:.2} %", dense.top1);
            println!("top-5        {:.2} %", dense.top5);
            println!(
                "FLOPs/image  {} (multiply-accumulates of Conv, Gemm, MatMul)",
                flops(dense_flops)
            );
            println!(
                "speed        {:.1} images/s end to end, {:.1} images/s in the model ({} threads, batch {})",
                dense.images_per_second(),
                dense.compute_images_per_second(),
                s.plan.threads(),
                a.data.batch
            );
        }
    }
    let mut lines = super::warnings("dense", &dense, None);
    if let Some(h) = &haste {
        let mut hl = super::warnings("HASTE", &h.eval, Some(h));
        // The same images fail to load in both passes: name them once.
        hl.retain(|l| !l.contains("unreadable image"));
        lines.extend(hl);
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// How many convolutions HASTE runs on, and why the others stay dense.
pub(crate) fn layer_summary(layers: &[crate::compress::ConvLayerReport]) -> String {
    use crate::compress::LayerChoice;
    let count = |c: LayerChoice| layers.iter().filter(|l| l.choice == c).count();
    let mut s = format!(
        "{} of {} convolutions compressed",
        count(LayerChoice::Compressed),
        layers.len()
    );
    let mut tiles: Vec<usize> = layers.iter().filter_map(|l| l.tile).collect();
    tiles.sort_unstable();
    tiles.dedup();
    if tiles.len() > 1 {
        let on = |t: usize| layers.iter().filter(|l| l.tile == Some(t)).count();
        let parts: Vec<String> = tiles
            .iter()
            .map(|&t| format!("{} at tile {t}", on(t)))
            .collect();
        s += &format!(" ({})", parts.join(", "));
    }
    let overhead = count(LayerChoice::DenseOverhead);
    if overhead > 0 {
        s += &format!(
            "; {overhead} kept dense: HASTE's per-patch work there is predicted to cost more \
             than merging {:.0} % of their channels saves (--all-layers compresses them anyway)",
            100.0 * crate::haste::cost::MAX_OVERHEAD_SHARE
        );
    }
    let few = count(LayerChoice::DenseFewMerged);
    if few > 0 {
        s += &format!(
            "; {few} kept dense: on the first batch they merged too few channels for HASTE to \
             be predicted {:.0} % faster or more (--all-layers compresses them anyway)",
            100.0 * (1.0 - crate::haste::cost::MAX_PREDICTED_TIME_RATIO)
        );
    }
    let slower = count(LayerChoice::DenseSlower);
    if slower > 0 {
        s += &format!("; {slower} kept dense: HASTE measured slower");
    }
    s
}

fn join(values: &[usize], sep: &str) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// One line describing the HASTE settings.
pub(crate) fn describe(c: &crate::compress::CompressOptions) -> String {
    let cfg = &c.config;
    format!(
        "L={} s={:.3} tile={} start layer={} seed={} {:?} magnitude={:?}{}{}{}",
        cfg.hyperplanes,
        cfg.sparsity,
        if c.chooses_tiles() {
            format!("auto ({} per layer)", join(&c.tiles(), " or "))
        } else {
            cfg.tile.to_string()
        },
        c.start_layer,
        cfg.seed,
        cfg.kind,
        c.magnitude,
        if c.skip_pointwise {
            " 1x1 dense"
        } else {
            " 1x1 compressed"
        },
        if cfg.centering { "" } else { " no-centering" },
        if c.cost_aware { "" } else { " all layers" },
    )
}

/// One line describing a policy.
pub(crate) fn describe_policy(p: &Policy) -> String {
    let mut s = format!(
        "policy: {} of {} convolutions on HASTE",
        p.haste_layers(),
        p.layers.len()
    );
    let ls: Vec<usize> = p.layers.iter().filter_map(|l| l.hyperplanes).collect();
    if let (Some(lo), Some(hi)) = (ls.iter().min(), ls.iter().max()) {
        s += &format!(", L {lo} to {hi}");
    }
    // The tiles the HASTE layers run at (a layer without one takes the file's).
    let mut tiles: Vec<usize> = p
        .layers
        .iter()
        .filter(|l| l.is_haste())
        .map(|l| l.tile.unwrap_or(p.tile))
        .collect();
    tiles.sort_unstable();
    tiles.dedup();
    if tiles.is_empty() {
        tiles.push(p.tile);
    }
    s += &format!(
        ", s={:.3} tile={} seed={}",
        p.sparsity,
        join(&tiles, " and "),
        p.seed
    );
    if let Some(c) = &p.calibration {
        s += &format!(
            " (calibrated for {} {} on {} images)",
            c.target, c.target_value, c.images
        );
    }
    s
}

/// The `eval --json` fields of a policy.
fn policy_json(path: Option<&std::path::Path>, p: &Policy) -> serde_json::Value {
    let c = p.calibration.as_ref();
    json!({
        "policy": path.map(|p| p.display().to_string()),
        "policy_haste_layers": p.haste_layers(),
        "sparsity": p.sparsity,
        "tile": p.tile,
        "seed": p.seed,
        "predicted_top1_drop": c.map(|c| c.predicted_top1_drop),
        "predicted_top1_drop_se": c.map(|c| c.predicted_top1_drop_se),
        "predicted_flops_reduction": c.map(|c| c.flops_reduction),
        "calibration_images": c.map(|c| c.images),
        "why_dense": p.why_all_dense(),
    })
}
