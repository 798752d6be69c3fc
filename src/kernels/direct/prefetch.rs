//! What the AVX-512 blocks ask the cache for ahead of time: the filters the next group or
//! the next call reads, and a block's own outputs and residuals.

use super::blocks::Pass;
use super::{Filters, PANEL};

/// The part of the filters read after group `q`'s (of 64 output channels) that block `k` of
/// that group prefetches, or null. A wide layer's filters do not stay in cache from one
/// image to the next (ResNet-18's 512-channel stage holds 31 MB), so each group's first
/// block waited on memory for filters it had not yet read (that stage ran at 170-195
/// GFLOP/s on two cores, 215-221 with this). Prefetched by the blocks before, they arrive
/// while those compute. A block sums `rows * kw * c_in` terms of 64 channels, four cache
/// lines each, and prefetches one line per term: the first four blocks of a group cover the
/// next group's slice of its kernel rows, or after the last group the first group's slice
/// of the next pass's rows.
fn next_filters_part(p: Pass, q: usize, k: usize) -> *const f32 {
    let g = p.g;
    let Filters::Panels { weights: w, .. } = p.f else {
        return std::ptr::null();
    };
    let terms = g.kw * g.c_in;
    // The pass's terms of each of its rows (every term of them without a term range).
    let (t0, t1) = p.terms.unwrap_or((0, terms));
    let rows = p.kys.1 - p.kys.0;
    let next = if PANEL * (q + 2) <= g.c_out {
        (q + 1, p.kys.0, t0)
    } else if p.kys.1 < g.kys.1 && p.terms.is_none() {
        (0, p.kys.1, 0)
    } else {
        // After the last group of a pass of part of a row: not worked out; the next pass's
        // first block waits on its filters once.
        return std::ptr::null();
    };
    if k >= 4 {
        return std::ptr::null();
    }
    let slice = PANEL * next.0 * g.kh * terms + (next.1 * terms + next.2) * PANEL;
    w.as_ptr().wrapping_add(slice + k * rows * (t1 - t0) * 16)
}

/// `p` for wide block `k` of the `blocks` in group `q` (of 64 output channels) of its
/// pass, with the part of the filters read next that the block prefetches.
pub(super) fn with_prefetch(p: Pass, q: usize, k: usize, blocks: usize) -> Pass {
    let (prefetch, prefetch_stride) = match p.f {
        Filters::Panels { .. } => (next_filters_part(p, q, k), 16),
        Filters::Rows { ahead, .. } => ahead_part(p, k, blocks, ahead),
    };
    Pass {
        prefetch,
        prefetch_stride,
        ..p
    }
}

/// Asks for term `b`'s `stride` floats (one line or a row of four) of the part `pf` a
/// block prefetches, into L2. No loop: in the 6 x 64 blocks' loop, one unrolled by the
/// compiler cost three jumps per term.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn prefetch_term(pf: *const f32, b: usize, stride: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    let at = pf.wrapping_add(b * stride);
    // SAFETY (each): a prefetch is a hint: it never faults and changes no memory.
    unsafe { _mm_prefetch::<_MM_HINT_T1>(at.cast()) };
    if stride > 16 {
        for line in [16, 32, 48] {
            unsafe { _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(line).cast()) };
        }
    }
}

/// The part of `ahead` (what the next call reads) that wide block `k` of the `blocks` in
/// each pass of a row-filter call prefetches (see [`super::ahead::ahead_part`]).
fn ahead_part(p: Pass, k: usize, blocks: usize, ahead: &[f32]) -> (*const f32, usize) {
    let row_terms = p.g.kw * p.f.terms(p.g);
    super::ahead::ahead_part(p.g, (p.kys, p.terms), row_terms, (k, blocks), ahead)
}

/// Asks for the memory a block touches after its sums into L1 while it sums kernel row
/// `ky`: its output lines (for writing) halfway through the pass, the residual values its
/// epilogue adds at the start of the last kernel row. Both missed the cache when reached and
/// stalled the core (2.4 % of ResNet-18's time went to the epilogue, 1.1 % after).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn prefetch_block_io<const MR: usize, const NV: usize>(
    p: Pass,
    op: *const f32,
    at: &[usize; MR],
    co0: usize,
    ky: usize,
) {
    use std::arch::x86_64::*;
    let lines = || {
        at.iter()
            .flat_map(move |&o| (0..NV).map(move |v| o + co0 + 16 * v))
    };
    if ky == p.kys.0 + (p.kys.1 - p.kys.0) / 2 {
        lines().for_each(|at| _mm_prefetch::<_MM_HINT_ET0>(op.wrapping_add(at).cast()));
    }
    if let (Some(r), true) = (p.e.residual, p.last && ky + 1 == p.kys.1) {
        lines().for_each(|at| _mm_prefetch::<_MM_HINT_T0>(r.as_ptr().wrapping_add(at).cast()));
    }
}

/// Where the inputs of the outputs after block `j0..j0 + mr` start, for a 1x1 layer without
/// stride or padding whose narrow blocks (fewer than 64 output channels, at most 16
/// outputs) prefetch them a line per term while they sum (null otherwise, and past the last
/// output). The next block's inputs are one run of `mr * c_in` floats, at most `c_in`
/// lines: the block's `c_in` terms reach them all.
///
/// Such a layer reads 4 bytes of input for every 16 to 32 multiply-adds, and a block's 12
/// or 16 input pixels are as many streams advancing a float per term, which the hardware
/// prefetchers did not keep ahead of: with its input in L3 or memory, a 144 -> 24
/// projection at 60 x 60 took 635 us against 313 us with it in cache
/// (`examples/one_conv ... cold`).
#[inline(always)]
pub(super) fn next_block_inputs(p: Pass, j0: usize, mr: usize) -> *const f32 {
    let g = p.g;
    let next = j0 + mr;
    let contiguous = g.kh * g.kw == 1 && g.sw == 1 && g.sh * g.win_w == g.pw;
    if !contiguous || next >= g.ph * g.pw || mr > 16 {
        return std::ptr::null();
    }
    p.win.as_ptr().wrapping_add(next * g.c_in)
}
