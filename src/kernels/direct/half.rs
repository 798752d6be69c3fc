//! The AVX-512 kernel's blocks for layers whose output channels end 8 past a multiple of 16
//! (24, 40: the MobileNet family's projections): the last 8 channels in 256-bit vectors.
//!
//! A 24-channel output is one full vector and half of a second. Masked off, the second
//! vector's upper lanes still cost a whole 512-bit multiply-add; on a CPU that runs AVX-512
//! on 256-bit units (Zen 4) a 256-bit multiply-add costs half of one, so a term of 12 outputs
//! costs 18 multiply-adds' time instead of 24. Where 512-bit units run both widths at the
//! same rate it costs nothing (the same instructions, one for one). Each output is summed
//! term by term in the same order as the other blocks: the same bits.
//!
//! On the Zen 4 (`examples/one_conv`, 1x1 layers): 144 -> 24 at 60 x 60 310 -> 256 us,
//! 96 -> 24 208 -> 172, 144 -> 40 at 30 x 30 117 -> 94, 240 -> 40 190 -> 154.

use super::blocks::{vector_masks, Pass};
use super::epilogue::finish_sums;
use super::panel_terms::PanelTerms;
use super::prefetch::prefetch_block_io;
use super::Filters;

/// Outputs a half block computes for 24 channels (one 512-bit vector and the tail: 24
/// accumulators), and for 40 (two and the tail).
pub(super) const HALF_BLOCK_24: usize = 12;
pub(super) const HALF_BLOCK_40: usize = 8;

/// Whether a call of `c_out` output channels on filters `f` runs half blocks: panel filters
/// of 24 or 40 channels (see [`half_pays`]).
pub(super) fn takes_half(c_out: usize, f: &Filters) -> bool {
    matches!(f, Filters::Panels { .. }) && matches!(c_out, 24 | 40) && half_pays()
}

/// Whether half blocks run: always on the AVX-512 tier, but in unit tests that turn them off
/// on their thread ([`NO_HALF`], so that the masked and pair blocks run too). They issue the
/// masked blocks' instructions, one for one, with a 256-bit multiply-add and load where the
/// masked block has a 512-bit one with 8 lanes off, so no CPU runs them slower. (Timed
/// against the masked blocks once per process, as the pair blocks are, one process in 15-20
/// kept the masked blocks on this VM: in its slow spells the two ran within 3 %.)
fn half_pays() -> bool {
    #[cfg(test)]
    {
        !NO_HALF.with(|off| off.get())
    }
    #[cfg(not(test))]
    {
        true
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
    let pt = PanelTerms::<MR>::new(p, j0);
    for ky in p.kys.0..p.kys.1 {
        prefetch_block_io::<MR, 2>(p, out, &at, 0, ky);
        let (a, w0) = pt.row(ky);
        for t in pt.t0..pt.t1 {
            pt.prefetch_next(t);
            let w = w0.add(t * pt.width);
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
