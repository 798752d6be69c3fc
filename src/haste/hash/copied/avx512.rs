//! [`super::project_generic`] on AVX-512.

use super::{WindowTerms, GROUP, LANES};
use std::arch::x86_64::*;

/// [`super::project_generic`]: `NB` vectors of channels and `H` hyperplanes per pass
/// (`NB * H` independent sums in registers: 8 hyperplanes for one vector, 4 for more),
/// masked past `c`; the same fused multiply-adds in the same order per sum.
///
/// # Safety
/// AVX-512F must be supported.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn project_copied(
    buf: &[f32],
    c: usize,
    cpad: usize,
    t: &WindowTerms,
    lc: usize,
    proj: &mut [f32],
) {
    assert!(proj.len() >= lc * cpad && lc == t.count && t.padded.is_multiple_of(GROUP));
    assert!(t.max_off + c <= buf.len());
    let mut ch0 = 0;
    while ch0 < c {
        // SAFETY: forwarded; every offset plus `c` lies inside `buf`, and every row of
        // `proj` holds `cpad` values (asserted).
        unsafe {
            let blocks = (c - ch0).div_ceil(LANES);
            let h = if blocks == 1 { 8 } else { 4 };
            for l0 in (0..t.padded).step_by(h) {
                if l0 >= lc {
                    break;
                }
                let full = (c - ch0).is_multiple_of(LANES) || c - ch0 > 4 * LANES;
                // The last pass as narrow as the hyperplanes left allow (L = 14 in
                // passes of 4: 4, 4, 4, 2): a padded hyperplane's sums are work for
                // nothing.
                let half = lc - l0 <= h / 2;
                macro_rules! pass {
                    ($h:literal, $nb:literal) => {
                        if full {
                            pass::<$h, $nb, true>(buf, c, cpad, t, proj, ch0, l0)
                        } else {
                            pass::<$h, $nb, false>(buf, c, cpad, t, proj, ch0, l0)
                        }
                    };
                }
                match (blocks, half) {
                    (1, false) => pass!(8, 1),
                    (1, true) => pass!(4, 1),
                    (2, false) => pass!(4, 2),
                    (2, true) => pass!(2, 2),
                    (3, false) => pass!(4, 3),
                    (3, true) => pass!(2, 3),
                    (_, false) => pass!(4, 4),
                    (_, true) => pass!(2, 4),
                }
            }
        }
        ch0 += 4 * LANES;
    }
}

/// Hyperplanes `l0..l0 + H` (rows past the real count are not stored) on channels
/// `ch0..ch0 + 16 * NB` (masked at `c`; `FULL` when all `16 * NB` are below it).
///
/// # Safety
/// As [`project_copied`], whose assertions it relies on.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn pass<const H: usize, const NB: usize, const FULL: bool>(
    buf: &[f32],
    c: usize,
    cpad: usize,
    t: &WindowTerms,
    proj: &mut [f32],
    ch0: usize,
    l0: usize,
) {
    let masks: [u16; NB] = std::array::from_fn(|k| {
        let left = c.saturating_sub(ch0 + LANES * k).min(LANES);
        ((1u32 << left) - 1) as u16
    });
    let base = buf.as_ptr().add(ch0);
    let lists: [(&[u32], &[f32]); H] = std::array::from_fn(|h| t.terms(l0 + h));
    let mut acc = [[_mm512_setzero_ps(); NB]; H];
    // The group's longest list: past a list's own end its entries are zero weights.
    let len = (0..H).map(|h| t.lens[l0 + h]).max().unwrap_or(0);
    for j in 0..len {
        for h in 0..H {
            let (offs, ws) = lists[h];
            let p = base.add(*offs.get_unchecked(j) as usize);
            let wv = _mm512_set1_ps(*ws.get_unchecked(j));
            for k in 0..NB {
                // Full vectors without a mask (`FULL`): a masked load may cost one more
                // uop on the ports the multiply-adds use.
                let x = if FULL {
                    _mm512_loadu_ps(p.add(LANES * k))
                } else {
                    _mm512_maskz_loadu_ps(masks[k], p.add(LANES * k))
                };
                acc[h][k] = _mm512_fmadd_ps(x, wv, acc[h][k]);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        if l0 + h >= t.count {
            break;
        }
        let row = proj.as_mut_ptr().add((l0 + h) * cpad + ch0);
        for (k, &a) in acc.iter().enumerate() {
            // Lanes past `c` are zero (masked loads), and `cpad` covers them.
            _mm512_storeu_ps(row.add(LANES * k), a);
        }
    }
}
