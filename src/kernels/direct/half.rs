//! The AVX-512 kernel's blocks for layers whose output channels end 8 past a multiple of 16
//! (24, 40: the MobileNet family's projections): the last 8 channels in 256-bit vectors.
//!
//! A 24-channel output is one full vector and half of a second. Masked off, the second
//! vector's upper lanes still cost a whole 512-bit multiply-add; on a CPU that runs AVX-512
//! on 256-bit units (Zen 4) a 256-bit multiply-add costs half of one, so a term of 12 outputs
//! costs 18 multiply-adds' time instead of 24. Where 512-bit units run both widths at the
//! same rate it gains nothing, so [`half_pays`] times it once per process. Each output is
//! summed term by term in the same order as the other blocks: the same bits.
//!
//! On the Zen 4 (`examples/one_conv`, 1x1 layers): 144 -> 24 at 60 x 60 310 -> 256 us,
//! 96 -> 24 208 -> 172, 144 -> 40 at 30 x 30 117 -> 94, 240 -> 40 190 -> 154.

use super::blocks::{vector_masks, Pass};
use super::epilogue::finish_sums;
use super::prefetch::{next_block_inputs, prefetch_block_io};
#[cfg(not(test))]
use super::probe::{faster, masked_24, BlockFn};
use super::{panel_of, Filters, PANEL};
#[cfg(not(test))]
use crate::kernels::isa::Isa;

/// Outputs a half block computes for 24 channels (one 512-bit vector and the tail: 24
/// accumulators), and for 40 (two and the tail).
pub(super) const HALF_BLOCK_24: usize = 12;
pub(super) const HALF_BLOCK_40: usize = 8;

/// Whether a call of `c_out` output channels on filters `f` runs half blocks: panel filters
/// of 24 or 40 channels, on a CPU where they are faster.
pub(super) fn takes_half(c_out: usize, f: &Filters) -> bool {
    matches!(f, Filters::Panels { .. }) && matches!(c_out, 24 | 40) && half_pays()
}

/// Whether half blocks run faster on this CPU than masked 512-bit lanes (12 x 2 vector
/// blocks of 24 channels), timed once per process (see [`super::probe`]). Both give the same
/// bits. The unit tests take half blocks unless they turn them off on their thread
/// ([`NO_HALF`]), so that every kind of block runs.
fn half_pays() -> bool {
    #[cfg(test)]
    {
        !NO_HALF.with(|off| off.get())
    }
    #[cfg(not(test))]
    {
        static PAY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *PAY.get_or_init(|| {
            let half = (half_block::<HALF_BLOCK_24, 1> as BlockFn, HALF_BLOCK_24);
            let masked = (masked_24 as BlockFn, 12);
            // SAFETY: the probe runs only where the tier is supported.
            Isa::current() == Isa::Avx512 && unsafe { faster(24, half, masked) }
        })
    }
}

#[cfg(test)]
thread_local! {
    /// Unit tests: this thread's calls run the other blocks where they would take half ones.
    pub(super) static NO_HALF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `MR` outputs from `j0` x `16 * NZ + 8` output channels (every channel of the call),
/// summed over the pass's kernel rows; finished on the last pass.
///
/// # Safety
/// As the other blocks: the filters are panel filters holding every weight, the block's
/// outputs lie in the call, the window holds every input they read, and the CPU supports
/// AVX-512F.
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn half_block<const MR: usize, const NZ: usize>(
    p: Pass,
    out: *mut f32,
    j0: usize,
) {
    use std::arch::x86_64::*;
    let g = p.g;
    let Filters::Panels { weights, .. } = p.f else {
        unreachable!("half blocks run panel filters")
    };
    debug_assert_eq!(g.c_out, 16 * NZ + 8);
    let at = g.out_offsets::<MR>(j0);
    let mut acc = [[_mm512_setzero_ps(); NZ]; MR];
    let mut tail = [_mm256_setzero_ps(); MR];
    if !p.first {
        for i in 0..MR {
            for (v, x) in acc[i].iter_mut().enumerate() {
                *x = _mm512_loadu_ps(out.add(at[i] + 16 * v));
            }
            tail[i] = _mm256_loadu_ps(out.add(at[i] + 16 * NZ));
        }
    }
    let wp = p.win.as_ptr();
    let origin: [usize; MR] = g.in_offsets::<MR>(j0);
    let terms = g.kw * g.c_in;
    let (base, width, _) = panel_of(g, PANEL, 0);
    let w_panel = weights.as_ptr().add(base);
    let (t0, t1) = p.terms.unwrap_or((0, terms));
    // A 1x1 layer's next block's inputs, a line per term (see `next_block_inputs`).
    let next_in = next_block_inputs(p, j0, MR);
    for ky in p.kys.0..p.kys.1 {
        prefetch_block_io::<MR, 2>(p, out, &at, 0, ky);
        let row_in = ky * g.win_w * g.c_in;
        let a: [*const f32; MR] = std::array::from_fn(|i| wp.add(origin[i] + row_in));
        let w0 = w_panel.add(ky * terms * width);
        for t in t0..t1 {
            if !next_in.is_null() {
                _mm_prefetch::<_MM_HINT_T0>(next_in.wrapping_add((t - t0) * 16).cast());
            }
            let w = w0.add(t * width);
            let wz: [__m512; NZ] = std::array::from_fn(|v| _mm512_loadu_ps(w.add(16 * v)));
            let wy = _mm256_loadu_ps(w.add(16 * NZ));
            for i in 0..MR {
                let x = _mm512_set1_ps(*a[i].add(t));
                for v in 0..NZ {
                    acc[i][v] = _mm512_fmadd_ps(x, wz[v], acc[i][v]);
                }
                tail[i] = _mm256_fmadd_ps(_mm512_castps512_ps256(x), wy, tail[i]);
            }
        }
    }
    if !p.last || p.e.is_none() {
        for i in 0..MR {
            for (v, &x) in acc[i].iter().enumerate() {
                _mm512_storeu_ps(out.add(at[i] + 16 * v), x);
            }
            _mm256_storeu_ps(out.add(at[i] + 16 * NZ), tail[i]);
        }
        return;
    }
    // Finished from the stack, as `block`'s narrow blocks are: each output's vectors, the
    // tail widened with zeros.
    let mut sums = std::mem::MaybeUninit::<[[__m512; 4]; MR]>::uninit();
    let sp = sums.as_mut_ptr().cast::<f32>();
    for i in 0..MR {
        for (v, &x) in acc[i].iter().enumerate() {
            _mm512_storeu_ps(sp.add(16 * (i * (NZ + 1) + v)), x);
        }
        let x = _mm512_zextps256_ps512(tail[i]);
        _mm512_storeu_ps(sp.add(16 * (i * (NZ + 1) + NZ)), x);
    }
    let masks = vector_masks(g.c_out);
    match NZ {
        1 => finish_sums::<MR, 2>(p.e, sp, out, at, 0, masks),
        _ => finish_sums::<MR, 3>(p.e, sp, out, at, 0, masks),
    }
}
