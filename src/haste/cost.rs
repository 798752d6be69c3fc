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

/// Bytes of a layer's filter bank read per cycle by one HASTE patch. Every patch reads each
/// filter row once, whatever its buckets: singletons through the reduced convolution,
/// merged channels through the filter merge. The dense kernel reads the bank once per image
/// (per 64-channel group, then reused from L2 by every output), a patch once per `P x P`
/// outputs. Calibrated in the network (Tiny Darknet, batch 32, 2 threads, 2026-11-30): its
/// 64 -> 512 layers spent about 15 us per 4 x 4 patch beyond hashing and the reduced
/// multiply-adds, for a 1.2 MB bank.
pub const FILTER_BYTES_PER_CYCLE: f64 = 27.0;

/// HASTE is used on a layer only when its fixed per-patch work is at most this share of the
/// layer's dense cost: below that, a layer must merge away more than this share of its
/// channels before HASTE is faster than the dense kernel, which the operating points within
/// one accuracy point rarely do (the README's per-layer tables).
pub const MAX_OVERHEAD_SHARE: f64 = 0.15;

/// The predicted time of HASTE's fixed per-patch work over the dense kernel's time for one
/// full `tile x tile` patch of the convolution `p`: hashing, grouping and the input merge
/// (per input channel and window pixel), and reading the layer's filters once (see
/// [`FILTER_BYTES_PER_CYCLE`]). Data-free, so the choice it drives is deterministic. The
/// first part falls with the output channels (the dense work grows with them, the hashing
/// does not); the filter part is a fixed share for a given tile, `4 * 20 / (27 * P^2)`:
/// 18.5 % at tile 4, 4.6 % at tile 8.
///
/// ```
/// use haste::haste::cost::{overhead_share, MAX_OVERHEAD_SHARE};
/// use haste::ops::Conv2dParams;
/// let small = Conv2dParams::new(64, 64, 3, 3).with_pads([1; 4]);
/// let wide = Conv2dParams::new(64, 512, 3, 3).with_pads([1; 4]);
/// assert!(overhead_share(&small, 4) > 0.3);
/// assert!(overhead_share(&wide, 4) > MAX_OVERHEAD_SHARE);
/// assert!(overhead_share(&wide, 8) < 0.1);
/// ```
pub fn overhead_share(p: &Conv2dParams, tile: usize) -> f64 {
    let window = ((tile - 1) * p.stride.0 + p.kh) * ((tile - 1) * p.stride.1 + p.kw);
    let hashing = OVERHEAD_CYCLES_PER_CHANNEL_PIXEL * (p.c_in * window) as f64;
    let weights = p.c_in * p.c_out * p.kh * p.kw;
    let filters = (weights * std::mem::size_of::<f32>()) as f64 / FILTER_BYTES_PER_CYCLE;
    let dense = (tile * tile * weights) as f64 / KERNEL_MACS_PER_CYCLE;
    (hashing + filters) / dense.max(1.0)
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
}
