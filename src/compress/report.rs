//! What a compression did: per-layer reports (choice, FLOPs, statistics, timings,
//! predictions, errors) and the network's FLOPs.

use super::probe::ErrorProbe;
use super::{conv_choices, Compression, LayerChoice};
use crate::haste::cost::{cost_terms, CostLayer, CostTerms, Merging, Patches};
use crate::haste::{HasteKernel, LayerStats};
use crate::kernels::convolution::find_kernel;
use crate::ops::Conv2dParams;
use crate::plan::Plan;

/// One convolution of the network after a HASTE run.
#[derive(Debug, Clone)]
pub struct ConvLayerReport {
    /// Index among the convolutions (execution order).
    pub conv_index: usize,
    pub step: usize,
    pub name: String,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: (usize, usize),
    pub input_hw: (usize, usize),
    pub choice: LayerChoice,
    /// Dense MACs per image.
    pub dense_flops: u64,
    /// MACs per image as run (HASTE incl. overhead, or dense).
    pub flops: u64,
    /// HASTE overhead per image (hashing, centering, merging).
    pub overhead_flops: u64,
    /// Accumulated HASTE statistics (empty for dense layers).
    pub stats: LayerStats,
    /// Seconds per batch of (HASTE, dense) measured by [`Compression::time_layers`].
    pub timing: Option<(f64, f64)>,
    /// The output tile of a HASTE layer (chosen per layer with
    /// [`super::CompressOptions::tile_choices`]).
    pub tile: Option<usize>,
    /// HASTE's predicted time over dense ([`crate::haste::cost::predicted_time_ratio`]): for
    /// a HASTE layer from the channels it merged in this run, for a layer the first batch
    /// sent back to dense ([`LayerChoice::DenseFewMerged`]) from that batch; `None` for the
    /// others.
    pub predicted_time_ratio: Option<f64>,
    /// The terms of a HASTE layer's predicted time ([`cost_terms`]), to refit the model.
    pub cost_terms: Option<CostTerms>,
    /// Relative L2 error `||haste - dense|| / ||dense||` of the layer's output before its
    /// activation, over the images run, with [`super::CompressOptions::measure_error`].
    pub relative_error: Option<f64>,
}

impl ConvLayerReport {
    /// The layer's FLOPs reduction in percent, overhead counted (negative when HASTE costs
    /// more than the dense convolution).
    pub fn reduction(&self) -> f64 {
        100.0 * (1.0 - self.flops as f64 / self.dense_flops.max(1) as f64)
    }
}

/// Whole-network FLOPs per image, dense and with HASTE.
#[derive(Debug, Clone, Default)]
pub struct FlopsSummary {
    pub dense_flops: u64,
    pub flops: u64,
    pub overhead_flops: u64,
    /// Dense MACs of all convolutions.
    pub conv_dense_flops: u64,
    /// Convolution MACs with HASTE, overhead excluded.
    pub conv_flops_without_overhead: u64,
}

impl FlopsSummary {
    /// `1 - flops / dense_flops`, in percent (overhead included).
    pub fn reduction(&self) -> f64 {
        100.0 * (1.0 - self.flops as f64 / self.dense_flops.max(1) as f64)
    }

    /// Reduction of the convolutions' own MACs, overhead excluded, in percent of the network.
    pub fn reduction_conv_only(&self) -> f64 {
        let saved = self
            .conv_dense_flops
            .saturating_sub(self.conv_flops_without_overhead);
        100.0 * saved as f64 / self.dense_flops.max(1) as f64
    }
}

impl Compression {
    /// Per-convolution report from the statistics accumulated since the last report (or
    /// [`Compression::apply`]; consumes them).
    pub fn reports(&self, plan: &Plan) -> Vec<ConvLayerReport> {
        let choices = conv_choices(plan, &self.options);
        plan.per_conv_macs()
            .into_iter()
            .zip(choices)
            .enumerate()
            .map(|(k, ((step, dense), (_, choice)))| {
                let (op, h, w) = plan.conv_at(step).expect("step is a conv");
                let (tile, s) = layer_stats(plan, step)
                    .map(|(_, t, s)| (Some(t), s))
                    .unwrap_or_default();
                let relative_error = plan
                    .conv_kernel(step)
                    .and_then(|k| find_kernel::<ErrorProbe>(k.as_ref()))
                    .and_then(ErrorProbe::take_relative_error);
                let compressed = !plan.runs_dense(step) && s.images > 0;
                let per_image = |v: u64| v.checked_div(s.images).unwrap_or(0);
                let (flops, overhead) = if compressed {
                    (per_image(s.flops.total()), per_image(s.flops.overhead()))
                } else {
                    (dense, 0)
                };
                let terms = tile.filter(|_| compressed).map(|t| {
                    let at = Patches::of_image(&op.params, (h, w), t);
                    cost_terms(&CostLayer::of(op), at, Merging::of_stats(&s))
                });
                ConvLayerReport {
                    conv_index: k,
                    step,
                    name: plan.step_name(step).to_string(),
                    c_in: op.params.c_in,
                    c_out: op.params.c_out,
                    kernel: (op.params.kh, op.params.kw),
                    input_hw: (h, w),
                    choice: if compressed {
                        LayerChoice::Compressed
                    } else if choice == LayerChoice::Compressed && self.timing[step].is_some() {
                        LayerChoice::DenseSlower
                    } else if choice == LayerChoice::Compressed && self.predicted[step].is_some() {
                        LayerChoice::DenseFewMerged
                    } else if self.from_policy && choice == LayerChoice::Compressed {
                        LayerChoice::DensePolicy
                    } else if choice == LayerChoice::Compressed {
                        LayerChoice::DenseBeforeStart
                    } else {
                        choice
                    },
                    dense_flops: dense,
                    flops,
                    overhead_flops: overhead,
                    stats: s,
                    timing: self.timing[step],
                    tile: tile.filter(|_| compressed),
                    predicted_time_ratio: match terms {
                        Some(t) => Some(t.predicted()),
                        None => self.predicted[step],
                    },
                    cost_terms: terms,
                    relative_error,
                }
            })
            .collect()
    }
}

/// Network FLOPs per image of `plan` from its per-layer reports.
pub fn flops_summary(plan: &Plan, layers: &[ConvLayerReport]) -> FlopsSummary {
    let dense_flops = plan.dense_macs();
    let conv_dense: u64 = layers.iter().map(|l| l.dense_flops).sum();
    let conv_as_run: u64 = layers.iter().map(|l| l.flops).sum();
    let overhead: u64 = layers.iter().map(|l| l.overhead_flops).sum();
    FlopsSummary {
        dense_flops,
        flops: dense_flops - conv_dense + conv_as_run,
        overhead_flops: overhead,
        conv_dense_flops: conv_dense,
        conv_flops_without_overhead: conv_as_run - overhead,
    }
}

/// The statistics the HASTE kernel of `step` has accumulated, with the layer's geometry
/// and tile (and resets them); `None` when the step is not on HASTE.
pub(super) fn layer_stats(plan: &Plan, step: usize) -> Option<(Conv2dParams, usize, LayerStats)> {
    if plan.runs_dense(step) {
        return None;
    }
    let k = find_kernel::<HasteKernel>(plan.conv_kernel(step)?.as_ref())?;
    Some((*k.conv().params(), k.conv().config().tile, k.take_stats()))
}
