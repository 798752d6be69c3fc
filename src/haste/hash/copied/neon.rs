//! [`super::project_generic`] on NEON: the same fused multiply-adds in the same order per
//! sum, so the same bits, with every sum of a pass in a vector register. The portable loop
//! compiled for aarch64 ran scalar, one multiply-add per channel and entry with each sum
//! loaded from and stored back to the stack (64 sums of four hyperplanes by 16 channels).

use super::passes::{assert_projection_fits, run_projection_passes};
use super::WindowTerms;
use std::arch::aarch64::*;

/// Vector registers a pass's sums may take (of 32): the others hold the loaded vectors and
/// the weight.
const SUMS: usize = 24;

/// Lanes of a vector.
const LANE: usize = 4;

/// The projections of every channel on every hyperplane into `proj` (`lc` rows of `cpad`,
/// zero past `c`). Channels 32 at a time (16 for the last block of fewer), hyperplanes as
/// many at a time as 24 sums allow, in even passes (L = 14 over 32 channels: five passes of
/// three and two; over 16: three of five and four), each to its own lists' longest length.
/// Per entry and hyperplane a pass loads its offset and weight and multiply-adds `NB`
/// vectors by the weight's lane.
///
/// # Safety
/// NEON must be supported (it is on every aarch64 Linux CPU).
#[target_feature(enable = "neon")]
pub(super) unsafe fn project_copied(
    buf: &[f32],
    c: usize,
    cpad: usize,
    t: &WindowTerms,
    lc: usize,
    proj: &mut [f32],
) {
    assert_projection_fits(buf, c, cpad, t, lc, proj);
    run_projection_passes!((buf, c, cpad, t, lc, proj), LANE, SUMS, 8: 1 2 3; 4: 1 2 3 4 5 6);
}

/// Hyperplanes `l0..l0 + H` on channels `ch0..ch0 + 4 * NB`, lanes past `c` zero.
///
/// # Safety
/// As [`project_copied`], whose assertions it relies on; `l0 + H <= t.count`.
#[target_feature(enable = "neon")]
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
    // Lanes of each vector inside `c` (4 but in the last block).
    let lanes: [usize; NB] = std::array::from_fn(|k| c.saturating_sub(ch0 + LANE * k).min(LANE));
    let full = lanes[NB - 1] == LANE;
    let base = buf.as_ptr().add(ch0);
    let (offs, ws) = (t.offs_by_entry.as_ptr(), t.ws_by_entry.as_ptr());
    let mut acc = [[vdupq_n_f32(0.0); NB]; H];
    // The pass's longest list: past a list's own end its entries are zero weights.
    let len = (0..H).map(|h| t.lens[l0 + h]).max().unwrap_or(0);
    for j in 0..len {
        let at = j * t.padded + l0;
        for (h, acc) in acc.iter_mut().enumerate() {
            let p = base.add(*offs.add(at + h) as usize);
            let w = *ws.add(at + h);
            for (k, acc) in acc.iter_mut().enumerate() {
                let x = if full {
                    vld1q_f32(p.add(LANE * k))
                } else {
                    load_lanes(p.add(LANE * k), lanes[k])
                };
                *acc = vfmaq_n_f32(*acc, x, w);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        let row = proj.as_mut_ptr().add((l0 + h) * cpad + ch0);
        for (k, &a) in acc.iter().enumerate() {
            // Lanes past `c` are zero, and `cpad` covers them.
            vst1q_f32(row.add(LANE * k), a);
        }
    }
}

/// The first `n` (0 to 4) floats from `p`, zeros after them: the last block's vectors, which
/// must not read past the window.
///
/// # Safety
/// `p` addresses `n` readable floats.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_lanes(p: *const f32, n: usize) -> float32x4_t {
    let mut v = [0.0f32; LANE];
    // SAFETY: the caller's.
    unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n) };
    // SAFETY: `v` holds four floats.
    unsafe { vld1q_f32(v.as_ptr()) }
}
