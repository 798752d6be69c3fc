//! Compressing a planned network: which convolutions get a compressed kernel (HASTE), the
//! first-batch choices that send layers back to dense, and the per-layer and network reports.
//!
//! It works on a [`Plan`] from outside, through [`Plan::set_conv_kernel`]: the plan runs
//! whatever kernel a step has, and this module keeps the state of a compression (the
//! options, the first batch's timings and predictions) in a [`Compression`].
//!
//! Two stages, both deterministic for a given seed and data:
//! 1. [`Compression::apply`] (data-free): every convolution [`conv_choices`] selects gets the
//!    variant's kernel;
//! 2. [`Compression::choose_layers_on`] (one batch of images, no labels): layers that merge too
//!    few channels there to pay go back to dense (with [`CompressOptions::cost_aware`]).
//!
//! [`compress_on`] does both on a dataset's first batch, as `haste eval` does, and
//! [`crate::eval::evaluate_haste`] evaluates the result.

mod calibrate;
pub mod policy;
mod probe;
mod report;
mod switch;
pub mod variants;

pub use policy::{file_sha256, CalibrationSummary, LayerPolicy, Policy, POLICY_FORMAT};
pub use report::{flops_summary, ConvLayerReport, FlopsSummary};
pub use switch::KernelSwitch;

use crate::datasets::Dataset;
use crate::error::{Error, Result};
use crate::haste::cost::{least_overhead_share, CostLayer, MAX_OVERHEAD_SHARE, TILE_CHOICES};
use crate::haste::HasteConfig;
use crate::kernels::ConvKernel;
use crate::plan::Plan;
use std::sync::Arc;

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
    /// The HASTE knobs; its `magnitude_bins` is set per layer from `magnitude`, and its
    /// `tile` too when `tile_choices` offers several.
    pub config: HasteConfig,
    /// The output tiles each layer chooses between on the first batch of the data, by the
    /// least predicted time ([`crate::haste::cost::predicted_time_ratio`] from the channels
    /// it merged there at each tile). Empty: every layer uses `config.tile`. Default
    /// [`TILE_CHOICES`]; empty in [`CompressOptions::paper`].
    pub tile_choices: Vec<usize>,
    /// Index (in execution order, from 0) of the first convolution to compress. The first
    /// convolution reads the RGB image and always stays dense, so this is at least 1.
    pub start_layer: usize,
    /// Keep 1x1 convolutions dense (their hashing overhead is large against their cost).
    pub skip_pointwise: bool,
    pub magnitude: MagnitudeMode,
    /// Time each HASTE layer against its dense kernel on the first batch and keep the dense
    /// kernel where HASTE is slower (see [`Compression::keep_dense_where_faster`]). Off by default:
    /// the choice then depends on the machine's timing, so accuracy and FLOPs are no longer
    /// reproducible from the seed alone.
    pub keep_dense_when_slower: bool,
    /// Keep dense the layers where HASTE cannot be faster than the dense kernel, in two
    /// steps. Data-free: layers whose fixed per-patch work is too large a share of the dense
    /// cost ([`crate::haste::cost::overhead_share`] above
    /// [`crate::haste::cost::MAX_OVERHEAD_SHARE`]) are never compressed. On the first batch
    /// of the data: layers that merge too few channels there for their predicted time to
    /// beat dense ([`crate::haste::cost::predicted_time_ratio`], see
    /// [`Compression::keep_dense_where_merging_cannot_pay`]) go back to dense. Deterministic: the
    /// same data, seed and knobs give the same choice. On by default, off in
    /// [`CompressOptions::paper`] and with `--all-layers`.
    pub cost_aware: bool,
    /// The compressed-convolution variant, by name ([`variants::VARIANTS`]; `"haste"`).
    pub variant: String,
    /// Measure each compressed layer's output error against its dense convolution on every
    /// image run ([`ConvLayerReport::relative_error`]); costs a dense convolution per layer.
    pub measure_error: bool,
}

impl Default for CompressOptions {
    /// haste's defaults: start at the third convolution, keep 1x1 convolutions and layers
    /// too small to pay for HASTE's overhead dense, magnitude-aware hashing (step 0.5) where
    /// inputs can be negative.
    fn default() -> Self {
        CompressOptions {
            config: HasteConfig::default(),
            tile_choices: TILE_CHOICES.to_vec(),
            start_layer: 2,
            skip_pointwise: true,
            magnitude: MagnitudeMode::SignedInputs(0.5),
            keep_dense_when_slower: false,
            cost_aware: true,
            variant: variants::DEFAULT.into(),
            measure_error: false,
        }
    }
}

impl CompressOptions {
    /// The tiles a layer may run at: [`Self::tile_choices`], or `config.tile` alone.
    pub fn tiles(&self) -> Vec<usize> {
        if self.tile_choices.is_empty() {
            vec![self.config.tile]
        } else {
            self.tile_choices.clone()
        }
    }

    /// Whether the first batch chooses each layer's tile.
    pub fn chooses_tiles(&self) -> bool {
        self.tiles().len() > 1
    }

    /// Whether these options make choices on the first batch of the data
    /// ([`Compression::choose_layers_on`]).
    pub fn chooses_on_first_batch(&self) -> bool {
        self.cost_aware || self.keep_dense_when_slower || self.chooses_tiles()
    }

    /// The paper's method as published: every convolution but the first, angular hash only.
    pub fn paper(config: HasteConfig) -> Self {
        CompressOptions {
            config: HasteConfig {
                magnitude_bins: None,
                drop_zero_channels: false,
                ..config
            },
            tile_choices: Vec::new(),
            start_layer: 1,
            skip_pointwise: false,
            magnitude: MagnitudeMode::Off,
            keep_dense_when_slower: false,
            cost_aware: false,
            variant: variants::DEFAULT.into(),
            measure_error: false,
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
    /// Dense in the policy applied ([`Compression::apply_policy`]).
    DensePolicy,
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
            LayerChoice::DensePolicy => "dense (policy)",
        }
    }
}

/// Why each convolution of `plan` would stay dense or be compressed under `options`
/// (data-free), in execution order: (step, choice).
pub fn conv_choices(plan: &Plan, options: &CompressOptions) -> Vec<(usize, LayerChoice)> {
    let convs = plan.per_conv_macs();
    convs
        .iter()
        .enumerate()
        .map(|(k, &(step, _))| {
            let (op, h, w) = plan.conv_at(step).expect("step is a conv");
            let p = &op.params;
            let choice = if k == 0 {
                LayerChoice::DenseFirst
            } else if p.groups != 1 || p.dilation != (1, 1) {
                LayerChoice::DenseGrouped
            } else if h * w == 1 {
                LayerChoice::DenseOnePixel
            } else if k < options.start_layer {
                LayerChoice::DenseBeforeStart
            } else if options.skip_pointwise && p.is_1x1() {
                LayerChoice::DensePointwise
            } else if options.cost_aware
                && least_overhead_share(&CostLayer::of(op), (h, w), &options.tiles())
                    > MAX_OVERHEAD_SHARE
            {
                LayerChoice::DenseOverhead
            } else {
                LayerChoice::Compressed
            };
            (step, choice)
        })
        .collect()
}

/// The magnitude-bin step of the convolution at `step` of `plan` under `mode`.
pub fn magnitude_step(plan: &Plan, step: usize, mode: MagnitudeMode) -> Option<f32> {
    match mode {
        MagnitudeMode::Off => None,
        MagnitudeMode::Always(s) => Some(s),
        MagnitudeMode::SignedInputs(s) => {
            let graph = plan.graph();
            let node = &graph.nodes[plan.step_node(step)];
            // A folded channel scale may change the input's signs.
            let scaled = matches!(&node.op, crate::ops::Op::Conv(c) if c.input_scale);
            (scaled || !graph.is_nonnegative(node.inputs[0])).then_some(s)
        }
    }
}

/// A compression applied to a plan: its options and what the first batch measured.
#[derive(Debug, Clone)]
pub struct Compression {
    options: CompressOptions,
    /// Per step: (compressed, dense) seconds from [`Compression::time_layers`].
    timing: Vec<Option<(f64, f64)>>,
    /// Per step: the compressed kernel's predicted time over dense from a calibration batch.
    predicted: Vec<Option<f64>>,
    /// Made by [`Compression::apply_policy`]: the dense layers are the policy's choice.
    from_policy: bool,
}

impl Compression {
    /// Puts the variant's kernel on every convolution [`conv_choices`] selects (data-free; the
    /// others go back to dense). [`Self::choose_layers_on`] makes the data-dependent choices.
    pub fn apply(plan: &mut Plan, options: &CompressOptions) -> Result<Compression> {
        options.config.validate()?;
        crate::haste::cost_file::check_environment()?;
        let tiles = options.tiles();
        if let Some(&bad) = tiles.iter().find(|&&t| t == 0) {
            return Err(Error::InvalidArgument(format!(
                "HASTE config: tile must be at least 1, got {bad}"
            )));
        }
        let n = plan.num_convs();
        if options.start_layer >= n {
            return Err(Error::InvalidArgument(format!(
                "start layer {} is beyond the last convolution (this model has {n}, indices 0 to {})",
                options.start_layer,
                n.saturating_sub(1)
            )));
        }
        plan.reset_conv_kernels();
        for (k, (step, choice)) in conv_choices(plan, options).into_iter().enumerate() {
            if choice == LayerChoice::Compressed {
                let kernel = layer_kernel(plan, step, k, options, tiles[0])?;
                plan.set_conv_kernel(step, kernel)?;
            }
        }
        Ok(Compression {
            options: options.clone(),
            timing: vec![None; plan.num_steps()],
            predicted: vec![None; plan.num_steps()],
            from_policy: false,
        })
    }

    /// The compression of a policy just put on `plan`, with `options` for its reports.
    fn with_policy(plan: &Plan, options: CompressOptions) -> Compression {
        Compression {
            options,
            timing: vec![None; plan.num_steps()],
            predicted: vec![None; plan.num_steps()],
            from_policy: true,
        }
    }

    pub fn options(&self) -> &CompressOptions {
        &self.options
    }

    /// Number of convolutions on a compressed kernel.
    pub fn compressed(&self, plan: &Plan) -> usize {
        plan.per_conv_macs()
            .iter()
            .filter(|(s, _)| !plan.runs_dense(*s))
            .count()
    }
}

/// The compressed kernel of the `k`-th convolution (at `step`) under `options`, at `tile`.
fn layer_kernel(
    plan: &Plan,
    step: usize,
    k: usize,
    options: &CompressOptions,
    tile: usize,
) -> Result<Arc<dyn ConvKernel>> {
    let build = variants::find(&options.variant)?;
    let (op, _, _) = plan
        .conv_at(step)
        .ok_or_else(|| Error::Internal("conv step".into()))?;
    let config = HasteConfig {
        magnitude_bins: magnitude_step(plan, step, options.magnitude),
        tile,
        ..options.config.clone()
    };
    if options.measure_error {
        probe::ErrorProbe::build(op, &config, k, build)
    } else {
        build(op, &config, k)
    }
}

/// [`Compression::apply`], then the layer choices on the first batch of `data` (the first
/// `batch` images, or `limit` if fewer; no labels read), exactly as `haste eval` makes them.
pub fn compress_on(
    plan: &mut Plan,
    options: &CompressOptions,
    data: &dyn Dataset,
    (batch, limit, skip_bad): (usize, Option<usize>, bool),
) -> Result<Compression> {
    let mut c = Compression::apply(plan, options)?;
    if options.chooses_on_first_batch() {
        c.choose_layers_on_data(plan, data, (batch, limit, skip_bad))?;
    }
    Ok(c)
}
