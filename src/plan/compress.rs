//! Applying HASTE to a planned network: which convolutions get the HASTE kernel, and the
//! network-level FLOP accounting afterwards.

use super::{ConvKernel, Plan};
use crate::error::{Error, Result};
use crate::haste::cost::{
    overhead_share, predicted_time_ratio, MAX_OVERHEAD_SHARE, MAX_PREDICTED_TIME_RATIO,
};
use crate::haste::{HasteConfig, HasteConv, LayerStats};

/// Where to use magnitude-aware hashing (bucket by the channel's norm as well as its angle).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MagnitudeMode {
    /// The paper's angular hash everywhere.
    Off,
    /// Magnitude bins of this log2 step in every compressed layer.
    Always(f32),
    /// Magnitude bins of this step only where the layer's input can be negative (after a
    /// LeakyReLU, or no activation). After a ReLU, flat regions hold exact zeros that merge
    /// without harm; after a LeakyReLU they hold constant levels that the angular hash cannot
    /// tell apart (see the README's measurements).
    SignedInputs(f32),
}

/// Which convolutions to compress, and how.
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// The HASTE knobs; its `magnitude_bins` is set per layer from `magnitude`.
    pub config: HasteConfig,
    /// Index (in execution order, from 0) of the first convolution to compress. The first
    /// convolution reads the RGB image and always stays dense, so this is at least 1.
    pub start_layer: usize,
    /// Keep 1x1 convolutions dense (their hashing overhead is large against their cost).
    pub skip_pointwise: bool,
    pub magnitude: MagnitudeMode,
    /// Time each HASTE layer against its dense kernel on the first batch and keep the dense
    /// kernel where HASTE is slower (see [`Plan::keep_dense_where_faster`]). Off by default:
    /// the choice then depends on the machine's timing, so accuracy and FLOPs are no longer
    /// reproducible from the seed alone.
    pub keep_dense_when_slower: bool,
    /// Keep dense the layers where HASTE cannot be faster than the dense kernel, in two
    /// steps. Data-free: layers whose fixed per-patch work is too large a share of the dense
    /// cost ([`crate::haste::cost::overhead_share`] above
    /// [`crate::haste::cost::MAX_OVERHEAD_SHARE`]) are never compressed. On the first batch
    /// of the data: layers that merge too few channels there for their predicted time to
    /// beat dense ([`crate::haste::cost::predicted_time_ratio`], see
    /// [`Plan::keep_dense_where_merging_cannot_pay`]) go back to dense. Deterministic: the
    /// same data, seed and knobs give the same choice. On by default, off in
    /// [`CompressOptions::paper`] and with `--all-layers`.
    pub cost_aware: bool,
}

impl Default for CompressOptions {
    /// haste's defaults: start at the third convolution, keep 1x1 convolutions and layers
    /// too small to pay for HASTE's overhead dense, magnitude-aware hashing (step 0.5) where
    /// inputs can be negative.
    fn default() -> Self {
        CompressOptions {
            config: HasteConfig::default(),
            start_layer: 2,
            skip_pointwise: true,
            magnitude: MagnitudeMode::SignedInputs(0.5),
            keep_dense_when_slower: false,
            cost_aware: true,
        }
    }
}

impl CompressOptions {
    /// The paper's method as published: every convolution but the first, angular hash only.
    pub fn paper(config: HasteConfig) -> Self {
        CompressOptions {
            config: HasteConfig {
                magnitude_bins: None,
                ..config
            },
            start_layer: 1,
            skip_pointwise: false,
            magnitude: MagnitudeMode::Off,
            keep_dense_when_slower: false,
            cost_aware: false,
        }
    }
}

/// Why a convolution stays dense, or that it is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerChoice {
    Compressed,
    DenseFirst,
    DenseBeforeStart,
    DenseGrouped,
    DensePointwise,
    /// The input is a single pixel (a classifier after global pooling): each channel's window
    /// is one value, so the hash could only sort channels by sign; nothing to find.
    DenseOnePixel,
    /// Compressible, but HASTE measured slower than dense on the first batch.
    DenseSlower,
    /// Compressible, but HASTE's per-patch overhead is too large a share of the layer's
    /// dense cost (see [`CompressOptions::cost_aware`]).
    DenseOverhead,
    /// Compressible, but on the first batch it merged too few channels for HASTE to be
    /// predicted faster than dense (see [`CompressOptions::cost_aware`]).
    DenseFewMerged,
}

impl LayerChoice {
    pub fn describe(self) -> &'static str {
        match self {
            LayerChoice::Compressed => "HASTE",
            LayerChoice::DenseFirst => "dense (first conv)",
            LayerChoice::DenseBeforeStart => "dense (before start layer)",
            LayerChoice::DenseGrouped => "dense (grouped/dilated)",
            LayerChoice::DensePointwise => "dense (1x1)",
            LayerChoice::DenseOnePixel => "dense (one-pixel input)",
            LayerChoice::DenseSlower => "dense (HASTE slower)",
            LayerChoice::DenseOverhead => "dense (overhead too large)",
            LayerChoice::DenseFewMerged => "dense (merges too few channels)",
        }
    }
}

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
    /// Seconds per batch of (HASTE, dense) measured by [`Plan::keep_dense_where_faster`].
    pub timing: Option<(f64, f64)>,
    /// HASTE's predicted time over dense ([`predicted_time_ratio`]): for a HASTE layer from
    /// the channels it merged in this run, for a layer the first batch sent back to dense
    /// ([`LayerChoice::DenseFewMerged`]) from that batch; `None` for the others.
    pub predicted_time_ratio: Option<f64>,
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

impl Plan {
    /// Why each convolution would stay dense or be compressed under `options`, in execution
    /// order: (step, choice).
    pub fn conv_choices(&self, options: &CompressOptions) -> Vec<(usize, LayerChoice)> {
        let convs = self.per_conv_macs();
        convs
            .iter()
            .enumerate()
            .map(|(k, &(step, _))| {
                let (op, h, w) = self.conv_at(step).expect("step is a conv");
                let p = &op.params;
                let choice = if k == 0 {
                    LayerChoice::DenseFirst
                } else if p.groups != 1 || p.dilation != (1, 1) {
                    LayerChoice::DenseGrouped
                } else if h * w == 1 {
                    LayerChoice::DenseOnePixel
                } else if k < options.start_layer {
                    LayerChoice::DenseBeforeStart
                } else if options.skip_pointwise && p.kh == 1 && p.kw == 1 {
                    LayerChoice::DensePointwise
                } else if options.cost_aware
                    && overhead_share(p, options.config.tile) > MAX_OVERHEAD_SHARE
                {
                    LayerChoice::DenseOverhead
                } else {
                    LayerChoice::Compressed
                };
                (step, choice)
            })
            .collect()
    }

    /// Number of convolutions.
    pub fn num_convs(&self) -> usize {
        self.per_conv_macs().len()
    }

    /// Puts the HASTE kernel on every convolution `options` selects (the others go back to
    /// dense) and clears the statistics. Returns how many were compressed.
    pub fn compress(&mut self, options: &CompressOptions) -> Result<usize> {
        options.config.validate()?;
        let n = self.num_convs();
        if options.start_layer >= n {
            return Err(Error::InvalidArgument(format!(
                "start layer {} is beyond the last convolution (this model has {n}, indices 0 to {})",
                options.start_layer,
                n.saturating_sub(1)
            )));
        }
        self.reset_conv_kernels();
        self.timing = vec![None; self.steps.len()];
        self.predicted = vec![None; self.steps.len()];
        let mut compressed = 0;
        for (k, (step, choice)) in self.conv_choices(options).into_iter().enumerate() {
            if choice != LayerChoice::Compressed {
                continue;
            }
            let (op, _, _) = self
                .conv_at(step)
                .ok_or_else(|| Error::Internal("conv step".into()))?;
            let config = HasteConfig {
                magnitude_bins: self.magnitude_step(step, options.magnitude),
                ..options.config.clone()
            };
            let hc = HasteConv::new(op.params, &op.weights, op.bias.as_deref(), &config, k)?;
            self.set_conv_kernel(step, ConvKernel::Haste(Box::new(hc)))?;
            compressed += 1;
        }
        self.take_haste_stats();
        Ok(compressed)
    }

    /// The magnitude-bin step of the convolution at `step` under `mode`.
    pub fn magnitude_step(&self, step: usize, mode: MagnitudeMode) -> Option<f32> {
        match mode {
            MagnitudeMode::Off => None,
            MagnitudeMode::Always(s) => Some(s),
            MagnitudeMode::SignedInputs(s) => {
                let input = self.graph.nodes[self.steps[step].node].inputs[0];
                (!self.graph.is_nonnegative(input)).then_some(s)
            }
        }
    }

    /// Per-convolution report from the statistics accumulated since [`Plan::compress`]
    /// (consumes them).
    pub fn conv_reports(&mut self, options: &CompressOptions) -> Vec<ConvLayerReport> {
        let stats = self.take_haste_stats();
        let choices = self.conv_choices(options);
        self.per_conv_macs()
            .into_iter()
            .zip(choices)
            .enumerate()
            .map(|(k, ((step, dense), (_, choice)))| {
                let (op, h, w) = self.conv_at(step).expect("step is a conv");
                let s = stats[step].clone();
                let merged = 1.0 - s.mean_buckets() / op.params.c_in as f64;
                let compressed =
                    matches!(self.conv_kernels[step], Some(ConvKernel::Haste(_))) && s.images > 0;
                let per_image = |v: u64| v.checked_div(s.images).unwrap_or(0);
                let (flops, overhead) = if compressed {
                    (per_image(s.flops.total()), per_image(s.flops.overhead()))
                } else {
                    (dense, 0)
                };
                ConvLayerReport {
                    conv_index: k,
                    step,
                    name: self.step_name(step).to_string(),
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
                    predicted_time_ratio: if compressed {
                        Some(predicted_time_ratio(
                            &op.params,
                            options.config.tile,
                            merged,
                        ))
                    } else {
                        self.predicted[step]
                    },
                }
            })
            .collect()
    }

    /// Times every HASTE layer against the dense kernel on a batch (`input`, `n` images; best
    /// of two runs each, alternating). The timings appear in [`ConvLayerReport::timing`];
    /// statistics are cleared. Returns the HASTE steps.
    pub fn time_haste_layers(&mut self, input: &[f32], n: usize) -> Result<Vec<usize>> {
        let haste: Vec<usize> = (0..self.steps.len())
            .filter(|&s| matches!(self.conv_kernels[s], Some(ConvKernel::Haste(_))))
            .collect();
        let profiling = self.step_seconds.take();
        let mut best = vec![(f64::INFINITY, f64::INFINITY); self.steps.len()];
        let mut result = Ok(());
        for _ in 0..2 {
            result = self.time_steps(input, n).map(|t| {
                best.iter_mut().zip(t).for_each(|(b, t)| b.0 = b.0.min(t));
            });
            let saved: Vec<_> = haste
                .iter()
                .map(|&s| self.conv_kernels[s].replace(ConvKernel::Dense))
                .collect();
            result = result.and_then(|_| self.time_steps(input, n)).map(|t| {
                best.iter_mut().zip(t).for_each(|(b, t)| b.1 = b.1.min(t));
            });
            for (&s, k) in haste.iter().zip(saved) {
                self.conv_kernels[s] = k;
            }
            if result.is_err() {
                break;
            }
        }
        self.step_seconds = profiling;
        self.take_haste_stats();
        result?;
        for &s in &haste {
            self.timing[s] = Some(best[s]);
        }
        Ok(haste)
    }

    /// [`Self::time_haste_layers`], then puts the dense kernel back where HASTE is slower.
    /// Returns how many layers went back to dense.
    pub fn keep_dense_where_faster(&mut self, input: &[f32], n: usize) -> Result<usize> {
        let haste = self.time_haste_layers(input, n)?;
        let mut reverted = 0;
        for s in haste {
            if let Some((h, d)) = self.timing[s] {
                if h > d {
                    self.conv_kernels[s] = Some(ConvKernel::Dense);
                    reverted += 1;
                }
            }
        }
        Ok(reverted)
    }

    /// The layer choices `options` asks to make on a batch (`input`, `n` images) once
    /// [`Plan::compress`] has run: with `cost_aware`,
    /// [`Plan::keep_dense_where_merging_cannot_pay`]; with `keep_dense_when_slower`,
    /// [`Plan::keep_dense_where_faster`]. Statistics are cleared after, so a following run's
    /// are its own.
    pub fn choose_layers_on(
        &mut self,
        input: &[f32],
        n: usize,
        options: &CompressOptions,
    ) -> Result<()> {
        if options.cost_aware {
            self.keep_dense_where_merging_cannot_pay(input, n)?;
        }
        if options.keep_dense_when_slower {
            self.keep_dense_where_faster(input, n)?;
        }
        self.take_haste_stats();
        Ok(())
    }

    /// Runs HASTE on a batch (`input`, `n` images), and puts the dense kernel back on every
    /// HASTE layer whose predicted time from the channels it merged there
    /// ([`predicted_time_ratio`]) is above [`MAX_PREDICTED_TIME_RATIO`]. The predictions
    /// appear in [`ConvLayerReport::predicted_time_ratio`]; statistics are cleared. Returns
    /// how many layers went back to dense. Deterministic: no clock is read.
    pub fn keep_dense_where_merging_cannot_pay(
        &mut self,
        input: &[f32],
        n: usize,
    ) -> Result<usize> {
        self.take_haste_stats();
        self.run(input, n)?;
        let stats = self.take_haste_stats();
        let mut reverted = 0;
        for (step, s) in stats.iter().enumerate() {
            let Some(ConvKernel::Haste(hc)) = &self.conv_kernels[step] else {
                continue;
            };
            if s.patches == 0 {
                continue;
            }
            let p = *hc.params();
            let merged = 1.0 - s.mean_buckets() / p.c_in as f64;
            let predicted = predicted_time_ratio(&p, hc.config().tile, merged);
            self.predicted[step] = Some(predicted);
            if predicted > MAX_PREDICTED_TIME_RATIO {
                self.conv_kernels[step] = Some(ConvKernel::Dense);
                reverted += 1;
            }
        }
        Ok(reverted)
    }

    /// Seconds of each step in one run of the batch.
    fn time_steps(&mut self, input: &[f32], n: usize) -> Result<Vec<f64>> {
        self.set_profiling(true);
        let result = self.run(input, n).map(|_| ());
        let t = self.step_seconds.take().unwrap_or_default();
        result.map(|_| t)
    }

    /// Network FLOPs per image from per-layer reports.
    pub fn flops_summary(&self, layers: &[ConvLayerReport]) -> FlopsSummary {
        let dense_flops = self.dense_macs();
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
}
