//! The AVX-512 kernel's last 64-channel group and a narrow tail of panel filters as one block
//! (96 = 64 + 32 output channels in blocks of 4 outputs x 96, 80 = 64 + 16 in blocks of 5 x 80).
//!
//! A tail of up to 32 channels past the last full group ran as its own blocks of 8 outputs x
//! 1 or 2 vectors: each term loaded 8 input values for 8 or 16 multiply-adds, where a 6 x 64
//! block loads 6 for 24. So a third of a 16 -> 96 expansion's work took 39 % of its time
//! (`perf` on `examples/one_conv`). Joined to the group before it, the tail's vectors share
//! that group's broadcasts: 4 x 6 and 5 x 5 blocks load 10 values for 24 or 25
//! multiply-adds. The sums are the same, term by term, as the separate blocks': the same bits.

use super::blocks::Pass;
use super::epilogue::{with_lanes, Lanes};
use super::prefetch::prefetch_block_io;
use super::{panel_of, Filters, PANEL};

/// Vectors of the tail joined to the last 64-channel group, if this call takes joined
/// blocks: panel filters of more than 64 output channels whose last panel holds 1 to 32.
pub(super) fn joined_tail(c_out: usize, f: &Filters) -> Option<usize> {
    let tail = c_out % PANEL;
    let panels = matches!(f, Filters::Panels { width: PANEL, .. });
    (panels && c_out > PANEL && (1..=32).contains(&tail)).then(|| tail.div_ceil(16))
}

/// Every output of the call for the last full group (`co0`) and the tail (`extra` vectors),
/// in blocks of 5 outputs (1 extra vector) or 4 (2), the last block smaller.
///
/// # Safety
/// As [`super::blocks::avx512_at`]'s blocks; the filters are panels with such a tail.
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn joined_blocks(p: Pass, out: *mut f32, co0: usize, extra: usize) {
    // The activation chosen once per call (as the row blocks do), so that each block
    // finishes its sums in registers: stored, reloaded and finished by `finish_block`, a
    // bias and ReLU6 cost a 16 -> 96 expansion (16 terms a block) a fifth of its time.
    // SAFETY: forwarded from the caller.
    with_lanes!(p.e.activation, act => unsafe { joined_with(p, out, co0, extra, &act) })
}

/// [`joined_blocks`] with the activation `act`.
///
/// # Safety
/// As [`joined_blocks`].
#[target_feature(enable = "avx512f,fma")]
unsafe fn joined_with<A: Lanes>(p: Pass, out: *mut f32, co0: usize, extra: usize, act: &A) {
    let n = p.g.ph * p.g.pw;
    let tail = p.g.c_out - co0 - PANEL;
    let mask = if tail.is_multiple_of(16) {
        0xffff
    } else {
        (1u16 << (tail % 16)) - 1
    };
    let mr_full = if extra == 1 { 5 } else { 4 };
    let mut j0 = 0;
    // SAFETY (every block): forwarded from the caller; each block stays inside `n`.
    while j0 < n {
        let mr = (n - j0).min(mr_full);
        macro_rules! go {
            ($nv:literal) => {
                match mr {
                    5 => joined_block::<5, $nv, A>(p, out, j0, (co0, mask), act),
                    4 => joined_block::<4, $nv, A>(p, out, j0, (co0, mask), act),
                    3 => joined_block::<3, $nv, A>(p, out, j0, (co0, mask), act),
                    2 => joined_block::<2, $nv, A>(p, out, j0, (co0, mask), act),
                    _ => joined_block::<1, $nv, A>(p, out, j0, (co0, mask), act),
                }
            };
        }
        unsafe {
            if extra == 1 {
                go!(5)
            } else {
                go!(6)
            }
        }
        j0 += mr;
    }
}

/// `MR` outputs from `j0` x the 64 channels from `co0` and the `NV - 4` vectors of the tail
/// after them (the last one's lanes past `mask` off), summed over the pass's kernel rows and
/// terms in the order of [`super::blocks`]' blocks.
///
/// # Safety
/// As [`joined_blocks`].
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn joined_block<const MR: usize, const NV: usize, A: Lanes>(
    p: Pass,
    out: *mut f32,
    j0: usize,
    (co0, mask): (usize, u16),
    act: &A,
) {
    use std::arch::x86_64::*;
    let g = p.g;
    let Filters::Panels { weights, .. } = p.f else {
        unreachable!("joined blocks read panel filters")
    };
    let masks: [u16; NV] = std::array::from_fn(|v| if v + 1 == NV { mask } else { 0xffff });
    let at = g.out_offsets::<MR>(j0);
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if !p.first {
        for (row, &o) in acc.iter_mut().zip(&at) {
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm512_maskz_loadu_ps(masks[v], out.add(o + co0 + 16 * v));
            }
        }
    }
    let terms = g.kw * g.c_in;
    // The group's panel (64 wide) and the tail's (`tail` wide), each at term 0 of kernel row 0.
    let (base, _, _) = panel_of(g, PANEL, co0);
    let (tail_base, tail, _) = panel_of(g, PANEL, co0 + PANEL);
    let (w_group, w_tail) = (weights.as_ptr().add(base), weights.as_ptr().add(tail_base));
    assert!(weights.len() >= tail_base + g.kh * terms * tail);
    let origin: [usize; MR] = g.in_offsets::<MR>(j0);
    let (t0, t1) = p.terms.unwrap_or((0, terms));
    for ky in p.kys.0..p.kys.1 {
        prefetch_block_io::<MR, NV>(p, out, &at, co0, ky);
        let row_in = ky * g.win_w * g.c_in;
        let a: [*const f32; MR] = std::array::from_fn(|i| p.win.as_ptr().add(origin[i] + row_in));
        let (wg, wt) = (
            w_group.add(ky * terms * PANEL),
            w_tail.add(ky * terms * tail),
        );
        for t in t0..t1 {
            let (g_row, t_row) = (wg.add(t * PANEL), wt.add(t * tail));
            let w: [__m512; NV] = std::array::from_fn(|v| {
                if v < 4 {
                    _mm512_loadu_ps(g_row.add(16 * v))
                } else {
                    _mm512_maskz_loadu_ps(masks[v], t_row.add(16 * (v - 4)))
                }
            });
            for (row, a) in acc.iter_mut().zip(&a) {
                let x = _mm512_set1_ps(*a.add(t));
                for (acc, &w) in row.iter_mut().zip(&w) {
                    *acc = _mm512_fmadd_ps(x, w, *acc);
                }
            }
        }
    }
    for (row, &o) in acc.iter().zip(&at) {
        for (v, &x) in row.iter().enumerate() {
            let at = o + co0 + 16 * v;
            // The last pass finishes the sums here: the bias of their channels (the tail's
            // follow the group's), the residual, the activation.
            let x = if p.last {
                act.apply(p.e.add_avx512(co0 + 16 * v, at, masks[v], x))
            } else {
                x
            };
            _mm512_mask_storeu_ps(out.add(at), masks[v], x);
        }
    }
}
