//! The AVX-512 kernel's blocks for layers of 17 to 24 output channels (the MobileNet
//! family's projections to 24): the channels past the first 16 of two outputs share one
//! vector.
//!
//! A 24-channel output is one full vector and half of a second. In blocks of 12 outputs x 2
//! vectors a third of the second vector's lanes are masked off: `examples/one_conv` ran
//! 144 -> 24 in the same time as 144 -> 32, at 68 % of the peak in useful work. Here the
//! second vector holds channels 16.. of output `2j` in its lanes 0-7 and of output `2j + 1`
//! in lanes 8-15: per term, the two outputs' broadcast inputs are blended into one vector
//! (one blend for two outputs) and multiplied by the weights of channels 16.. repeated in
//! both halves. 18 multiply-adds and 6 blends a term instead of 24 multiply-adds. Each
//! output is still summed term by term in the same order: the same bits.

use super::blocks::{vector_masks, Pass};
use super::epilogue::finish_block;
use super::panel_terms::PanelTerms;
use super::prefetch::prefetch_block_io;
#[cfg(not(test))]
use super::probe::{faster, masked_24, BlockFn};
use super::Filters;
#[cfg(not(test))]
use crate::kernels::isa::Isa;

/// Outputs a pair block computes (six pairs).
pub(super) const PAIR_BLOCK: usize = 12;

/// Whether a call of `c_out` output channels on filters `f` runs pair blocks: panel filters
/// of 17 to 24 channels, on a CPU where they are faster (see [`pairs_pay`]).
pub(super) fn takes_pairs(c_out: usize, f: &Filters) -> bool {
    matches!(f, Filters::Panels { .. }) && (17..=24).contains(&c_out) && pairs_pay()
}

/// Whether pair blocks run faster on this CPU than blocks of 12 outputs x 2 vectors with a
/// third of the lanes masked off, measured once per process (about a millisecond).
///
/// A pair block trades six multiply-adds for six blends, which pays only where a blend does
/// not take a multiply-add's slot. On a Zen 5 it does not, and the 24-channel projections ran
/// faster in pairs; on a Zen 4 (AVX-512 on 256-bit units) the masked blocks ran 144 -> 24 at
/// 1 x 1 and 60 x 60 in 309 us against the pairs' 340 (`examples/one_conv`), and Intel's
/// cores run blends on the ports of their 512-bit multiply-adds. Both give the same bits, so
/// the choice changes the time only. The unit tests take pairs unless they turn them off on
/// their thread ([`NO_PAIRS`]), so that both kinds of block run.
fn pairs_pay() -> bool {
    #[cfg(test)]
    {
        !NO_PAIRS.with(|off| off.get())
    }
    #[cfg(not(test))]
    {
        static PAY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // SAFETY: the probe runs only where the tier is supported.
        *PAY.get_or_init(|| {
            let (pairs, masked) = (
                (pair_block as BlockFn, PAIR_BLOCK),
                (masked_24 as BlockFn, 12),
            );
            Isa::current() == Isa::Avx512 && unsafe { faster(24, pairs, masked) }
        })
    }
}

#[cfg(test)]
thread_local! {
    /// Unit tests: this thread's calls run masked blocks where they would take pairs.
    pub(super) static NO_PAIRS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`PAIR_BLOCK`] outputs from `j0`, every output channel (17 to 24), summed over the pass's
/// kernel rows; stored, and finished on the last pass.
///
/// # Safety
/// As the other blocks: the filters are panel filters holding every weight, the block's
/// outputs lie in the call, the window holds every input they read, and the CPU supports
/// AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn pair_block(p: Pass, out: *mut f32, j0: usize) {
    use std::arch::x86_64::*;
    const MR: usize = PAIR_BLOCK;
    let g = p.g;
    let tail = g.c_out - 16;
    // The tail's lanes for the first output of a pair, and for the second.
    let low: u16 = (1 << tail) - 1;
    let high: u16 = low << 8;
    let at = g.out_offsets::<MR>(j0);
    // The second output's tail is stored from 8 floats before it, so lanes 8.. land on it.
    let second = |j: usize| at[2 * j + 1] + 8;
    let mut acc = [_mm512_setzero_ps(); MR];
    let mut pairs = [_mm512_setzero_ps(); MR / 2];
    if !p.first {
        for (x, &o) in acc.iter_mut().zip(&at) {
            *x = _mm512_loadu_ps(out.add(o));
        }
        for (j, x) in pairs.iter_mut().enumerate() {
            let first = _mm512_maskz_loadu_ps(low, out.add(at[2 * j] + 16));
            *x = _mm512_mask_loadu_ps(first, high, out.add(second(j)));
        }
    }
    let pt = PanelTerms::<MR>::new(p, j0);
    for ky in p.kys.0..p.kys.1 {
        prefetch_block_io::<MR, 2>(p, out, &at, 0, ky);
        let (a, w0) = pt.row(ky);
        for t in pt.t0..pt.t1 {
            pt.prefetch_next(t);
            let w = w0.add(t * pt.width);
            let head = _mm512_loadu_ps(w);
            // Channels 16.. in lanes 0-7, repeated in lanes 8-15.
            let rest = _mm512_maskz_loadu_ps(low, w.add(16));
            let rest = _mm512_shuffle_f32x4::<0x44>(rest, rest);
            for j in 0..MR / 2 {
                let x0 = _mm512_set1_ps(*a[2 * j].add(t));
                let x1 = _mm512_set1_ps(*a[2 * j + 1].add(t));
                acc[2 * j] = _mm512_fmadd_ps(x0, head, acc[2 * j]);
                acc[2 * j + 1] = _mm512_fmadd_ps(x1, head, acc[2 * j + 1]);
                let both = _mm512_mask_blend_ps(0xff00, x0, x1);
                pairs[j] = _mm512_fmadd_ps(both, rest, pairs[j]);
            }
        }
    }
    for (&x, &o) in acc.iter().zip(&at) {
        _mm512_storeu_ps(out.add(o), x);
    }
    for (j, &x) in pairs.iter().enumerate() {
        _mm512_mask_storeu_ps(out.add(at[2 * j] + 16), low, x);
        _mm512_mask_storeu_ps(out.add(second(j)), high, x);
    }
    if p.last {
        finish_block::<MR, 2>(p.e, out, at, 0, vector_masks(g.c_out));
    }
}
