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

/// Cycles one HASTE patch spends outside the reduced convolution (hashing, grouping, both
/// merges, bookkeeping), per input channel and window pixel. Measured with `rdtsc` around
/// each step on ResNet-56 (2000 CIFAR-10 test images, one thread, Zen 4): 5.0 at 16 and 32
/// channels, 5.3 at 64, i.e. 2.9, 5.8 and 12.3 thousand cycles per 6 x 6 window.
pub const OVERHEAD_CYCLES_PER_CHANNEL_PIXEL: f64 = 5.2;

/// Multiply-adds per (TSC) cycle of the direct kernel on the same machine (about 105 GFLOP/s).
pub const KERNEL_MACS_PER_CYCLE: f64 = 20.0;

/// What a 16-output patch loses in the reduced convolution against the dense kernel over a
/// whole image (smaller register blocks, one call per patch and filter panel, the row
/// table), as a share of the layer's dense time. Fitted with [`MERGE_SHARE_BASE`] and
/// [`MERGE_SHARE_PER_MB`] to per-layer timings in the network (Tiny Darknet and ResNet-18,
/// `haste bench --layers --all-layers`, 2 threads, 2026-11-30).
pub const PATCH_KERNEL_LOSS: f64 = 0.12;

/// The filter merge's cost per merged channel, as a share of what that channel costs in the
/// dense convolution: every patch sums its merged channels' filter rows, which come from L2
/// while the layer's filter bank fits in about half of it and stream from further out past
/// that, so the share grows with the bank beyond [`MERGE_BANK_CACHED_MB`]:
/// `MERGE_SHARE_BASE + MERGE_SHARE_PER_MB * (bank_megabytes - MERGE_BANK_CACHED_MB)` (0.03
/// for 128 -> 128 3x3 and smaller, 0.26 for 256 -> 256, 1.1 for 512 -> 512, where merging
/// cannot pay). Refitted after the filter merge began summing whole 64-channel rows in
/// registers (`haste bench --layers --all-layers` on ResNet-18, 2 threads, 2026-11-30
/// afternoon: 128 -> 128 @28 1.21-1.26x dense, 256 -> 256 @14 1.06-1.23x, 512 -> 512 @7
/// 0.91-1.00x, each merging 39-52 % of its channels).
pub const MERGE_SHARE_BASE: f64 = 0.03;
pub const MERGE_SHARE_PER_MB: f64 = 0.13;
/// Filter bank size (MB) up to which the filter merge reads from cache (see
/// [`MERGE_SHARE_BASE`]).
pub const MERGE_BANK_CACHED_MB: f64 = 0.5;

/// The data-free gate: a layer is considered for HASTE only when its fixed per-patch work
/// ([`overhead_share`]) is at most this share of its dense time. Past it, the layer would
/// have to merge away more than half its channels to break even, which no operating point
/// within one accuracy point does on the shared models.
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

/// The predicted time of HASTE's fixed per-patch work over the dense kernel's time for the
/// patches `at` of the convolution `p`: hashing, grouping and the input merge
/// ([`OVERHEAD_CYCLES_PER_CHANNEL_PIXEL`] per input channel and window pixel, against
/// [`KERNEL_MACS_PER_CYCLE`]), plus [`PATCH_KERNEL_LOSS`]. Data-free. It falls with the
/// output channels: the dense work grows with them, the hashing does not.
///
/// ```
/// use haste::haste::cost::{overhead_share, Patches, MAX_OVERHEAD_SHARE};
/// use haste::ops::Conv2dParams;
/// let small = Conv2dParams::new(64, 64, 3, 3).with_pads([1; 4]);
/// let wide = Conv2dParams::new(64, 512, 3, 3).with_pads([1; 4]);
/// assert!(overhead_share(&small, Patches::full(&small, 4)) > MAX_OVERHEAD_SHARE);
/// assert!(overhead_share(&wide, Patches::full(&wide, 4)) < 0.2);
/// ```
pub fn overhead_share(p: &Conv2dParams, at: Patches) -> f64 {
    let hashing = OVERHEAD_CYCLES_PER_CHANNEL_PIXEL * p.c_in as f64 * at.window;
    let dense = at.outputs * (p.c_in * p.c_out * p.kh * p.kw) as f64 / KERNEL_MACS_PER_CYCLE;
    hashing / dense.max(1.0) + PATCH_KERNEL_LOSS
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

/// Output side of the patches [`MERGE_SHARE_BASE`] and [`MERGE_SHARE_PER_MB`] were fitted on.
const MERGE_FIT_TILE: usize = 4;

/// The filter merge's cost per merged channel over its dense cost on the patches `at` (see
/// [`MERGE_SHARE_BASE`]). A patch sums its merged channels' filter rows once, whatever its
/// size, while the dense work it replaces grows with its outputs: the share scales as
/// `1 / outputs` from the `4 x 4` patches it was fitted on (tile 8 measured 3.5 against 7.7
/// ticks per channel and window pixel on ResNet-18, 2026-12-03, for a window 2.8x larger).
///
/// ```
/// use haste::haste::cost::{merge_share, Patches};
/// use haste::ops::Conv2dParams;
/// let p = Conv2dParams::new(256, 256, 3, 3).with_pads([1; 4]);
/// let (four, eight) = (Patches::full(&p, 4), Patches::full(&p, 8));
/// assert!((merge_share(&p, eight) * 4.0 - merge_share(&p, four)).abs() < 1e-12);
/// ```
pub fn merge_share(p: &Conv2dParams, at: Patches) -> f64 {
    let bank = (p.c_in * p.c_out * p.kh * p.kw * std::mem::size_of::<f32>()) as f64;
    let beyond_cache = (bank / (1 << 20) as f64 - MERGE_BANK_CACHED_MB).max(0.0);
    let per_output = (MERGE_FIT_TILE * MERGE_FIT_TILE) as f64 / at.outputs.max(1.0);
    (MERGE_SHARE_BASE + MERGE_SHARE_PER_MB * beyond_cache) * per_output
}

/// HASTE's predicted time on the convolution `p`, run in the patches `at`, over the dense
/// kernel's, when it merges away the share `merged` of the input channels (`1 - mean
/// buckets / c_in`, measured on a batch): the reduced convolution, the fixed per-patch work
/// and the filter merge.
///
/// ```
/// use haste::haste::cost::{predicted_time_ratio, Patches};
/// use haste::ops::Conv2dParams;
/// let p = Conv2dParams::new(128, 128, 3, 3).with_pads([1; 4]);
/// let at = Patches::full(&p, 4);
/// assert!(predicted_time_ratio(&p, at, 0.5) < 0.9); // half the channels merged: faster
/// assert!(predicted_time_ratio(&p, at, 0.05) > 1.0); // 5 %: slower than dense
/// let huge = Conv2dParams::new(512, 512, 3, 3).with_pads([1; 4]);
/// // Merging 9 MB of filters per patch of 16 outputs cannot pay.
/// assert!(predicted_time_ratio(&huge, Patches::full(&huge, 4), 0.5) > 1.0);
/// ```
pub fn predicted_time_ratio(p: &Conv2dParams, at: Patches, merged: f64) -> f64 {
    cost_terms(p, at, merged).predicted()
}

/// The terms of [`predicted_time_ratio`] before their constants: the prediction is
/// `kept + OVERHEAD_CYCLES_PER_CHANNEL_PIXEL * hashing + PATCH_KERNEL_LOSS +
/// MERGE_SHARE_BASE * merge + MERGE_SHARE_PER_MB * merge_beyond_cache`, linear in the
/// constants, so measured per-layer times (`haste bench --layers --json` prints these terms
/// beside them) refit it by least squares.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CostTerms {
    /// The share of input channels the reduced convolution keeps.
    pub kept: f64,
    /// Input channel-pixels of the windows per dense cycle ([`KERNEL_MACS_PER_CYCLE`]).
    pub hashing: f64,
    /// The merged share, per output of the fitted patch size ([`MERGE_FIT_TILE`] squared).
    pub merge: f64,
    /// `merge` times the filter bank's megabytes beyond [`MERGE_BANK_CACHED_MB`].
    pub merge_beyond_cache: f64,
}

impl CostTerms {
    /// HASTE's time over dense with haste's constants.
    pub fn predicted(&self) -> f64 {
        self.kept
            + OVERHEAD_CYCLES_PER_CHANNEL_PIXEL * self.hashing
            + PATCH_KERNEL_LOSS
            + MERGE_SHARE_BASE * self.merge
            + MERGE_SHARE_PER_MB * self.merge_beyond_cache
    }
}

/// The [`CostTerms`] of `p` run in the patches `at`, merging away the share `merged`.
pub fn cost_terms(p: &Conv2dParams, at: Patches, merged: f64) -> CostTerms {
    let merged = merged.clamp(0.0, 1.0);
    let dense = at.outputs * (p.c_in * p.c_out * p.kh * p.kw) as f64 / KERNEL_MACS_PER_CYCLE;
    let bank = (p.c_in * p.c_out * p.kh * p.kw * std::mem::size_of::<f32>()) as f64;
    let beyond_cache = (bank / (1 << 20) as f64 - MERGE_BANK_CACHED_MB).max(0.0);
    let merge = merged * (MERGE_FIT_TILE * MERGE_FIT_TILE) as f64 / at.outputs.max(1.0);
    CostTerms {
        kept: 1.0 - merged,
        hashing: p.c_in as f64 * at.window / dense.max(1.0),
        merge,
        merge_beyond_cache: merge * beyond_cache,
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

    /// The linear terms give the prediction the shares give, for small and large banks.
    #[test]
    fn cost_terms_add_up_to_the_shares() {
        for (c_in, c_out, tile) in [(64, 64, 4), (512, 512, 8), (16, 128, 16)] {
            let p = Conv2dParams::new(c_in, c_out, 3, 3).with_pads([1; 4]);
            let at = Patches::of_image(&p, (28, 28), tile);
            let m = 0.4;
            let shares = (1.0 - m) + overhead_share(&p, at) + merge_share(&p, at) * m;
            assert!((cost_terms(&p, at, m).predicted() - shares).abs() < 1e-12);
        }
    }
}
