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

use crate::kernels::isa::Isa;
use crate::ops::Conv2dParams;

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

/// The constants of HASTE's time model for one kind of convolution on one instruction-set
/// tier, in multiply-adds of the dense kernel (a constant says how many of the dense
/// convolution's multiply-adds a unit of HASTE's work takes as long as; the dense rate
/// itself cancels out).
///
/// HASTE's time over the dense kernel's on a layer (see [`CostTerms`]) is a sum of terms,
/// each linear in one constant:
/// - the reduced convolution, per channel kept: 1 if it ran at the dense kernel's rate. It
///   does for spatial kernels; a 1x1 convolution's dense kernel is a matrix product HASTE's
///   per-patch calls do not reach;
/// - the fixed work of a patch per input channel and window pixel (copy and scan of the
///   window, projection, codes);
/// - the input merge, per merged input channel and window pixel;
/// - the per-channel work of a patch (norms, grouping, bucket bookkeeping), per input
///   channel: what makes small tiles dear on 1x1 layers, whose windows are small;
/// - what the reduced convolution loses against the dense kernel per patch and output
///   channel: a patch's few outputs make short register blocks and re-read its filter rows
///   once per block (what made narrow-input, wide-output layers such as Tiny Darknet's
///   16 -> 128 cost more than the fixed work alone said);
/// - the filter merge, per filter element summed, while the layer's filter bank fits in
///   about half the L2 cache ([`MERGE_BANK_CACHED_MB`]), and its growth per megabyte of
///   bank beyond that (the rows then come from further out).
///
/// The vector width sets these ratios: the dense kernel's multiply-adds widen with it, the
/// projection and the scans too, the grouping and the bookkeeping do not. So each tier and
/// kind has its own set ([`CostModel::of`]), fitted by least squares
/// (`bench/fit_cost_model.py`) to per-layer times of `haste bench --layers --all-layers
/// --include-1x1` on every real shared model and the random-weight ResNet-18 (the 1x1
/// kinds also on the random-weight MobileNetV2 and EfficientNet-B0, which merge 85-97 % of
/// their channels), tiles 4, 8 and 16, L = 10 and 16, one thread, on an AMD Zen 4
/// (`HASTE_ISA` for the narrower tiers; BENCHMARKS.md). The AVX-512 spatial constants were
/// refitted again on 2026-12-07 (twenty-sixth session), after tile-4 patches took
/// 64-channel register blocks: the loss per patch and output channel fell from 580 to 446,
/// and 98 % of the 546 AVX-512 3x3 timings came within 10 % (95 % with the constants
/// before). The 1x1 ones are those of 2026-12-06 (refitted, they predicted no better).
/// Constants
/// refitted on another machine replace them through `HASTE_COST_MODEL`
/// ([`super::cost_file`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostModel {
    /// The reduced convolution per channel kept.
    pub kept: f64,
    /// Fixed work per input channel and window pixel.
    pub fixed: f64,
    /// The input merge per merged input channel and window pixel.
    pub input_merge: f64,
    /// Per-channel work per patch and input channel.
    pub per_input_channel: f64,
    /// The reduced convolution's loss per patch and output channel.
    pub per_output_channel: f64,
    /// The filter merge per filter element summed (bank in cache).
    pub merge: f64,
    /// The filter merge's growth per element and megabyte of bank beyond cache.
    pub merge_per_mb: f64,
}

impl CostModel {
    /// Spatial (K x K, K > 1) convolutions on AVX-512 (16 lanes).
    pub const AVX512: CostModel = CostModel {
        kept: 1.03,
        fixed: 19.0,
        input_merge: 34.8,
        per_input_channel: 1310.0,
        per_output_channel: 446.0,
        merge: 1.29,
        merge_per_mb: 0.488,
    };
    /// 1x1 convolutions on AVX-512.
    pub const AVX512_POINTWISE: CostModel = CostModel {
        kept: 1.23,
        fixed: 21.6,
        input_merge: 1.43,
        per_input_channel: 547.0,
        per_output_channel: 294.0,
        merge: 4.21,
        merge_per_mb: 0.0,
    };
    /// Spatial convolutions on AVX2 + FMA (8 lanes). NEON (4 lanes with fused multiply-adds
    /// and hand-written kernels like these) uses it too: it could not be timed on real
    /// hardware here.
    pub const AVX2: CostModel = CostModel {
        kept: 1.22,
        fixed: 17.8,
        input_merge: 22.2,
        per_input_channel: 1830.0,
        per_output_channel: 0.0,
        merge: 2.18,
        merge_per_mb: 0.195,
    };
    /// 1x1 convolutions on AVX2 (and NEON).
    pub const AVX2_POINTWISE: CostModel = CostModel {
        kept: 1.4,
        fixed: 22.3,
        input_merge: 11.4,
        per_input_channel: 814.0,
        per_output_channel: 74.8,
        merge: 4.65,
        merge_per_mb: 0.0,
    };
    /// Spatial convolutions on the plain-Rust tiers (SSE2 on x86-64; portable), loops the
    /// compiler vectorizes: the patch kernel's short calls run about 2x slower per channel
    /// than the dense kernel, and the fixed work dwarfs the rest (the least squares set most
    /// other terms to 0, where they no longer separate from it).
    pub const PLAIN: CostModel = CostModel {
        kept: 1.98,
        fixed: 88.6,
        input_merge: 0.0,
        per_input_channel: 21.4,
        per_output_channel: 0.0,
        merge: 0.0,
        merge_per_mb: 0.695,
    };
    /// 1x1 convolutions on the plain-Rust tiers.
    pub const PLAIN_POINTWISE: CostModel = CostModel {
        kept: 1.75,
        fixed: 0.0,
        input_merge: 9.07,
        per_input_channel: 0.0,
        per_output_channel: 0.0,
        merge: 5.52,
        merge_per_mb: 0.0,
    };

    /// The constants of the tier `isa` for a convolution with a 1x1 kernel (`pointwise`)
    /// or a larger one: the file `HASTE_COST_MODEL` names where it has them
    /// ([`super::cost_file`]), else [`CostModel::built_in`].
    pub fn of(isa: Isa, pointwise: bool) -> CostModel {
        super::cost_file::loaded()
            .and_then(|f| f.model(isa, pointwise))
            .unwrap_or_else(|| CostModel::built_in(isa, pointwise))
    }

    /// haste's own constants for the tier `isa` and the kind.
    pub fn built_in(isa: Isa, pointwise: bool) -> CostModel {
        match (isa, pointwise) {
            (Isa::Avx512, false) => CostModel::AVX512,
            (Isa::Avx512, true) => CostModel::AVX512_POINTWISE,
            (Isa::Avx2 | Isa::Neon, false) => CostModel::AVX2,
            (Isa::Avx2 | Isa::Neon, true) => CostModel::AVX2_POINTWISE,
            (Isa::Sse2 | Isa::Portable, false) => CostModel::PLAIN,
            (Isa::Sse2 | Isa::Portable, true) => CostModel::PLAIN_POINTWISE,
        }
    }

    /// The seven constants, in [`CostTerms`]' order.
    pub fn constants(&self) -> [f64; 7] {
        [
            self.kept,
            self.fixed,
            self.input_merge,
            self.per_input_channel,
            self.per_output_channel,
            self.merge,
            self.merge_per_mb,
        ]
    }

    /// The constants for `p` on the tier the kernels run ([`Isa::current`]).
    pub fn current(p: &Conv2dParams) -> CostModel {
        CostModel::of(Isa::current(), p.kh * p.kw == 1)
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

/// The share of its input channels the convolution `p`, run in the patches `at`, must merge
/// away for HASTE to break even with the dense kernel on the running tier: what HASTE costs
/// before any channel is merged (the fixed and per-channel work of its patches, the reduced
/// convolution's loss: [`CostModel`]) over what each merged channel saves. Data-free; the
/// filter merge, which only merged channels cost, is left out. It falls with the output
/// channels: the dense work grows with them, the hashing does not.
///
/// ```
/// use haste::haste::cost::{overhead_share, Patches, MAX_OVERHEAD_SHARE};
/// use haste::ops::Conv2dParams;
/// let small = Conv2dParams::new(16, 16, 3, 3).with_pads([1; 4]);
/// let wide = Conv2dParams::new(256, 512, 3, 3).with_pads([1; 4]);
/// assert!(overhead_share(&small, Patches::full(&small, 4)) > MAX_OVERHEAD_SHARE);
/// assert!(overhead_share(&wide, Patches::full(&wide, 8)) < MAX_OVERHEAD_SHARE);
/// ```
pub fn overhead_share(p: &Conv2dParams, at: Patches) -> f64 {
    let c = CostModel::current(p);
    (cost_terms(p, at, 0.0).predicted_with(&c) - 1.0) / c.kept
}

/// The output tiles haste chooses between, layer by layer, when the tile is left to it
/// (`--tile auto`, the default). At 4 (the paper's) channels only have to agree over a
/// 6 x 6 window to merge; at 8 a 10 x 10 window's fixed work (hashing, grouping, the input
/// merge) is shared by 4x the outputs for 2.8x the pixels, and so is each patch's filter
/// merge, but channels must agree over a larger region, so fewer of them merge. Which wins
/// depends on the layer and its data: the first batch's merging decides, by the least
/// [`predicted_time_ratio`].
pub const TILE_CHOICES: [usize; 3] = [4, 8, 16];

/// The least [`overhead_share`] of `p` on an `h x w` input over `tiles` (the gate, when the
/// tile is chosen per layer); `f64::INFINITY` for no tiles.
pub fn least_overhead_share(p: &Conv2dParams, hw: (usize, usize), tiles: &[usize]) -> f64 {
    tiles
        .iter()
        .map(|&t| overhead_share(p, Patches::of_image(p, hw, t)))
        .fold(f64::INFINITY, f64::min)
}

/// HASTE's predicted time on the convolution `p`, run in the patches `at`, over the dense
/// kernel's, when it merges away the share `merged` of the input channels (`1 - mean
/// buckets / c_in`, measured on a batch), on the running tier: the reduced convolution,
/// its loss, the fixed per-patch work and the filter merge.
///
/// ```
/// use haste::haste::cost::{predicted_time_ratio, Patches};
/// use haste::ops::Conv2dParams;
/// let p = Conv2dParams::new(128, 128, 3, 3).with_pads([1; 4]);
/// let at = Patches::full(&p, 8);
/// assert!(predicted_time_ratio(&p, at, 0.5) < 0.9); // half the channels merged: faster
/// assert!(predicted_time_ratio(&p, at, 0.02) > 1.0); // 2 %: slower than dense
/// ```
pub fn predicted_time_ratio(p: &Conv2dParams, at: Patches, merged: f64) -> f64 {
    cost_terms(p, at, merged).predicted()
}

/// The terms of [`predicted_time_ratio`] before their constants, each a count per dense
/// multiply-add of the layer's patches: the prediction is the sum of each term times its
/// constant in the layer's [`CostModel`] (`kept * c.kept`, `fixed * c.fixed`, ...,
/// `merge_beyond_cache * c.merge_per_mb`), linear in the constants, so measured per-layer
/// times (`haste bench --layers --json` prints these terms beside them) refit it by least
/// squares (`bench/fit_cost_model.py`). The fields pair with [`CostModel`]'s one by one.
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
        c.kept * self.kept
            + c.fixed * self.fixed
            + c.input_merge * self.input_merge
            + c.per_input_channel * self.per_input_channel
            + c.per_output_channel * self.per_output_channel
            + c.merge * self.merge
            + c.merge_per_mb * self.merge_beyond_cache
    }
}

/// The [`CostTerms`] of `p` run in the patches `at`, merging away the share `merged`.
pub fn cost_terms(p: &Conv2dParams, at: Patches, merged: f64) -> CostTerms {
    let merged = merged.clamp(0.0, 1.0);
    let taps = (p.kh * p.kw) as f64;
    let (c_in, c_out) = (p.c_in as f64, p.c_out as f64);
    let dense = (at.outputs * c_in * c_out * taps).max(1.0);
    let bank = c_in * c_out * taps * std::mem::size_of::<f32>() as f64;
    let beyond_cache = (bank / (1 << 20) as f64 - MERGE_BANK_CACHED_MB).max(0.0);
    let merge = merged * c_in * c_out * taps / dense;
    CostTerms {
        kept: 1.0 - merged,
        fixed: c_in * at.window / dense,
        input_merge: merged * c_in * at.window / dense,
        per_input_channel: c_in / dense,
        per_output_channel: c_out / dense,
        merge,
        merge_beyond_cache: merge * beyond_cache,
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

    /// The prediction is the kept share plus the data-free overhead plus both merges, which
    /// grow with the merged share (the filter merge, past the cache, with the bank too).
    #[test]
    fn the_prediction_adds_up() {
        for (c_in, c_out, tile) in [(64, 64, 4), (512, 512, 8), (16, 128, 16)] {
            let p = Conv2dParams::new(c_in, c_out, 3, 3).with_pads([1; 4]);
            let at = Patches::of_image(&p, (28, 28), tile);
            let m = 0.4;
            let t = cost_terms(&p, at, m);
            let c = CostModel::current(&p);
            let merge = t.input_merge * c.input_merge
                + t.merge * c.merge
                + t.merge_beyond_cache * c.merge_per_mb;
            assert!((t.input_merge - m * t.fixed).abs() < 1e-15);
            // overhead_share is the work at no merging, less the dense time, per kept share.
            let work = overhead_share(&p, at) * c.kept + 1.0 - c.kept;
            let sum = c.kept * (1.0 - m) + work + merge;
            assert!((predicted_time_ratio(&p, at, m) - sum).abs() < 1e-12);
            // Per filter element summed, against the dense multiply-adds of the patch.
            let per_patch = at.outputs * (c_in * c_out * 9) as f64;
            let elements = m * (c_in * c_out * 9) as f64;
            assert!((t.merge - elements / per_patch).abs() < 1e-12);
            assert_eq!(t.merge_beyond_cache > 0.0, c_in == 512);
        }
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
