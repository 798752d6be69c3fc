//! The projections that keep their sums in registers (AVX2, NEON): which channels and
//! hyperplanes each pass sums, and the dispatch of those passes to a tier's `pass::<H, NB>`.

use super::{WindowTerms, LANES};

/// What the projections that keep their sums in registers (AVX2, NEON) rely on: `proj` holds
/// `lc` rows of `cpad >= c` (rounded to 16) values, the entry-major terms are complete, and
/// every offset plus `c` lies inside `buf`.
pub(super) fn assert_projection_fits(
    buf: &[f32],
    c: usize,
    cpad: usize,
    t: &WindowTerms,
    lc: usize,
    proj: &[f32],
) {
    assert!(proj.len() >= lc * cpad && lc == t.count && lc <= t.padded);
    assert!(t.offs_by_entry.len() == t.len * t.padded && t.ws_by_entry.len() == t.len * t.padded);
    assert!(t.max_off + c <= buf.len() && cpad >= c.next_multiple_of(LANES));
}

/// Runs every pass of [`projection_passes`] through a tier's `pass::<H, NB>(buf, c, cpad,
/// t, proj, ch0, l0)`, for channel blocks of `wide` vectors (`H` up to the first list)
/// and of `narrow` (up to the second). Expanded in a tier's module beside this one.
macro_rules! run_projection_passes {
    (
        ($buf:expr, $c:expr, $cpad:expr, $t:expr, $lc:expr, $proj:expr),
        $lane:expr, $sums:expr,
        $wide:literal: $($hw:literal)+;
        $narrow:literal: $($hn:literal)+
    ) => {
        let plan = super::passes::projection_passes(($c, $lc), $lane, ($wide, $narrow), $sums);
        for super::passes::ProjectionPass { ch0, nb, l0, h } in plan {
            let (buf, c, cpad, t, proj) = ($buf, $c, $cpad, $t, &mut *$proj);
            // SAFETY: the tier's `project_copied` asserted what its passes rely on
            // (`assert_projection_fits`), and `l0 + h <= lc`.
            unsafe {
                if nb == $wide {
                    match h {
                        $($hw => pass::<$hw, $wide>(buf, c, cpad, t, proj, ch0, l0),)+
                        _ => unreachable!("at most {} sums", $sums),
                    }
                } else {
                    match h {
                        $($hn => pass::<$hn, $narrow>(buf, c, cpad, t, proj, ch0, l0),)+
                        _ => unreachable!("at most {} sums", $sums),
                    }
                }
            }
        }
    };
}
pub(super) use run_projection_passes;

/// One pass of a vector projection that keeps its sums in registers (AVX2, NEON): channels
/// `ch0..` in `nb` vectors, hyperplanes `l0..l0 + h`.
#[derive(Clone, Copy, Debug)]
pub(super) struct ProjectionPass {
    pub ch0: usize,
    pub nb: usize,
    pub l0: usize,
    pub h: usize,
}

/// The passes of such a projection over `c` channels and `lc` hyperplanes: channel blocks of
/// `wide` vectors of `lane` lanes while that many channels are left, else of `narrow`; each
/// block's hyperplanes in even passes of at most `sums / nb` (L = 14 at 12 sums of 4
/// vectors: 3, 3, 3, 3, 2), since a pass runs to its lists' longest length and an uneven
/// split pads more.
pub(super) fn projection_passes(
    (c, lc): (usize, usize),
    lane: usize,
    (wide, narrow): (usize, usize),
    sums: usize,
) -> impl Iterator<Item = ProjectionPass> {
    let (mut ch0, mut l0) = (0, 0);
    std::iter::from_fn(move || {
        if ch0 >= c || lc == 0 {
            return None;
        }
        let nb = if c - ch0 >= wide * lane { wide } else { narrow };
        let passes = (lc - l0).div_ceil(sums / nb);
        let h = (lc - l0).div_ceil(passes);
        let pass = ProjectionPass { ch0, nb, l0, h };
        l0 += h;
        if l0 == lc {
            (ch0, l0) = (ch0 + nb * lane, 0);
        }
        Some(pass)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every channel and hyperplane in exactly one pass, no pass over its sums, and the
    /// hyperplanes of a block split evenly.
    #[test]
    fn projection_passes_cover_every_sum_once() {
        for c in 1..=80 {
            for lc in 1..=20 {
                let mut seen = vec![0u8; c * lc];
                let mut by_block: Vec<(usize, Vec<usize>)> = Vec::new();
                for p in projection_passes((c, lc), 8, (4, 2), 12) {
                    assert!(p.nb * p.h <= 12 && p.h > 0, "{p:?}");
                    assert!(p.nb == 4 || c - p.ch0 < 32, "{p:?}");
                    for ch in p.ch0..(p.ch0 + 8 * p.nb).min(c) {
                        for l in p.l0..p.l0 + p.h {
                            seen[ch * lc + l] += 1;
                        }
                    }
                    match by_block.last_mut() {
                        Some((ch0, hs)) if *ch0 == p.ch0 => hs.push(p.h),
                        _ => by_block.push((p.ch0, vec![p.h])),
                    }
                }
                assert!(seen.iter().all(|&n| n == 1), "c {c}, L {lc}");
                for (_, hs) in by_block {
                    let (lo, hi) = (hs.iter().min(), hs.iter().max());
                    assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{hs:?}");
                }
            }
        }
    }
}
