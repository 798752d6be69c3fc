//! Evaluation: run a plan over a dataset in batches and score top-1 / top-5.

mod in_turns;

pub use in_turns::{evaluate_in_turns, evaluate_policy_in_turns};

use crate::datasets::{load_batch_skipping, Dataset};
use crate::error::{Error, Result};
use crate::plan::Plan;
use std::time::Instant;

/// How to sweep a dataset.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Only the first `limit` images.
    pub limit: Option<usize>,
    /// Images per batch (at most the plan's `max_batch`).
    pub batch: usize,
    /// Skip images that fail to load (counted and named in [`EvalReport::skipped`]) instead
    /// of stopping at the first one.
    pub skip_bad: bool,
}

/// The top-5 classes predicted for each image, best first, and the true labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Predictions {
    pub labels: Vec<usize>,
    pub top5: Vec<[u32; 5]>,
}

impl Predictions {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no predictions.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Top-1 accuracy in percent.
    pub fn top1(&self) -> f64 {
        self.percent(|t, l| t[0] as usize == l)
    }

    /// Top-5 accuracy in percent.
    pub fn top5(&self) -> f64 {
        self.percent(|t, l| t.iter().any(|&c| c as usize == l))
    }

    fn percent(&self, hit: impl Fn(&[u32; 5], usize) -> bool) -> f64 {
        if self.labels.is_empty() {
            return 0.0;
        }
        let hits = self
            .top5
            .iter()
            .zip(&self.labels)
            .filter(|(t, &l)| hit(t, l))
            .count();
        100.0 * hits as f64 / self.labels.len() as f64
    }

    /// Images whose top-1 prediction differs from `other`'s.
    pub fn top1_disagreements(&self, other: &Predictions) -> usize {
        self.top5
            .iter()
            .zip(&other.top5)
            .filter(|(a, b)| a[0] != b[0])
            .count()
    }
}

/// Accuracy and speed of one pass over a dataset.
#[derive(Debug, Clone, Default)]
pub struct EvalReport {
    /// Images scored (skipped images excluded).
    pub images: usize,
    pub top1: f64,
    pub top5: f64,
    /// Wall-clock seconds of the whole pass (loading included).
    pub seconds: f64,
    /// Seconds spent inside the model (loading excluded).
    pub compute_seconds: f64,
    pub predictions: Predictions,
    /// Names of the images skipped because they could not be loaded (`skip_bad` only).
    pub skipped: Vec<String>,
    /// Logits that came out NaN or infinite (over all images).
    pub nonfinite_logits: u64,
}

impl EvalReport {
    /// Images per second, end to end.
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }

    /// Images per second of the model alone.
    pub fn compute_images_per_second(&self) -> f64 {
        self.images as f64 / self.compute_seconds.max(1e-9)
    }
}

/// Indices of the 5 largest values, best first (fewer classes pad with the best one).
pub fn top5(logits: &[f32]) -> [u32; 5] {
    let mut best: [u32; 5] = [0; 5];
    let mut vals = [f32::NEG_INFINITY; 5];
    let mut filled = 0;
    for (i, &v) in logits.iter().enumerate() {
        let v = if v.is_nan() { f32::NEG_INFINITY } else { v };
        if filled < 5 || v > vals[4] {
            let mut pos = filled.min(4);
            while pos > 0 && vals[pos - 1] < v {
                if pos < 5 {
                    vals[pos] = vals[pos - 1];
                    best[pos] = best[pos - 1];
                }
                pos -= 1;
            }
            vals[pos] = v;
            best[pos] = i as u32;
            filled = (filled + 1).min(5);
        }
    }
    for k in filled..5 {
        best[k] = best[0];
    }
    best
}

/// Runs `plan` over `data` and scores it. `progress` is called with the number of images done.
///
/// ```no_run
/// use haste::{Model, PlanOptions};
/// use haste::datasets::{open_dataset, ModelCard};
/// use haste::eval::{evaluate, EvalOptions};
/// let path = std::path::Path::new("../shared/models/resnet20-cifar10.onnx");
/// let model = Model::load(path)?;
/// let card = ModelCard::beside_model(path)?.expect("card");
/// let data = open_dataset("../shared/data/cifar10/test_batch_jpeg.bin".as_ref(), &card.preprocess, None)?;
/// let mut plan = model.plan(PlanOptions { threads: 0, max_batch: 64 })?;
/// let report = evaluate(&mut plan, data.as_ref(), EvalOptions { limit: Some(256), batch: 64, skip_bad: false }, &mut |_| {})?;
/// println!("top-1 {:.2} %", report.top1);
/// # Ok::<(), haste::Error>(())
/// ```
pub fn evaluate(
    plan: &mut Plan,
    data: &dyn Dataset,
    options: EvalOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<EvalReport> {
    let mut scores = Scores::default();
    let pass = batches(plan, data, options, progress, &mut |plan, x, loaded| {
        scores.run(plan, x, loaded, data)
    })?;
    scores.report(data, &pass, pass.seconds)
}

/// What [`batches`] saw: the images skipped, how many it was to cover, its wall time.
pub(crate) struct Pass {
    pub skipped: Vec<String>,
    pub total: usize,
    pub seconds: f64,
}

/// What [`batches`] calls on each batch: the plan, the batch's inputs, its images' indices.
pub(crate) type EachBatch<'a> = dyn FnMut(&mut Plan, &[f32], &[usize]) -> Result<()> + 'a;

/// Loads `data` batch after batch (`options`) and hands each batch's inputs and image
/// indices to `each`; `progress` gets the images covered so far.
pub(crate) fn batches(
    plan: &mut Plan,
    data: &dyn Dataset,
    options: EvalOptions,
    progress: &mut dyn FnMut(usize),
    each: &mut EachBatch,
) -> Result<Pass> {
    let total = options.limit.map_or(data.len(), |l| l.min(data.len()));
    if total == 0 {
        return Err(Error::dataset(data.source(), "no images to evaluate"));
    }
    if !data.has_labels() {
        return Err(Error::dataset(
            data.source(),
            "has no labels (a flat folder of images): scoring needs class subfolders or a CIFAR file (`haste calibrate` takes unlabelled images)",
        ));
    }
    let batch = options.batch.clamp(1, plan.max_batch());
    let per_image: usize = plan.image_shape().iter().product();
    let mut buf = vec![0.0f32; batch * per_image];
    let started = Instant::now();
    let mut skipped = Vec::new();
    let mut start = 0;
    while start < total {
        let n = batch.min(total - start);
        let (loaded, bad) = plan.thread_pool().install(|| {
            load_batch_skipping(data, start, n, per_image, &mut buf, options.skip_bad)
        })?;
        skipped.extend(bad);
        if !loaded.is_empty() {
            each(plan, &buf[..loaded.len() * per_image], &loaded)?;
        }
        start += n;
        progress(start);
    }
    Ok(Pass {
        skipped,
        total,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The predictions of one network over the batches of a pass, and its time in the model.
#[derive(Default)]
pub(crate) struct Scores {
    predictions: Predictions,
    compute: f64,
    nonfinite_logits: u64,
}

impl Scores {
    /// Runs `plan` on the batch `x` of the images `loaded` and scores it.
    pub fn run(
        &mut self,
        plan: &mut Plan,
        x: &[f32],
        loaded: &[usize],
        data: &dyn Dataset,
    ) -> Result<()> {
        let m = loaded.len();
        let t = Instant::now();
        let (shape, out) = plan.run(x, m)?;
        self.compute += t.elapsed().as_secs_f64();
        let classes = shape.last().copied().unwrap_or(0);
        if classes == 0 || out.len() != m * classes {
            return Err(Error::Internal(format!("model output has shape {shape:?}")));
        }
        self.nonfinite_logits += out.iter().filter(|v| !v.is_finite()).count() as u64;
        for (&index, logits) in loaded.iter().zip(out.chunks_exact(classes)) {
            self.predictions.labels.push(data.label(index));
            self.predictions.top5.push(top5(logits));
        }
        Ok(())
    }

    /// The report of the pass, `seconds` its wall time for this network.
    pub fn report(self, data: &dyn Dataset, pass: &Pass, seconds: f64) -> Result<EvalReport> {
        if self.predictions.is_empty() {
            return Err(Error::dataset(
                data.source(),
                format!("all {} images failed to load (skipped)", pass.total),
            ));
        }
        Ok(EvalReport {
            images: self.predictions.len(),
            top1: self.predictions.top1(),
            top5: self.predictions.top5(),
            seconds,
            compute_seconds: self.compute,
            predictions: self.predictions,
            skipped: pass.skipped.clone(),
            nonfinite_logits: self.nonfinite_logits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top5_orders_best_first() {
        assert_eq!(top5(&[0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.0]), [1, 5, 3, 2, 4]);
        assert_eq!(top5(&[1.0, 2.0]), [1, 0, 1, 1, 1]);
    }
}

/// A HASTE pass over a dataset: accuracy, speed, per-convolution report and network FLOPs.
#[derive(Debug, Clone)]
pub struct HasteReport {
    pub eval: EvalReport,
    pub layers: Vec<crate::compress::ConvLayerReport>,
    pub flops: crate::compress::FlopsSummary,
}

impl HasteReport {
    /// Non-finite values HASTE met in its convolutions' input windows, over all layers.
    pub fn nonfinite_inputs(&self) -> u64 {
        self.layers.iter().map(|l| l.stats.nonfinite_inputs).sum()
    }
}

/// Compresses `plan` with `compress`, evaluates it on `data`, and puts the dense kernels back.
///
/// ```no_run
/// use haste::{Model, PlanOptions, CompressOptions};
/// use haste::haste::HasteConfig;
/// use haste::datasets::{open_dataset, ModelCard};
/// use haste::eval::{evaluate, evaluate_haste, EvalOptions};
/// let path = std::path::Path::new("../shared/models/resnet56-cifar10.onnx");
/// let model = Model::load(path)?;
/// let card = ModelCard::beside_model(path)?.expect("card");
/// let data = open_dataset("../shared/data/cifar10/test_batch_jpeg.bin".as_ref(), &card.preprocess, None)?;
/// let mut plan = model.plan(PlanOptions { threads: 0, max_batch: 64 })?;
/// let opts = EvalOptions { limit: Some(1000), batch: 64, skip_bad: false };
/// let dense = evaluate(&mut plan, data.as_ref(), opts, &mut |_| {})?;
/// let compress = CompressOptions { config: HasteConfig { hyperplanes: 14, ..Default::default() }, ..Default::default() };
/// let h = evaluate_haste(&mut plan, data.as_ref(), opts, &compress, &mut |_| {})?;
/// println!("{:.2} % -> {:.2} %, {:.1} % fewer FLOPs", dense.top1, h.eval.top1, h.flops.reduction());
/// # Ok::<(), haste::Error>(())
/// ```
pub fn evaluate_haste(
    plan: &mut Plan,
    data: &dyn Dataset,
    options: EvalOptions,
    compress: &crate::compress::CompressOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<HasteReport> {
    let first_batch = (options.batch, options.limit, options.skip_bad);
    let compression = crate::compress::compress_on(plan, compress, data, first_batch)?;
    evaluate_compressed(plan, data, options, &compression, progress)
}

/// Evaluates the compression on `plan`, reports it, and puts the dense kernels back.
fn evaluate_compressed(
    plan: &mut Plan,
    data: &dyn Dataset,
    options: EvalOptions,
    compression: &crate::compress::Compression,
    progress: &mut dyn FnMut(usize),
) -> Result<HasteReport> {
    let result = evaluate(plan, data, options, progress);
    let layers = compression.reports(plan);
    plan.reset_conv_kernels();
    let eval = result?;
    let flops = crate::compress::flops_summary(plan, &layers);
    Ok(HasteReport {
        eval,
        layers,
        flops,
    })
}

/// Puts `policy` on `plan`, evaluates it on `data`, and puts the dense kernels back.
pub fn evaluate_policy(
    plan: &mut Plan,
    data: &dyn Dataset,
    options: EvalOptions,
    policy: &crate::compress::Policy,
    progress: &mut dyn FnMut(usize),
) -> Result<HasteReport> {
    evaluate_policy_probed(plan, data, options, policy, false, progress)
}

/// [`evaluate_policy`], with each HASTE layer's output error measured when `measure_error`
/// ([`crate::compress::Compression::apply_policy_probed`]).
pub fn evaluate_policy_probed(
    plan: &mut Plan,
    data: &dyn Dataset,
    options: EvalOptions,
    policy: &crate::compress::Policy,
    measure_error: bool,
    progress: &mut dyn FnMut(usize),
) -> Result<HasteReport> {
    let compression =
        crate::compress::Compression::apply_policy_probed(plan, policy, measure_error)?;
    evaluate_compressed(plan, data, options, &compression, progress)
}
