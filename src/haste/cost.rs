//! Step 6: FLOP accounting (1 multiply-accumulate = 1 FLOP).
//!
//! Per patch with `B` buckets, `n` valid outputs, a window of `d` present pixels:
//! - `conv`: `c_out * B * K^2 * n` (the reduced convolution),
//! - `centering`: `c_in * d`,
//! - `projection`: `c_in * nnz`, `nnz` the hyperplane entries at present pixels (Gaussian:
//!   `L * d`); with magnitude bins, plus `c_in * d` for the norms,
//! - `input_merge`: `c_in * d`,
//! - `filter_merge`: `c_out * K^2 * (c_in - B)`.
//!
//! The dense reference is `c_out * c_in * K^2 * oh * ow` per image ([`dense_macs`]). Since
//! `B <= c_in` and the patches tile the output exactly, `conv` never exceeds the dense count,
//! and the overhead only ever adds: savings can never exceed what the conv part gives.
//!
//! Time is another matter: a multiply-add of the reduced convolution and one of the
//! hashing do not cost the same. [`CostModel`] predicts HASTE's time against the dense
//! kernel's per layer, with constants per instruction-set tier, and decides where HASTE runs
//! ([`overhead_share`], [`predicted_time_ratio`]).

pub use super::cost_model::CostModel;
use super::stats::LayerStats;
use crate::kernels::isa::Isa;
use crate::ops::{Activation, Conv2dParams, ConvOp};

/// FLOPs of HASTE convolutions, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlopCount {
    pub conv: u64,
    pub centering: u64,
    pub projection: u64,
    pub input_merge: u64,
    pub filter_merge: u64,
}

impl FlopCount {
    /// Everything HASTE adds on top of the reduced convolution.
    pub fn overhead(&self) -> u64 {
        self.centering + self.projection + self.input_merge + self.filter_merge
    }

    /// Reduced convolution plus overhead.
    pub fn total(&self) -> u64 {
        self.conv + self.overhead()
    }

    pub fn add(&mut self, o: &FlopCount) {
        self.conv += o.conv;
        self.centering += o.centering;
        self.projection += o.projection;
        self.input_merge += o.input_merge;
        self.filter_merge += o.filter_merge;
    }
}

/// MACs of the dense convolution of one `h x w` image: `c_out * c_in/groups * kh * kw * oh * ow`.
pub fn dense_macs(p: &Conv2dParams, h: usize, w: usize) -> u64 {
    p.dense_macs(h, w)
}

/// The cost of one patch (see the module doc for the formulas).
#[allow(clippy::too_many_arguments)]
pub fn patch_flops(
    p: &Conv2dParams,
    buckets: usize,
    outputs: usize,
    present: usize,
    entries_used: u64,
    centering: bool,
    magnitude: bool,
) -> FlopCount {
    let taps = (p.kh * p.kw) as u64;
    let (c_in, c_out, d) = (p.c_in as u64, p.c_out as u64, present as u64);
    FlopCount {
        conv: c_out * buckets as u64 * taps * outputs as u64,
        centering: if centering { c_in * d } else { 0 },
        projection: c_in * entries_used + if magnitude { c_in * d } else { 0 },
        input_merge: c_in * d,
        filter_merge: c_out * taps * (c_in - buckets as u64),
    }
}

/// Filter bank size (MB) up to which the filter merge reads from cache (about half the 1-2
/// MB L2 of current cores; see [`CostModel::merge_per_mb`]).
pub const MERGE_BANK_CACHED_MB: f64 = 0.5;

/// The data-free gate: a layer is considered for HASTE only when the share of its channels
/// it must merge to break even ([`overhead_share`]) is at most this. Past it, the layer
/// would have to merge away more than half its channels, which no operating point within
/// one accuracy point does on the shared models.
pub const MAX_OVERHEAD_SHARE: f64 = 0.5;

/// A layer keeps HASTE after calibration only when its predicted time
/// ([`predicted_time_ratio`]) is at most this share of the dense time: a 10 % margin for the
/// model's error (per-layer timings on the machine it was fitted on spread by about that
/// much from run to run).
pub const MAX_PREDICTED_TIME_RATIO: f64 = 0.9;

/// The patches of a layer at one tile, on average: output pixels and window pixels (the
/// input pixels the patch's outputs read, `(ph - 1) * stride + K` per side) per patch. Edge
/// patches are smaller than `tile x tile`, and a tile larger than the output is one patch
/// of the whole output, so a cost per patch is shared by fewer outputs than `tile^2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Patches {
    pub outputs: f64,
    pub window: f64,
}

impl Patches {
    /// Full `tile x tile` patches (an output much larger than the tile; what the data-free
    /// gate assumes when the image size is not known).
    pub fn full(p: &Conv2dParams, tile: usize) -> Patches {
        let side = |s: usize, k: usize| ((tile.max(1) - 1) * s + k) as f64;
        Patches {
            outputs: (tile * tile) as f64,
            window: side(p.stride.0, p.kh) * side(p.stride.1, p.kw),
        }
    }

    /// The patches of an `h x w` input at `tile`.
    ///
    /// ```
    /// use haste::haste::cost::Patches;
    /// use haste::ops::Conv2dParams;
    /// let p = Conv2dParams::new(8, 8, 3, 3).with_pads([1; 4]);
    /// assert_eq!(Patches::of_image(&p, (16, 16), 8), Patches::full(&p, 8));
    /// // 14 = 8 + 6 per side: four patches of 49 outputs on average.
    /// assert_eq!(Patches::of_image(&p, (14, 14), 8).outputs, 49.0);
    /// // A tile larger than the output: one patch of it all.
    /// assert_eq!(Patches::of_image(&p, (7, 7), 16).outputs, 49.0);
    /// assert_eq!(Patches::of_image(&p, (7, 7), 16).window, 81.0);
    /// ```
    pub fn of_image(p: &Conv2dParams, (h, w): (usize, usize), tile: usize) -> Patches {
        let (oh, ow) = p.out_hw(h, w);
        let tile = tile.max(1);
        // Sum over the patch sizes along one side of the window sides, and the patch count.
        let side = |out: usize, s: usize, k: usize| {
            let sizes = (0..out).step_by(tile).map(|o| tile.min(out - o));
            let windows: usize = sizes.clone().map(|n| (n - 1) * s + k).sum();
            (windows as f64, out.div_ceil(tile).max(1) as f64)
        };
        let ((wy, ny), (wx, nx)) = (side(oh, p.stride.0, p.kh), side(ow, p.stride.1, p.kw));
        Patches {
            outputs: (oh * ow) as f64 / (ny * nx),
            window: wy * wx / (ny * nx),
        }
    }
}

/// A convolution as the time model sees it: its shape, and the work around it that merging
/// does not shrink (its activation, a folded input scale).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostLayer {
    pub params: Conv2dParams,
    /// Its outputs go through an activation that takes an exponential (SiLU, sigmoid, GELU).
    pub exp_activation: bool,
    /// Its input is scaled per channel first (`ConvOp::input_scale`).
    pub scaled_input: bool,
}

impl CostLayer {
    /// The layer of `op`.
    pub fn of(op: &ConvOp) -> CostLayer {
        let exp = matches!(
            op.output_activation(),
            Activation::Silu | Activation::Sigmoid | Activation::Gelu
        );
        CostLayer {
            params: op.params,
            exp_activation: exp,
            scaled_input: op.input_scale,
        }
    }

    /// A layer of shape `p` with neither an exponential activation nor an input scale.
    pub fn plain(p: &Conv2dParams) -> CostLayer {
        CostLayer {
            params: *p,
            exp_activation: false,
            scaled_input: false,
        }
    }
}

/// How a layer's patches merged (on a batch): the share of input channels merged away, and
/// the buckets of two or more channels per patch, which each set up their own merges.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Merging {
    pub merged: f64,
    pub multi: f64,
}

impl Merging {
    /// Nothing merged.
    pub const NONE: Merging = Merging {
        merged: 0.0,
        multi: 0.0,
    };

    /// What the patches `s` counted merged, on average.
    pub fn of_stats(s: &LayerStats) -> Merging {
        if s.patches == 0 || s.c_in == 0 {
            return Merging::NONE;
        }
        Merging {
            merged: 1.0 - s.mean_buckets() / s.c_in as f64,
            multi: s.mean_multi_buckets(),
        }
    }
}

/// The share of its input channels the convolution `l`, run in the patches `at`, must merge
/// away for HASTE to break even with the dense kernel on the running tier: what HASTE costs
/// before any channel is merged (the fixed and per-channel work of its patches, the reduced
/// convolution's loss, its finish: [`CostModel`]) over what each merged channel saves.
/// Data-free; the merges, which only merged channels cost, are left out. It falls with the
/// output channels: the dense work grows with them, the hashing does not.
///
/// ```
/// use haste::haste::cost::{overhead_share, CostLayer, Patches, MAX_OVERHEAD_SHARE};
/// use haste::ops::Conv2dParams;
/// let small = CostLayer::plain(&Conv2dParams::new(16, 16, 3, 3).with_pads([1; 4]));
/// let wide = CostLayer::plain(&Conv2dParams::new(256, 512, 3, 3).with_pads([1; 4]));
/// assert!(overhead_share(&small, Patches::full(&small.params, 4)) > MAX_OVERHEAD_SHARE);
/// assert!(overhead_share(&wide, Patches::full(&wide.params, 8)) < MAX_OVERHEAD_SHARE);
/// ```
pub fn overhead_share(l: &CostLayer, at: Patches) -> f64 {
    let c = CostModel::current(&l.params);
    (cost_terms(l, at, Merging::NONE).predicted_with(&c) - 1.0) / c.kept
}

/// The output tiles haste chooses between, layer by layer, when the tile is left to it
/// (`--tile auto`, the default). At 4 (the paper's) channels only have to agree over a
/// 6 x 6 window to merge; at 8 a 10 x 10 window's fixed work (hashing, grouping, the input
/// merge) is shared by 4x the outputs for 2.8x the pixels, and so is each patch's filter
/// merge, but channels must agree over a larger region, so fewer of them merge. Which wins
/// depends on the layer and its data: the first batch's merging decides, by the least
/// [`predicted_time_ratio`].
pub const TILE_CHOICES: [usize; 3] = [4, 8, 16];

/// The least [`overhead_share`] of `l` on an `h x w` input over `tiles` (the gate, when the
/// tile is chosen per layer); `f64::INFINITY` for no tiles.
pub fn least_overhead_share(l: &CostLayer, hw: (usize, usize), tiles: &[usize]) -> f64 {
    tiles
        .iter()
        .map(|&t| overhead_share(l, Patches::of_image(&l.params, hw, t)))
        .fold(f64::INFINITY, f64::min)
}

/// HASTE's predicted time on the convolution `l`, run in the patches `at`, over the dense
/// kernel's, when its patches merge as `m` does (measured on a batch,
/// [`Merging::of_stats`]), on the running tier: the reduced convolution, its loss, the
/// fixed per-patch work, both merges and the finish.
///
/// ```
/// use haste::haste::cost::{predicted_time_ratio, CostLayer, Merging, Patches};
/// use haste::ops::Conv2dParams;
/// let l = CostLayer::plain(&Conv2dParams::new(128, 128, 3, 3).with_pads([1; 4]));
/// let at = Patches::full(&l.params, 8);
/// // Half the channels merged away, in 20 buckets of 2 to 5 a patch: faster.
/// let half = Merging { merged: 0.5, multi: 20.0 };
/// assert!(predicted_time_ratio(&l, at, half) < 0.9);
/// // 2 %, in pairs: slower than dense.
/// let few = Merging { merged: 0.02, multi: 2.6 };
/// assert!(predicted_time_ratio(&l, at, few) > 1.0);
/// ```
pub fn predicted_time_ratio(l: &CostLayer, at: Patches, m: Merging) -> f64 {
    cost_terms(l, at, m).predicted()
}

/// The terms of [`predicted_time_ratio`] before their constants, each a count per dense
/// multiply-add of the layer's patches: the prediction is the sum of each term times its
/// constant in the layer's [`CostModel`] (`kept * c.kept`, `fixed * c.fixed`, ...,
/// `scaled_input * c.scaled_input`), linear in the constants, so measured per-layer times
/// (`haste bench --layers --json` prints these terms beside them) refit it by least squares
/// (`bench/fit_cost_model.py`). The fields pair with [`CostModel`]'s one by one.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CostTerms {
    /// The share of input channels the reduced convolution keeps.
    pub kept: f64,
    /// Input channel-pixels of the windows.
    pub fixed: f64,
    /// Merged input channel-pixels of the windows.
    pub input_merge: f64,
    /// Input channels, once per patch.
    pub per_input_channel: f64,
    /// Output channels, once per patch.
    pub per_output_channel: f64,
    /// Filter elements the filter merge sums.
    pub merge: f64,
    /// `merge` times the filter bank's megabytes beyond [`MERGE_BANK_CACHED_MB`].
    pub merge_beyond_cache: f64,
    /// Buckets of two or more channels, once per patch.
    pub multi: f64,
    /// Output values finished.
    pub finish: f64,
    /// Output values finished by an activation with an exponential.
    pub finish_exp: f64,
    /// Input values scaled first.
    pub scaled_input: f64,
    /// A 1x1 kernel (its own [`CostModel`]).
    pub pointwise: bool,
}

impl CostTerms {
    /// HASTE's time over dense with the running tier's constants.
    pub fn predicted(&self) -> f64 {
        self.predicted_with(&CostModel::of(Isa::current(), self.pointwise))
    }

    /// HASTE's time over dense with the constants `c`.
    pub fn predicted_with(&self, c: &CostModel) -> f64 {
        let terms = [
            self.kept,
            self.fixed,
            self.input_merge,
            self.per_input_channel,
            self.per_output_channel,
            self.merge,
            self.merge_beyond_cache,
            self.multi,
            self.finish,
            self.finish_exp,
            self.scaled_input,
        ];
        terms.iter().zip(c.constants()).map(|(t, c)| t * c).sum()
    }
}

/// The [`CostTerms`] of `l` run in the patches `at`, merging as `m`.
pub fn cost_terms(l: &CostLayer, at: Patches, m: Merging) -> CostTerms {
    let p = &l.params;
    let merged = m.merged.clamp(0.0, 1.0);
    let taps = (p.kh * p.kw) as f64;
    let (c_in, c_out) = (p.c_in as f64, p.c_out as f64);
    let dense = (at.outputs * c_in * c_out * taps).max(1.0);
    let bank = c_in * c_out * taps * std::mem::size_of::<f32>() as f64;
    let beyond_cache = (bank / (1 << 20) as f64 - MERGE_BANK_CACHED_MB).max(0.0);
    let merge = merged * c_in * c_out * taps / dense;
    let finish = at.outputs * c_out / dense;
    // The input values a patch's outputs read, each once (not the overlapping windows).
    let inputs = at.outputs * (p.stride.0 * p.stride.1) as f64 * c_in;
    CostTerms {
        kept: 1.0 - merged,
        fixed: c_in * at.window / dense,
        input_merge: merged * c_in * at.window / dense,
        per_input_channel: c_in / dense,
        per_output_channel: c_out / dense,
        merge,
        merge_beyond_cache: merge * beyond_cache,
        multi: m.multi.max(0.0) / dense,
        finish,
        finish_exp: if l.exp_activation { finish } else { 0.0 },
        scaled_input: if l.scaled_input { inputs / dense } else { 0.0 },
        pointwise: p.kh * p.kw == 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals() {
        let mut a = FlopCount {
            conv: 10,
            centering: 1,
            projection: 2,
            input_merge: 3,
            filter_merge: 4,
        };
        assert_eq!(a.overhead(), 10);
        assert_eq!(a.total(), 20);
        a.add(&a.clone());
        assert_eq!(a.total(), 40);
        let p = Conv2dParams::new(3, 5, 3, 3).with_pads([1; 4]);
        assert_eq!(dense_macs(&p, 4, 6), 5 * 3 * 9 * 24);
    }

    /// The prediction is the kept share plus the data-free overhead (the finish included)
    /// plus what the merging costs: both merges, which grow with the merged share (the filter
    /// merge, past the cache, with the bank too), and the buckets of several channels.
    #[test]
    fn the_prediction_adds_up() {
        for (c_in, c_out, tile, exp) in [
            (64, 64, 4, false),
            (512, 512, 8, true),
            (16, 128, 16, false),
        ] {
            let p = Conv2dParams::new(c_in, c_out, 3, 3).with_pads([1; 4]);
            let l = CostLayer {
                exp_activation: exp,
                ..CostLayer::plain(&p)
            };
            let at = Patches::of_image(&p, (28, 28), tile);
            let m = Merging {
                merged: 0.4,
                multi: 0.1 * c_in as f64,
            };
            let t = cost_terms(&l, at, m);
            let c = CostModel::current(&p);
            let merging = t.input_merge * c.input_merge
                + t.merge * c.merge
                + t.merge_beyond_cache * c.merge_per_mb
                + t.multi * c.multi;
            assert!((t.input_merge - m.merged * t.fixed).abs() < 1e-15);
            // overhead_share is the work at no merging, less the dense time, per kept share.
            let work = overhead_share(&l, at) * c.kept + 1.0 - c.kept;
            let sum = c.kept * (1.0 - m.merged) + work + merging;
            assert!((predicted_time_ratio(&l, at, m) - sum).abs() < 1e-12);
            // Per filter element summed, against the dense multiply-adds of the patch.
            let per_patch = at.outputs * (c_in * c_out * 9) as f64;
            let elements = m.merged * (c_in * c_out * 9) as f64;
            assert!((t.merge - elements / per_patch).abs() < 1e-12);
            assert_eq!(t.merge_beyond_cache > 0.0, c_in == 512);
            // Per bucket of several channels and per output value, against the same.
            assert!((t.multi - m.multi / per_patch).abs() < 1e-15);
            assert!((t.finish - 1.0 / (9 * c_in) as f64).abs() < 1e-15);
            assert_eq!(t.finish_exp, if exp { t.finish } else { 0.0 });
            assert_eq!(t.scaled_input, 0.0);
        }
    }

    /// A layer's activation and folded scale come from its op; the merging from its
    /// statistics: the share merged away and the buckets of two or more channels per patch.
    #[test]
    fn layers_and_merging_from_the_run() {
        let p = Conv2dParams::new(8, 4, 1, 1);
        let mut op = ConvOp {
            params: p,
            weights: vec![0.0; 32],
            bias: None,
            activation: Activation::Silu,
            residual: None,
            input_scale: true,
        };
        let l = CostLayer::of(&op);
        assert!(l.exp_activation && l.scaled_input);
        let at = Patches::full(&p, 4);
        let t = cost_terms(&l, at, Merging::NONE);
        // Each input value once, per dense multiply-add: 1 / c_out for a 1x1 layer.
        assert!((t.scaled_input - 0.25).abs() < 1e-15 && t.finish_exp == t.finish);
        // A residual's activation is the one the outputs end with.
        (op.activation, op.residual) = (Activation::None, Some(Activation::Relu));
        assert!(!CostLayer::of(&op).exp_activation);
        let mut s = LayerStats {
            c_in: 8,
            ..Default::default()
        };
        assert_eq!(Merging::of_stats(&s), Merging::NONE);
        s.record_patch([3, 1, 1, 1, 2].into_iter());
        s.record_patch([1; 8].into_iter());
        let m = Merging::of_stats(&s);
        assert_eq!((m.merged, m.multi), (1.0 - 6.5 / 8.0, 1.0));
    }

    /// Every tier's and kind's constants are at least 0 (a patch's work more), and the
    /// reduced convolution runs at about the dense kernel's rate per channel or slower (up to
    /// about half of it: the plain tiers' short patch calls, 1.98 on a Zen 4).
    #[test]
    fn every_tier_has_positive_constants() {
        for isa in Isa::ALL {
            for pointwise in [false, true] {
                let c = CostModel::built_in(isa, pointwise);
                assert!((0.95..2.5).contains(&c.kept), "{isa:?}: {c:?}");
                let work = [
                    c.fixed,
                    c.input_merge,
                    c.per_input_channel,
                    c.per_output_channel,
                ];
                assert!(work.iter().all(|&v| v >= 0.0), "{isa:?}: {c:?}");
                assert!(work.iter().sum::<f64>() > 0.0, "{isa:?}: {c:?}");
                assert!(c.merge >= 0.0 && c.merge_per_mb >= 0.0, "{isa:?}: {c:?}");
            }
        }
    }
}
