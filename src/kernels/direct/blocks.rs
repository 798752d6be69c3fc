//! The AVX-512 kernel's register blocks: which blocks cover a call's outputs, the blocks
//! themselves (6 x 64, up to 8 x 32, row blocks of narrow layers), what they prefetch, and
//! their epilogue.

use super::broadcast::broadcast_fma4;
#[cfg(target_arch = "x86_64")]
use super::epilogue::{finish_block, finish_sums, lanes::Deferred, with_lanes, Lanes};
#[cfg(target_arch = "x86_64")]
use super::half::{half_block, takes_half, HALF_BLOCK_24, HALF_BLOCK_40};
#[cfg(target_arch = "x86_64")]
use super::joined::{joined_blocks, joined_tail};
use super::pairs::{pair_block, takes_pairs, PAIR_BLOCK};
use super::passes::wide_group_passes;
use super::prefetch::with_prefetch;
#[cfg(target_arch = "x86_64")]
use super::prefetch::{next_block_inputs, prefetch_block_io, prefetch_term};
#[cfg(target_arch = "x86_64")]
use super::row_blocks::row_blocks;
use super::{panel_of, Epilogue, Filters, Geom, PANEL};

/// [`super::conv_avx512`] writing through a pointer (see [`super::conv_at`]).
///
/// # Safety
/// As [`super::conv_at`], and the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn avx512_at(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: *mut f32) {
    if let Filters::Panels { weights, width } = f {
        assert!(weights.len() >= g.kh * g.kw * g.c_in * g.c_out);
        assert_eq!(
            width, PANEL,
            "the AVX-512 kernel reads panels of {PANEL} channels"
        );
    }
    assert!(
        g.sums == super::Sums::WHOLE || matches!(f, Filters::Rows { .. }),
        "only row filters continue sums from one call to the next"
    );
    let passes = wide_group_passes(g, f);
    let count = passes.len();
    for (k, (kys, terms)) in passes.into_iter().enumerate() {
        let pass = Pass {
            g,
            win,
            f,
            kys,
            terms,
            first: k == 0 && g.sums.start,
            last: k + 1 == count && g.sums.finish,
            e,
            prefetch: std::ptr::null(),
            prefetch_stride: 16,
        };
        // SAFETY: forwarded from the caller.
        unsafe {
            match f {
                // The activation chosen once per call, so that the 64-channel blocks finish
                // their sums in registers (see `block`).
                Filters::Panels { .. } if !e.is_none() => {
                    with_lanes!(e.activation, act => blocks_pass::<true, _>(pass, out, &act))
                }
                Filters::Panels { .. } => blocks_pass::<true, _>(pass, out, &Deferred),
                Filters::Rows { .. } => blocks_pass::<false, _>(pass, out, &Deferred),
            }
        }
    }
}

/// What every block of one [`conv_avx512`] pass reads: the geometry, the window, the filters,
/// and the kernel rows `kys` (and for panel filters the terms of that row) summed in this
/// pass (see [`wide_group_passes`]).
#[derive(Clone, Copy)]
pub(super) struct Pass<'a> {
    pub(super) g: &'a Geom,
    pub(super) win: &'a [f32],
    pub(super) f: Filters<'a>,
    pub(super) kys: (usize, usize),
    /// Panel filters: the terms `t0..t1` of the kernel row `kys.0` (`kys` is one row), of
    /// the `kw * c_in` that run as one loop; `None`: every term of the rows.
    pub(super) terms: Option<(usize, usize)>,
    /// Whether this pass starts the sums (else it adds to the stored partial sums) and
    /// whether it ends them (then the epilogue runs).
    pub(super) first: bool,
    pub(super) last: bool,
    /// Applied by the last pass.
    pub(super) e: Epilogue<'a>,
    /// Where this block's part of the next group's filters (panel filters) or of the next
    /// call's (row filters) starts, to be prefetched while it sums (null: none), and how
    /// many floats of it per term: a cache line (16), or for row filters a row (64).
    pub(super) prefetch: *const f32,
    pub(super) prefetch_stride: usize,
}

/// One pass of [`conv_avx512`] over every output and output channel; `PANELS` when the
/// filters are [`Filters::Panels`]. The 64-channel blocks finish their sums with `act` in
/// registers (as much as 11 % faster on 1x1 layers of 32 input channels with a bias and
/// ReLU6), unless it is [`Deferred`]; the others from the stack (see [`block`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn blocks_pass<const PANELS: bool, A: Lanes>(p: Pass, out: *mut f32, act: &A) {
    let g = p.g;
    let n = g.ph * g.pw;
    const ALL: [u16; 4] = [0xffff; 4];
    // Layers with 64 or more output channels: blocks of 6 outputs x 64 channels (24
    // accumulators), so each broadcast input value feeds 4 FMAs. Otherwise (and for the
    // channels left over) blocks of up to 8 outputs x 32 channels.
    // A small patch whose output count 6 does not divide takes blocks of 4 outputs x 64
    // channels instead, so no block is left over at half speed.
    // HASTE's patches (row filters) of 12 outputs or more take them too, smaller ones
    // (and the edge rows of a split patch) blocks of 8 x 32 (see `WIDE_ROW_OUTPUTS`).
    let wide_rows = !PANELS && takes_wide_rows(g);
    let wide = if PANELS || wide_rows { g.c_out / 64 } else { 0 };
    // A tail of up to 32 channels joins the last full group (see `joined`).
    let joined = if PANELS {
        joined_tail(g.c_out, &p.f)
    } else {
        None
    };
    let wide = wide - usize::from(joined.is_some());
    // HASTE's 8 x 8 patches take 6 x 64 blocks and one of 4: 10 % faster than 4 x 64 blocks
    // on half-merged 64- to 256-channel patches (`examples/patch_kernel`), where a block's
    // rows come from L2 and the larger block reads them for more outputs.
    let small = if PANELS { 64 } else { 32 };
    let wide_mr = if n <= small && !n.is_multiple_of(6) && n.is_multiple_of(4) {
        4
    } else {
        6
    };
    // Channel group outer, output blocks inner: a group's filters (`c_in * taps` rows of 64)
    // stay in cache while every block of the call uses them; the whole filter bank of a wide
    // layer (1.2 MB for 64 -> 512) would not.
    let mut full = if wide > 0 { n - n % wide_mr } else { 0 };
    if wide_mr == 6 && (1..=2).contains(&(n - full)) && full >= 6 {
        // One or two outputs left over (7x7 = 8 x 6 + 1): a block of 1 or 2 outputs reads
        // all its filters for 4 or 8 FMAs per row. The last full block and them run as
        // blocks of 4 + 3 or 4 + 4 instead.
        full -= 6;
    }
    // SAFETY (every block below): forwarded from the caller; each block stays inside `n`
    // outputs and `c_out` channels.
    for q in 0..wide {
        let co0 = 64 * q;
        for (k, j0) in (0..full).step_by(wide_mr).enumerate() {
            let p = with_prefetch(p, q, k, full / wide_mr);
            unsafe {
                if wide_mr == 4 {
                    block::<4, 4, PANELS, A>(p, out, j0, co0, ALL, act)
                } else {
                    block::<6, 4, PANELS, A>(p, out, j0, co0, ALL, act)
                }
            };
        }
    }
    if wide > 0 && !g.c_out.is_multiple_of(64) && joined.is_none() {
        // The channels past the last full group, for the same outputs.
        for j0 in (0..full).step_by(8) {
            unsafe { narrow_blocks::<PANELS>(p, out, j0, (full - j0).min(8), 64 * wide) };
        }
    }
    // The outputs past the last full block (fewer than 6, or 7 or 8 as above): still 64
    // channels at a time in wide layers, so each broadcast feeds 4 FMAs.
    let rest = n - full;
    let mut co_rest = 0;
    if wide > 0 && rest > 0 {
        for q in 0..wide {
            let co0 = 64 * q;
            let mut j0 = full;
            while j0 < n {
                let mr = if n - j0 > 5 { 4 } else { n - j0 };
                unsafe {
                    match mr {
                        5 => block::<5, 4, PANELS, A>(p, out, j0, co0, ALL, act),
                        4 => block::<4, 4, PANELS, A>(p, out, j0, co0, ALL, act),
                        3 => block::<3, 4, PANELS, A>(p, out, j0, co0, ALL, act),
                        2 => block::<2, 4, PANELS, A>(p, out, j0, co0, ALL, act),
                        _ => block::<1, 4, PANELS, A>(p, out, j0, co0, ALL, act),
                    }
                };
                j0 += mr;
            }
        }
        co_rest = 64 * wide;
    }
    if let Some(extra) = joined {
        // SAFETY: forwarded from the caller; the filters have such a tail.
        return unsafe { joined_blocks(p, out, 64 * wide, extra) };
    }
    if PANELS && wide == 0 && g.c_out <= 32 {
        // Narrow layers whose neighbouring outputs read inputs a common constant apart (the
        // RGB layers, 3; 16- and 32-channel inputs): see `row_block`.
        match g.sw * g.c_in {
            3 => return unsafe { row_blocks::<3>(p, out) },
            6 => return unsafe { row_blocks::<6>(p, out) },
            16 => return unsafe { row_blocks::<16>(p, out) },
            32 => return unsafe { row_blocks::<32>(p, out) },
            _ => {}
        }
    }
    if !PANELS && g.c_out <= 16 && matches!(g.pw, 4 | 8 | 16) && n.is_multiple_of(16) {
        // A narrow HASTE layer's patches of 4, 8 or 16 columns: 16 outputs (whole rows) in
        // one block (16 chains of sums, each filter vector loaded once per block), addressed
        // by rows. At tile 8 and 16, blocks of 8 x 16 loaded a filter vector and made 8
        // broadcasts for every 8 FMAs: the 16-channel layers of the CIFAR ResNets ran at
        // about 84 % of the dense kernel's rate.
        let mask = vector_masks(g.c_out)[0];
        for j0 in (0..n).step_by(16) {
            // SAFETY: forwarded from the caller; the block stays inside `n` and `c_out`.
            unsafe { block::<16, 1, PANELS, Deferred>(p, out, j0, 0, [mask, 0, 0, 0], &Deferred) };
        }
        return;
    }
    // A layer of 24 or 40 output channels: the last 8 in 256-bit vectors, not masked
    // 512-bit lanes (see `half`).
    if PANELS && wide == 0 && takes_half(g.c_out, &p.f) {
        // SAFETY (both loops): forwarded from the caller; the blocks stay inside `n`.
        if g.c_out == 24 {
            while n - full >= HALF_BLOCK_24 {
                unsafe { half_block::<HALF_BLOCK_24, 1>(p, out, full) };
                full += HALF_BLOCK_24;
            }
        } else {
            while n - full >= HALF_BLOCK_40 {
                unsafe { half_block::<HALF_BLOCK_40, 2>(p, out, full) };
                full += HALF_BLOCK_40;
            }
        }
    }
    // A layer of 33 to 48 output channels (where it took no half blocks): blocks of 6
    // outputs x 3 vectors, whose 18 sums leave registers for the epilogue, so they finish
    // in registers. Blocks of 8 x 3 finished from the stack, a fifth of the time of a
    // 16 -> 48 expansion with a bias and ReLU6 at 112 x 112 (MNASNet): 302 -> 208 us;
    // 24 -> 48 94 -> 74, 96 -> 48 71 -> 65 (and 16 -> 48 256 -> 230 us without one).
    if PANELS && wide == 0 && (33..=48).contains(&g.c_out) {
        let masks = vector_masks(g.c_out);
        while n - full >= 6 {
            // SAFETY: forwarded from the caller; the block stays inside `n` and `c_out`.
            unsafe { block::<6, 3, true, A>(p, out, full, 0, masks, act) };
            full += 6;
        }
    }
    // A layer of 17 to 24 output channels: two outputs' channels past 16 share a vector
    // (see `pairs`), where that is faster than masked lanes.
    if PANELS && wide == 0 && n - full >= PAIR_BLOCK && takes_pairs(g.c_out, &p.f) {
        while n - full >= PAIR_BLOCK {
            // SAFETY: forwarded from the caller; the block stays inside `n` and `c_out`.
            unsafe { pair_block(p, out, full) };
            full += PAIR_BLOCK;
        }
    }
    // Whatever is left (every output of narrow layers), in blocks of 8 x 32; a layer of 17
    // to 32 output channels first in blocks of 12 x 32 (24 sums, 14 loads for 24
    // multiply-adds against 10 for 16; the 24-channel projections ran 2-4 % faster so before
    // the pair blocks took them, and run so where those do not pay).
    if PANELS && wide == 0 && (17..=32).contains(&g.c_out) {
        let masks = vector_masks(g.c_out);
        while n - full >= 12 {
            unsafe { masked_block(p, out, full, masks) };
            full += 12;
        }
    }
    for j0 in (full..n).step_by(8) {
        unsafe { narrow_blocks::<PANELS>(p, out, j0, (n - j0).min(8), co_rest) };
    }
}

/// Outputs from which a call on row filters (a HASTE patch) runs 64-channel blocks (6 x 64,
/// or 4 x 64 where 6 does not divide a small patch). It was 30 until this session, so a
/// tile-4 patch (16 outputs) ran 8 x 32 blocks: 2 filter vectors and 8 broadcasts for
/// every 16 FMAs, against 4 and 4 in a 4 x 64 block. On the Zen 4, tile 4
/// (`examples/patch_kernel`, 28 x 28): 256 channels 0.88-0.90 -> 0.94-0.95 of the dense
/// rate, 64 channels 0.88-0.89 -> 0.92-0.93 (half merged 0.84 -> 0.86-0.89). In the network
/// (one thread, batch 8, two alternated rounds): Tiny Darknet's tile-4 policy layers
/// 3-6 % faster; ResNet-18 at `--tile 4` 1.18x -> 1.23-1.24x dense; ResNet-56
/// `--all-layers --tile 4` 0.63-0.64x -> 0.65x. 12 rather than 16 or 8: an edge patch of
/// 4 x 3 outputs takes two 6 x 64 blocks, and a 4 x 4 patch at the image's edge still splits
/// off its padding rows (see `padding`); Tiny Darknet's 14 x 14 layers were 1-3 % faster
/// than with 16 or 8. Above 30 outputs the 6 x 64 blocks had already been the faster at
/// every term count (`examples/patch_kernel` 8-14 %; ResNet-56 `--all-layers` 0.86-0.89x
/// -> 0.90x dense when the threshold came down to 30).
const WIDE_ROW_OUTPUTS: usize = 12;

/// Whether a call on row filters runs 64-channel blocks: [`WIDE_ROW_OUTPUTS`] outputs or more
/// (see there and `blocks_pass`).
pub(super) fn takes_wide_rows(g: &Geom) -> bool {
    g.ph * g.pw >= WIDE_ROW_OUTPUTS
}

/// Outputs `j0..j0 + mr` (`mr <= 8`), output channels `co_start..c_out` in blocks of up to
/// 48 (3 vectors, the last one partial): 112 output channels run as 64 + 48, 40 as one
/// block of 3 vectors. Blocks of 32 then 16 had the 16-channel one load an input value for
/// each multiply-add (EfficientNet-Lite1's 672 -> 112 projections ran at 0.84 of
/// onnxruntime's speed).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn narrow_blocks<const PANELS: bool>(
    p: Pass,
    out: *mut f32,
    j0: usize,
    mr: usize,
    co_start: usize,
) {
    let mut co0 = co_start;
    while co0 < p.g.c_out {
        let left = p.g.c_out - co0;
        let width = if left <= 48 { left } else { 32 };
        let masks = vector_masks(width);
        macro_rules! go {
            ($mr:literal) => {
                match width.div_ceil(16) {
                    1 => block::<$mr, 1, PANELS, Deferred>(p, out, j0, co0, masks, &Deferred),
                    2 => block::<$mr, 2, PANELS, Deferred>(p, out, j0, co0, masks, &Deferred),
                    _ => block::<$mr, 3, PANELS, Deferred>(p, out, j0, co0, masks, &Deferred),
                }
            };
        }
        // SAFETY: forwarded from the caller; blocks stay inside `n` and `c_out`.
        unsafe {
            match mr {
                8 => go!(8),
                7 => go!(7),
                6 => go!(6),
                5 => go!(5),
                4 => go!(4),
                3 => go!(3),
                2 => go!(2),
                _ => go!(1),
            }
        }
        co0 += width;
    }
}

/// A block of 12 outputs from `j0` x 2 vectors of channels from 0 (`masks` the lanes of
/// each): what a layer of 17 to 32 output channels runs where it takes no pair blocks.
///
/// # Safety
/// As `block`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn masked_block(p: Pass, out: *mut f32, j0: usize, masks: [u16; 4]) {
    // SAFETY: forwarded from the caller.
    unsafe { block::<12, 2, true, Deferred>(p, out, j0, 0, masks, &Deferred) }
}

/// The lane masks of `width` (at most 64) channels held in 16-lane vectors.
pub(super) fn vector_masks(width: usize) -> [u16; 4] {
    std::array::from_fn(|v| {
        let w = width.saturating_sub(16 * v);
        if w >= 16 {
            0xffff
        } else {
            (1u16 << w) - 1
        }
    })
}

/// `MR` outputs from `j0` x `16 * NV` output channels from `co0` (lanes past `masks` off),
/// summed over the pass's kernel rows: from zero on the first pass, from the stored partial
/// sums on the later ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn block<const MR: usize, const NV: usize, const PANELS: bool, A: Lanes>(
    p: Pass,
    out: *mut f32,
    j0: usize,
    co0: usize,
    masks: [u16; 4],
    act: &A,
) {
    use std::arch::x86_64::*;
    let g = p.g;
    let op = out;
    // Each output's offset in `out`.
    let at = g.out_offsets::<MR>(j0);
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if !p.first {
        for (i, row) in acc.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm512_maskz_loadu_ps(masks[v], op.add(at[i] + co0 + 16 * v));
            }
        }
    }
    let wp = p.win.as_ptr();
    // Each output's tap-(0, 0) input pixel, computed once per block, stepping along the
    // output rows (divisions by the patch width would otherwise dominate layers with few
    // input channels).
    let origin: [usize; MR] = g.in_offsets::<MR>(j0);
    let load_w = |w: *const f32| -> [__m512; NV] {
        std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], w.add(16 * v)))
    };
    match p.f {
        Filters::Panels { weights, .. } if PANELS => {
            // Every channel in order: the `kw * c_in` terms of a kernel row sit next to each
            // other in the window and in the panel, so they run as one loop (the first RGB
            // layer has only 3 terms per tap).
            let terms = g.kw * g.c_in;
            let (base, width, col) = panel_of(g, PANEL, co0);
            let w_panel = weights.as_ptr().add(base + col);
            // Without a part of the next filters to prefetch, the lines of this block's
            // own (already in cache): one loop for both.
            let (t0, t1) = p.terms.unwrap_or((0, terms));
            let pf = if p.prefetch.is_null() {
                w_panel.add((p.kys.0 * terms + t0) * width)
            } else {
                p.prefetch
            };
            let next_in = if NV < 4 {
                next_block_inputs(p, j0, MR)
            } else {
                std::ptr::null()
            };
            for ky in p.kys.0..p.kys.1 {
                prefetch_block_io::<MR, NV>(p, op, &at, co0, ky);
                let row_in = ky * g.win_w * g.c_in;
                let abase: [*const f32; MR] = std::array::from_fn(|i| wp.add(origin[i] + row_in));
                let w0 = w_panel.add(ky * terms * width);
                let pf_row = pf.wrapping_add((ky - p.kys.0) * (t1 - t0) * 16);
                for t in t0..t1 {
                    if NV == 4 {
                        // Only wide blocks have a next group to prefetch; in narrow blocks
                        // (8 FMAs per term) the instruction would be a load slot for nothing.
                        _mm_prefetch::<_MM_HINT_T0>(pf_row.wrapping_add((t - t0) * 16).cast());
                    } else if !next_in.is_null() {
                        // A narrow 1x1 block: the next block's inputs (see
                        // `next_block_inputs`).
                        _mm_prefetch::<_MM_HINT_T0>(next_in.wrapping_add((t - t0) * 16).cast());
                    }
                    let wv = load_w(w0.add(t * width));
                    for i in 0..MR {
                        let a = _mm512_set1_ps(*abase[i].add(t));
                        for v in 0..NV {
                            acc[i][v] = _mm512_fmadd_ps(a, wv[v], acc[i][v]);
                        }
                    }
                }
            }
        }
        Filters::Rows {
            first,
            rows,
            tap_stride,
            ..
        } => {
            let nb = first.len();
            assert!(rows.len() >= nb);
            let (fp, rp) = (first.as_ptr(), rows.as_ptr());
            if MR == 16 && matches!(g.pw, 4 | 8 | 16) && j0.is_multiple_of(g.pw) {
                assert!(p.terms.is_none(), "row blocks sum whole kernel rows");
                match g.pw {
                    4 => row_block_terms::<MR, NV, 4>(p, &mut acc, origin[0], co0, masks),
                    8 => row_block_terms::<MR, NV, 8>(p, &mut acc, origin[0], co0, masks),
                    _ => row_block_terms::<MR, NV, 16>(p, &mut acc, origin[0], co0, masks),
                }
            } else {
                // A pass sums terms `t0..t1` of each of its kernel rows, term `kx * nb + b`
                // being bucket `b` at tap `kx` (all of them without a term range).
                let row_terms = g.kw * nb;
                let (t0, t1) = p.terms.unwrap_or((0, row_terms));
                for ky in p.kys.0..p.kys.1 {
                    // As the panel blocks: a patch's outputs and residual are lines of the
                    // image that left the cache. ResNet-18 (L = 14, batch 8, one thread, three
                    // rounds alternated): the kernel 19.1-19.7 -> 18.9-19.0 cycles per
                    // channel and window pixel, its layers with a residual 4-8 % faster.
                    prefetch_block_io::<MR, NV>(p, op, &at, co0, ky);
                    let stride = p.prefetch_stride;
                    let pf_row = p.prefetch.wrapping_add((ky - p.kys.0) * (t1 - t0) * stride);
                    for kx in t0 / nb.max(1)..g.kw {
                        let (b0, b1) = (t0.max(kx * nb) - kx * nb, t1.min((kx + 1) * nb));
                        if b1 <= kx * nb {
                            break;
                        }
                        let b1 = b1 - kx * nb;
                        let kk = ky * g.kw + kx;
                        let tap_in = (ky * g.win_w + kx) * g.c_in;
                        let abase: [*const f32; MR] =
                            std::array::from_fn(|i| wp.add(origin[i] + tap_in));
                        let tap_w = kk * tap_stride + co0;
                        let pf = pf_row
                            .wrapping_add(kx * nb * stride)
                            .wrapping_sub(t0 * stride);
                        for b in b0..b1 {
                            if NV == 4 && !p.prefetch.is_null() {
                                prefetch_term(pf, b, stride);
                            }
                            let f = *fp.add(b) as usize;
                            let wv = load_w((*rp.add(b)).add(tap_w));
                            for i in 0..MR {
                                if NV == 4 {
                                    // The slot the intrinsics below read (in the window).
                                    broadcast_fma4!(acc[i], abase[i].add(f), wv);
                                    continue;
                                }
                                let a = _mm512_set1_ps(*abase[i].add(f));
                                for v in 0..NV {
                                    acc[i][v] = _mm512_fmadd_ps(a, wv[v], acc[i][v]);
                                }
                            }
                        }
                    }
                }
            }
        }
        Filters::Panels { .. } => unreachable!("PANELS is set exactly for panel filters"),
    }
    if !PANELS {
        // HASTE's patches: stored and finished from L1 (`examples/patch_kernel` measured
        // the same rates either way; a patch's blocks sum many more terms than a 1x1
        // layer's, so the epilogue weighs less).
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(op.add(at[i] + co0 + 16 * v), masks[v], x);
            }
        }
        if p.last {
            finish_block::<MR, NV>(p.e, op, at, co0, masks);
        }
    } else if !p.last || p.e.is_none() {
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(op.add(at[i] + co0 + 16 * v), masks[v], x);
            }
        }
    } else if A::IN_REGISTERS {
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let at = at[i] + co0 + 16 * v;
                let x = act.apply(p.e.add_avx512(co0 + 16 * v, at, masks[v], x));
                _mm512_mask_storeu_ps(op.add(at), masks[v], x);
            }
        }
    } else {
        // The sums to the stack with whole-vector stores, finished from there: reloaded from
        // `out` after masked stores, they waited for the stores to retire (a masked store
        // does not forward to a load), which cost a 144 -> 24 1x1 layer with a bias and
        // ReLU6 a tenth of its time. (Finished in registers, blocks of 24 sums below 64
        // channels spilled an accumulator in their loop.)
        let mut sums = std::mem::MaybeUninit::<[[__m512; NV]; MR]>::uninit();
        let sp = sums.as_mut_ptr().cast::<f32>();
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                _mm512_storeu_ps(sp.add(16 * (i * NV + v)), x);
            }
        }
        finish_sums::<MR, NV>(p.e, sp, op, at, co0, masks);
    }
}

/// The sums of a block of 16 outputs that are whole rows of `PW` outputs (HASTE's patches of
/// 4, 8 or 16 columns) over row filters: each output's input is its row's address plus
/// `0..PW` steps, so the block needs one address per term, not 16 (which do not fit in
/// registers). The terms in the order of the other blocks (tap, bucket).
///
/// # Safety
/// As [`block`]: the filters are [`Filters::Rows`], the block's outputs lie in the call, the
/// CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn row_block_terms<const MR: usize, const NV: usize, const PW: usize>(
    p: Pass,
    acc: &mut [[std::arch::x86_64::__m512; NV]; MR],
    origin: usize,
    co0: usize,
    masks: [u16; 4],
) {
    use std::arch::x86_64::*;
    let g = p.g;
    let Filters::Rows {
        first,
        rows,
        tap_stride,
        ..
    } = p.f
    else {
        unreachable!("row blocks read row filters")
    };
    let nb = first.len();
    let (fp, rp, wp) = (first.as_ptr(), rows.as_ptr(), p.win.as_ptr());
    let (step, row_step) = (g.sw * g.c_in, g.sh * g.win_w * g.c_in);
    for ky in p.kys.0..p.kys.1 {
        for kx in 0..g.kw {
            let kk = ky * g.kw + kx;
            let rows0 = wp.add(origin + (ky * g.win_w + kx) * g.c_in);
            let tap_w = kk * tap_stride + co0;
            for b in 0..nb {
                let w = (*rp.add(b)).add(tap_w);
                let mut wv = [_mm512_setzero_ps(); NV];
                for (v, x) in wv.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(masks[v], w.add(16 * v));
                }
                let a0 = rows0.add(*fp.add(b) as usize);
                for (i, row) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*a0.add((i / PW) * row_step + (i % PW) * step));
                    for (x, &w) in row.iter_mut().zip(&wv) {
                        *x = _mm512_fmadd_ps(a, w, *x);
                    }
                }
            }
        }
    }
}
