//! How one direct-convolution call splits its sum into passes that keep the filters a
//! group of output channels reads in cache. Every pass keeps the order (tap, channel), so
//! the bits are the same as in one pass; the tiers differ only in their group width.

use super::{Filters, Geom, PANEL};

/// Filter bytes one 64-channel group may read per pass before the pass is split by kernel
/// rows: about half of the 1 MB L2 of the machines measured, so the group's filters stay
/// there while every output block of the call reuses them.
pub(super) const GROUP_FILTER_BUDGET: usize = 512 * 1024;

/// The kernel-row ranges summed one after the other. A wide layer's filters for one group of
/// 64 output channels (`kh * kw * B * 64` floats: 1.2 MB for 512 input channels) would
/// not fit in L2, and every block of outputs would stream them again from memory (ResNet-18's
/// 512-channel stage ran at half speed). Split into kernel rows, each pass reads a slice that
/// fits, and the accumulators go through the output between passes. The sum keeps its order
/// (tap, channel), so the bits are the same as in one pass.
pub(super) fn kernel_row_passes(g: &Geom, terms: usize) -> impl Iterator<Item = (usize, usize)> {
    let group_bytes = g.kh * g.kw * terms * PANEL * std::mem::size_of::<f32>();
    let (ky0, ky1) = g.kys;
    let step = if group_bytes > GROUP_FILTER_BUDGET {
        1
    } else {
        g.kh
    };
    (ky0..ky1)
        .step_by(step)
        .map(move |ky| (ky, (ky + step).min(ky1)))
}

/// Terms of panel filters one pass of the AVX-512 kernel sums (see [`wide_group_passes`]):
/// 768 terms of a 64-channel group are 192 KB of filters, which stay in L2 while every block
/// of outputs streams them (256 bytes for every 24 FMAs, which L2 delivers). In one pass of a
/// whole kernel row, a 512 -> 512 3x3 layer's group (393 KB, beside its partial sums and
/// image) came from L3. Each pass stores and reloads every block's sums, so passes are
/// as long as L2 allows: passes of 96 terms (24 KB, for L1) left ResNet-18's dense network
/// 3-4 % slower on the Zen 5 (48 KB L1; batch 8 and 1, one and two threads; its 256 -> 256
/// and 512 -> 512 layers 7-10 %), Tiny Darknet 2 %; the CIFAR ResNets and the MobileNet
/// family within the noise.
#[cfg(target_arch = "x86_64")]
const WIDE_TERMS_PER_PASS: usize = 768;

/// Up to this many terms a layer runs in one pass of the AVX-512 kernel.
#[cfg(target_arch = "x86_64")]
const WIDE_TERMS_WHOLE: usize = 192;

/// Outputs up to which a call splits its terms into passes of [`WIDE_TERMS_PER_PASS`]: the
/// partial sums of one group of 64 channels (64 KB at 256 outputs) stay in L2 from one pass to
/// the next. At 56 x 56 outputs (800 KB) re-reading them cost more than the filters saved
/// (ResNet-18, batch 8 on two threads: slower), while at 7 x 7 the 512 -> 512 layers ran
/// 14-18 % faster (one thread, batch 1: 92-102 -> 109-120 GFLOP/s) and ResNet-56 8 %.
#[cfg(target_arch = "x86_64")]
const WIDE_PASS_MAX_OUTPUTS: usize = 256;

/// The passes of the AVX-512 kernel: panel filters of layers of 64 output channels or more,
/// with more than [`WIDE_TERMS_WHOLE`] terms and at most [`WIDE_PASS_MAX_OUTPUTS`] outputs
/// in the call, in passes of about [`WIDE_TERMS_PER_PASS`] terms of one kernel row; every
/// other call (row filters among them) by [`kernel_row_passes`]. The order of the sum (tap,
/// channel) is kept, so the bits are the same as in one pass.
#[cfg(target_arch = "x86_64")]
pub(super) fn wide_group_passes(g: &Geom, f: Filters) -> Vec<PassRange> {
    let row_terms = g.kw * f.terms(g);
    // Row filters (HASTE's patches) sum whole kernel rows in one pass: a patch's blocks
    // are few (11 at tile 8), and a pass per kernel row stored and reloaded their sums
    // twice more for filters that came from L2 in time anyway (`examples/patch_kernel`,
    // half merged at tile 8: 64 channels 0.89-0.90 -> 0.95-0.96 of the dense rate, 128
    // 0.92 -> 0.92-0.95, 256 0.93-0.95 -> 0.93-0.97).
    let split = matches!(f, Filters::Panels { .. })
        && g.c_out >= 64
        && g.kh * row_terms > WIDE_TERMS_WHOLE
        && g.ph * g.pw <= WIDE_PASS_MAX_OUTPUTS;
    if !split {
        return kernel_row_passes(g, f.terms(g))
            .map(|kys| (kys, live_terms(g, f)))
            .collect();
    }
    term_passes(g, f, WIDE_TERMS_PER_PASS)
}

/// The terms of each kernel row a call on panel filters sums: all of them (`None`) unless
/// [`Geom::kxs`] leaves out columns that read only padding. Row filters sum every column.
fn live_terms(g: &Geom, f: Filters) -> Option<(usize, usize)> {
    let panels = matches!(f, Filters::Panels { .. });
    (panels && g.kxs != (0, g.kw)).then(|| (g.kxs.0 * g.c_in, g.kxs.1 * g.c_in))
}

/// Each kernel row's terms in passes of about `per_pass` (equal shares, rows in order), so
/// that the filters a group reads in a pass stay in L1; only the row's live terms
/// ([`live_terms`]).
fn term_passes(g: &Geom, f: Filters, per_pass: usize) -> Vec<PassRange> {
    let row_terms = g.kw * f.terms(g);
    let (lo, hi) = live_terms(g, f).unwrap_or((0, row_terms));
    let chunks = row_terms.div_ceil(per_pass).max(1);
    let per = row_terms.div_ceil(chunks).max(1);
    let mut passes = Vec::new();
    for ky in g.kys.0..g.kys.1 {
        for t0 in (0..row_terms).step_by(per) {
            let (t0, t1) = (t0.max(lo), (t0 + per).min(row_terms).min(hi));
            if t0 < t1 {
                passes.push(((ky, ky + 1), Some((t0, t1))));
            }
        }
    }
    passes
}

/// Terms of panel filters one pass sums, when a layer has more than
/// [`PANEL_TERMS_WHOLE`]: 256 terms of a 16-channel group are 16 KB of filters, which stay in
/// the 32 KB L1 while every block of outputs reads them. In one pass, a 512 -> 512 3x3
/// layer's group (295 KB) streamed from L2 for every block: 30 GFLOP/s on one core against
/// 40-43 in passes (of a 92 GFLOP/s peak), 256 -> 256 44 against 52-68.
const PANEL_TERMS_PER_PASS: usize = 256;

/// Up to this many terms (64 KB of a 16-channel group's filters) a layer runs in one pass:
/// splitting 64 -> 64 and 32 -> 32 layers cost more in partial sums than it saved.
const PANEL_TERMS_WHOLE: usize = 1024;

/// One pass: the kernel rows it sums and, for panel filters, the terms of that row (`None`:
/// every term of the rows).
pub(super) type PassRange = ((usize, usize), Option<(usize, usize)>);

/// The passes of a tier whose groups are 16 output channels wide (AVX2, NEON), in the order
/// of the sum: panel filters in passes of [`PANEL_TERMS_PER_PASS`] terms once a layer has
/// more than [`PANEL_TERMS_WHOLE`]; row filters by [`kernel_row_passes`].
pub(super) fn narrow_group_passes(g: &Geom, f: Filters) -> Vec<PassRange> {
    match f {
        Filters::Panels { weights, width } => {
            assert!(weights.len() >= g.kh * g.kw * g.c_in * g.c_out);
            assert!(
                width.is_multiple_of(16),
                "panels of whole 16-channel groups"
            );
            if g.kh * g.kw * g.c_in <= PANEL_TERMS_WHOLE {
                vec![(g.kys, live_terms(g, f))]
            } else {
                term_passes(g, f, PANEL_TERMS_PER_PASS)
            }
        }
        Filters::Rows { first, rows, .. } => {
            assert!(rows.len() >= first.len());
            kernel_row_passes(g, f.terms(g))
                .map(|kys| (kys, None))
                .collect()
        }
    }
}
