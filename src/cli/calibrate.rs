//! `haste calibrate`: per-layer HASTE settings for a target drop or saving, from unlabelled
//! images, written as a policy file.

use super::args::{CalibrateArgs, DataArgs, EvalArgs, ModelArgs, SweepArgs};
use super::Session;
use crate::calibration::{calibrate, CalibrateOptions, Objective, Target, CALIBRATION_TILES};
use crate::compress::Policy;
use crate::datasets::{load_batch_skipping, open_dataset_with};
use crate::error::{Error, Result};
use crate::eval::HasteReport;
use crate::report::{flops, progress_bar};
use crate::{Model, PlanOptions};
use std::time::Instant;

pub fn run(a: CalibrateArgs) -> Result<()> {
    let target = match (a.max_drop, a.flops_reduction) {
        (Some(d), None) => Target::MaxDrop(d),
        (None, Some(r)) => Target::FlopsReduction(r),
        _ => {
            return Err(Error::InvalidArgument(
                "give one of --max-drop POINTS or --flops-reduction PERCENT".into(),
            ))
        }
    };
    if a.images == 0 || a.batch == 0 {
        return Err(Error::InvalidArgument(
            "--images and --batch must be at least 1".into(),
        ));
    }
    let defaults = CalibrateOptions::default();
    let options = CalibrateOptions {
        target,
        objective: if a.objective_time() {
            Objective::Time
        } else {
            Objective::Flops
        },
        hyperplanes: a.hyperplanes.clone().unwrap_or(defaults.hyperplanes),
        seed: a.seed,
        sparsity: a.sparsity,
        tiles: a.tile.choices_or(&CALIBRATION_TILES),
        ..defaults
    };
    let model = Model::load(&a.model.model)?;
    let (pre, _) = a.model.resolve(&model.image_shape)?;
    // Labels are never read: the data is opened without the model's label list.
    let data = open_dataset_with(&a.data, &pre, None, a.skip_bad)?;
    let n = a.images.min(data.len());
    let per_image: usize = model.image_shape.iter().product();
    let mut plan = model.plan(PlanOptions {
        threads: a.threads,
        max_batch: a.batch.min(n),
    })?;
    let mut images = vec![0.0f32; n * per_image];
    let (loaded, skipped) = plan
        .thread_pool()
        .install(|| load_batch_skipping(data.as_ref(), 0, n, per_image, &mut images, a.skip_bad))?;
    images.truncate(loaded.len() * per_image);
    let started = Instant::now();
    let policy = calibrate_shown(
        &mut plan,
        (&a.model.model, &images, loaded.len()),
        &options,
        "calibrate",
    )?;
    policy.save(&a.out)?;
    let seconds = started.elapsed().as_secs_f64();
    let c = policy
        .calibration
        .as_ref()
        .ok_or_else(|| Error::Internal("calibration summary".into()))?;
    let dense: u64 = plan.dense_macs();
    if a.json {
        let j = serde_json::json!({
            "model": a.model.model.display().to_string(),
            "data": a.data.display().to_string(),
            "out": a.out.display().to_string(),
            "images": c.images,
            "skipped_images": skipped,
            "forward_passes": c.forward_passes,
            "seconds": seconds,
            "target": c.target,
            "target_value": c.target_value,
            "objective": c.objective,
            "haste_layers": policy.haste_layers(),
            "layers": policy.layers.len(),
            "predicted_top1_drop": c.predicted_top1_drop,
            "predicted_top1_drop_se": c.predicted_top1_drop_se,
            "belief_drop": c.belief_drop,
            "confidence_drop": c.confidence_drop,
            "top1_agreement": c.top1_agreement,
            "flops_reduction": c.flops_reduction,
            "predicted_time_ratio": c.predicted_time_ratio,
            "layers_saving_alone": c.layers_saving_alone,
            "why_dense": policy.why_all_dense(),
            "dense_flops": dense,
        });
        super::emit_json(j);
        return Ok(());
    }
    println!("model        {}", a.model.model.display());
    println!(
        "images       {} of {} (labels not read){}",
        c.images,
        a.data.display(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(", {} unreadable skipped", skipped.len())
        }
    );
    println!(
        "target       {} {} ({} objective)",
        c.target, c.target_value, c.objective
    );
    println!("policy       {}", super::eval::describe_policy(&policy));
    if let Some(why) = policy.why_all_dense() {
        println!("why          {why}");
    }
    println!(
        "predicted    top-1 change {:+.2} pt (+-{:.2}; belief {:+.2}, confidence {:+.2}), {:.1} % of answers as dense",
        -c.predicted_top1_drop,
        c.predicted_top1_drop_se,
        -c.belief_drop,
        -c.confidence_drop,
        100.0 * c.top1_agreement
    );
    println!(
        "FLOPs/image  {} -> {} ({:+.1} %, overhead included); predicted conv time x{:.2}",
        flops(dense),
        flops((dense as f64 * (1.0 - c.flops_reduction / 100.0)) as u64),
        -c.flops_reduction,
        c.predicted_time_ratio
    );
    println!(
        "cost         {} forward passes over the images, {seconds:.1} s",
        c.forward_passes
    );
    println!("wrote        {}", a.out.display());
    Ok(())
}

/// The calibrated points of `sweep --max-drop`: per bound, the policy calibrated on the first
/// `--calibration-images` images of the data (before any --skip; labels unread) and its
/// evaluation on the session's images, with the predicted drop.
pub(crate) fn calibrated_points(
    a: &SweepArgs,
    s: &mut Session,
) -> Result<Vec<(f64, HasteReport, f64)>> {
    if a.max_drop.is_empty() {
        return Ok(Vec::new());
    }
    let (images, n) = calibration_images(s, &a.model, &a.data, a.calibration_images)?;
    let mut points = Vec::new();
    for &x in &a.max_drop {
        let options = CalibrateOptions {
            target: Target::MaxDrop(x),
            seed: a.knobs.seed,
            sparsity: a.knobs.sparsity,
            tiles: a.knobs.tile.choices_or(&CALIBRATION_TILES),
            ..CalibrateOptions::default()
        };
        let policy = calibrate_shown(
            &mut s.plan,
            (&a.model.model, &images, n),
            &options,
            &format!("calib {x}"),
        )?;
        let predicted = policy
            .calibration
            .as_ref()
            .map_or(0.0, |c| c.predicted_top1_drop);
        points.push((x, s.policy(&policy)?, predicted));
    }
    Ok(points)
}

/// `eval --max-drop`: the policy calibrated on the first `--calibration-images` images of the
/// data (labels unread), and the seconds it took.
pub(crate) fn calibrated_policy(a: &EvalArgs, s: &mut Session) -> Result<Option<(Policy, f64)>> {
    let Some(max_drop) = a.max_drop else {
        return Ok(None);
    };
    let (images, n) = calibration_images(s, &a.model, &a.data, a.calibration_images)?;
    let options = CalibrateOptions {
        target: Target::MaxDrop(max_drop),
        objective: if a.objective == "time" {
            Objective::Time
        } else {
            Objective::Flops
        },
        seed: a.knobs.seed,
        sparsity: a.knobs.sparsity,
        tiles: a.knobs.tile.choices_or(&CALIBRATION_TILES),
        ..CalibrateOptions::default()
    };
    let started = Instant::now();
    let policy = calibrate_shown(
        &mut s.plan,
        (&a.model.model, &images, n),
        &options,
        "calibrate",
    )?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(out) = &a.save_policy {
        policy.save(out)?;
    }
    Ok(Some((policy, seconds)))
}

/// The first `n` images of the data (before any `--skip`; opened without labels), as the
/// session's model takes them, and how many loaded (`--skip-bad` may drop some).
fn calibration_images(
    s: &Session,
    model: &ModelArgs,
    data: &DataArgs,
    n: usize,
) -> Result<(Vec<f32>, usize)> {
    if n == 0 {
        return Err(Error::InvalidArgument(
            "--calibration-images must be at least 1".into(),
        ));
    }
    let shape = s.plan.image_shape().to_vec();
    let (pre, _) = model.resolve(&shape)?;
    let dataset = open_dataset_with(&data.data, &pre, None, data.skip_bad)?;
    let n = n.min(dataset.len());
    let per_image: usize = shape.iter().product();
    let mut images = vec![0.0f32; n * per_image];
    let (loaded, _) = s.plan.thread_pool().install(|| {
        load_batch_skipping(
            dataset.as_ref(),
            0,
            n,
            per_image,
            &mut images,
            data.skip_bad,
        )
    })?;
    images.truncate(loaded.len() * per_image);
    Ok((images, loaded.len()))
}

/// [`calibrate`] on `n` images of the model file `model`, with a progress bar labelled
/// `label` (cleared when it ends).
fn calibrate_shown(
    plan: &mut crate::Plan,
    (model, images, n): (&std::path::Path, &[f32], usize),
    options: &CalibrateOptions,
    label: &str,
) -> Result<crate::compress::Policy> {
    let bar = progress_bar(0, label);
    let policy = calibrate(plan, model, images, n, options, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    policy
}
