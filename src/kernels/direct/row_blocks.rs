//! The AVX-512 kernel's row blocks of narrow layers: up to 32 output channels whose
//! neighbouring outputs read inputs a constant number of floats apart (the RGB stems, 16-
//! and 32-channel inputs), 16 or 8 outputs of one row at a time.

use super::blocks::{narrow_blocks, vector_masks, Pass};
use super::epilogue::{with_lanes, Lanes};
use super::prefetch::{next_block_inputs, prefetch_block_io};
use super::Filters;

/// Every output of a narrow layer (at most 32 output channels) whose neighbouring outputs
/// read inputs `S` floats apart (`sw * c_in == S`), row by row: [`row_block`]s of 16
/// outputs (up to 16 channels) or of 8 (up to 32), the rest of each row as [`super::blocks`]' blocks of up
/// to 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn row_blocks<const S: usize>(p: Pass, out: *mut f32) {
    // The activation chosen once per call, not in every block: dispatched inside a block, its
    // arms kept the 16 accumulators on the stack (zeroed there, stored and reloaded around
    // the epilogue), which cost a fifth of a 32 -> 16 1x1 layer's time (a block is 512
    // multiply-adds).
    // SAFETY: forwarded from the caller.
    with_lanes!(p.e.activation, act => unsafe { rows_with::<S, _>(p, out, &act) })
}

/// [`row_blocks`] with the activation `act`.
///
/// # Safety
/// As [`row_blocks`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn rows_with<const S: usize, A: Lanes>(p: Pass, out: *mut f32, act: &A) {
    let g = p.g;
    let [m0, m1, ..] = vector_masks(g.c_out);
    let masks = [m0, m1];
    for oy in 0..g.ph {
        let (mut j, end) = (oy * g.pw, (oy + 1) * g.pw);
        // SAFETY (every block): forwarded from the caller; each block stays in its row.
        if g.c_out <= 16 {
            while end - j >= 16 {
                unsafe { row_block::<16, 1, S, A>(p, out, (oy, j - oy * g.pw), masks, act) };
                j += 16;
            }
        } else {
            // Not 12 (24 accumulators): LLVM then kept the accumulators in memory too,
            // storing all of them on every term (half speed).
            while end - j >= 8 {
                unsafe { row_block::<8, 2, S, A>(p, out, (oy, j - oy * g.pw), masks, act) };
                j += 8;
            }
        }
        while j < end {
            let mr = (end - j).min(8);
            unsafe { narrow_blocks::<true>(p, out, j, mr, 0) };
            j += mr;
        }
    }
}

/// `MR` outputs from `(oy, ox)`, all in one output row, x `16 * NV` output channels (lanes past
/// `masks` off), for layers whose neighbouring outputs read inputs `S` floats apart. With
/// that distance a constant, each output's input is one address plus a constant offset, so
/// 16 outputs fit in registers; [`block`] keeps one address register per output, and
/// beyond 8 they spilled (16 -> 16 layers ran at 87-93 GFLOP/s on one core in blocks of 8,
/// 100-106 in these). Same sums, in the same order, as [`block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn row_block<const MR: usize, const NV: usize, const S: usize, A: Lanes>(
    p: Pass,
    out: *mut f32,
    (oy, ox): (usize, usize),
    masks: [u16; 2],
    act: &A,
) {
    use std::arch::x86_64::*;
    let g = p.g;
    let Filters::Panels { weights, .. } = p.f else {
        unreachable!("row blocks run panel filters")
    };
    // Every output in one row: offsets a pixel apart, no division per block (with 32
    // input channels a block is 512 multiply-adds, and its set-up weighs).
    let first = (oy * g.out_w + ox) * g.out_stride;
    let at: [usize; MR] = std::array::from_fn(|i| first + i * g.out_stride);
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if !p.first {
        for (row, &o) in acc.iter_mut().zip(&at) {
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm512_maskz_loadu_ps(masks[v], out.add(o + 16 * v));
            }
        }
    }
    let origin = (oy * g.sh * g.win_w + ox * g.sw) * g.c_in;
    let (terms, width) = (g.kw * g.c_in, g.c_out);
    let (t0, t1) = p.terms.unwrap_or((0, terms));
    // A 1x1 layer's next block's inputs, a line per term (see `next_block_inputs`).
    let next_in = next_block_inputs(p, oy * g.pw + ox, MR);
    for ky in p.kys.0..p.kys.1 {
        prefetch_block_io::<MR, NV>(p, out, &at, 0, ky);
        let a = p.win.as_ptr().add(origin + ky * g.win_w * g.c_in);
        let w0 = weights.as_ptr().add(ky * terms * width);
        for t in t0..t1 {
            if !next_in.is_null() {
                _mm_prefetch::<_MM_HINT_T0>(next_in.wrapping_add((t - t0) * 16).cast());
            }
            let w = w0.add(t * width);
            let wv: [__m512; NV] =
                std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], w.add(16 * v)));
            let a_t = a.add(t);
            for (i, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a_t.add(i * S));
                for (v, acc) in row.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(x, wv[v], *acc);
                }
            }
        }
    }
    if !p.last {
        for (row, &o) in acc.iter().zip(&at) {
            for (v, x) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add(o + 16 * v), masks[v], *x);
            }
        }
        return;
    }
    // The epilogue in registers (at most 16 accumulators here, so its constants fit beside
    // them; `finish_block` reloads a stored block instead).
    for (row, &o) in acc.iter().zip(&at) {
        for (v, &x) in row.iter().enumerate() {
            let x = act.apply(p.e.add_avx512(16 * v, o + 16 * v, masks[v], x));
            _mm512_mask_storeu_ps(out.add(o + 16 * v), masks[v], x);
        }
    }
}
