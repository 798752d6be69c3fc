//! Which part of a row-filter call's `ahead` (the filters the next call reads, see
//! [`super::Filters::Rows`]) each register block prefetches while it sums, on every tier
//! whose blocks prefetch it (the AVX-512 wide blocks, the 16-channel tiers' blocks).

use super::Geom;

/// Floats in a cache line.
const LINE: usize = 16;

/// The part of `ahead` that block `index` of the `blocks` each pass of a call runs (in the
/// order they run) prefetches, and how many floats of it per term (whole lines), or null
/// once `ahead` is covered. The pass sums kernel rows `kys` (of the call's `g.kys`), each
/// of `row_terms` terms, or only terms `terms` of them.
///
/// A HASTE patch of a wide layer reads every row of its filter panel, 1.2 MB for 512 -> 512
/// and one patch per image at 7 x 7: the next panel's rows were misses that the filter merge
/// and the first blocks waited on (the merge ran at half the L3's streaming rate); fetched
/// into L2 while this call computes, they arrive early. A line per term, or a row of four
/// where one would not cover `ahead` in the first half of the call's terms: at one, a 512
/// -> 512 patch at batch 1 covered two thirds of it, and its filter merge waited on the rest
/// (ResNet-18 at batch 1 on AVX-512: the merge 34-49 -> 14-17 cycles per input channel and
/// window pixel with a row per term; two lines per term 15-22, eight 18-24; on AVX2,
/// 50-82 -> 18-30).
pub(super) fn ahead_part(
    g: &Geom,
    (kys, terms): ((usize, usize), Option<(usize, usize)>),
    row_terms: usize,
    (index, blocks): (usize, usize),
    ahead: &[f32],
) -> (*const f32, usize) {
    let ((r0, r1), (t0, t1)) = (kys, terms.unwrap_or((0, row_terms)));
    let all_terms = (g.kys.1 - g.kys.0) * row_terms * blocks;
    let lines = (2 * ahead.len().div_ceil(LINE)).div_ceil(all_terms.max(1));
    let stride = if lines > 1 { 4 * LINE } else { LINE };
    // Terms summed by the passes before this one, by every block, and by this pass's blocks
    // before this one.
    let before = ((r0 - g.kys.0) * row_terms + t0) * blocks + index * (r1 - r0) * (t1 - t0);
    match ahead.get(before * stride..) {
        Some(rest) if !rest.is_empty() => (rest.as_ptr(), stride),
        _ => (std::ptr::null(), stride),
    }
}
