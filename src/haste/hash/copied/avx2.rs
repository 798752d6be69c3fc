//! [`super::project_generic`] on AVX2: the same fused multiply-adds in the same order per
//! sum, so the same bits, with every sum of a pass in one of the 16 vector registers.

use super::passes::{assert_projection_fits, run_projection_passes};
use super::WindowTerms;
use std::arch::x86_64::*;

/// Vector registers a pass's sums may take: the others hold the broadcast weight and a
/// loaded vector.
const SUMS: usize = 12;

/// Lanes of a vector.
const LANE: usize = 8;

/// The projections of every channel on every hyperplane into `proj` (`lc` rows of `cpad`,
/// zero past `c`). Channels 32 at a time (16 for the last block of fewer), hyperplanes as
/// many at a time as 12 sums allow, in even passes (L = 14 over 32 channels: five passes of
/// three and two; over 16: three of five and four and five), each to its own lists'
/// longest length. Per entry and hyperplane a pass loads its offset, broadcasts its
/// weight and multiply-adds `NB` vectors: at 32 channels the loads keep pace with the two
/// multiply-adds a cycle, at 16 they set it.
///
/// # Safety
/// AVX2 and FMA must be supported.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn project_copied(
    buf: &[f32],
    c: usize,
    cpad: usize,
    t: &WindowTerms,
    lc: usize,
    proj: &mut [f32],
) {
    assert_projection_fits(buf, c, cpad, t, lc, proj);
    run_projection_passes!((buf, c, cpad, t, lc, proj), LANE, SUMS, 4: 1 2 3; 2: 1 2 3 4 5 6);
}

/// Hyperplanes `l0..l0 + H` on channels `ch0..ch0 + 8 * NB`, masked at `c`.
///
/// # Safety
/// As [`project_copied`], whose assertions it relies on; `l0 + H <= t.count`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn pass<const H: usize, const NB: usize>(
    buf: &[f32],
    c: usize,
    cpad: usize,
    t: &WindowTerms,
    proj: &mut [f32],
    ch0: usize,
    l0: usize,
) {
    let full = c - ch0 >= NB * LANE;
    let masks: [__m256i; NB] = std::array::from_fn(|k| {
        let left = c.saturating_sub(ch0 + LANE * k).min(LANE) as i32;
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(left),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    });
    let base = buf.as_ptr().add(ch0);
    let (offs, ws) = (t.offs_by_entry.as_ptr(), t.ws_by_entry.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); NB]; H];
    // The pass's longest list: past a list's own end its entries are zero weights.
    let len = (0..H).map(|h| t.lens[l0 + h]).max().unwrap_or(0);
    for j in 0..len {
        let at = j * t.padded + l0;
        for (h, acc) in acc.iter_mut().enumerate() {
            let p = base.add(*offs.add(at + h) as usize);
            let w = _mm256_broadcast_ss(&*ws.add(at + h));
            for (k, acc) in acc.iter_mut().enumerate() {
                let x = if full {
                    _mm256_loadu_ps(p.add(LANE * k))
                } else {
                    _mm256_maskload_ps(p.add(LANE * k), masks[k])
                };
                *acc = _mm256_fmadd_ps(x, w, *acc);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        let row = proj.as_mut_ptr().add((l0 + h) * cpad + ch0);
        for (k, &a) in acc.iter().enumerate() {
            // Lanes past `c` are zero (masked loads), and `cpad` covers them.
            _mm256_storeu_ps(row.add(LANE * k), a);
        }
    }
}
