//! The AVX2 versions of the hash's inner loops, with the portable loops' bits.

use super::{row_thresholds, LANES};
use std::arch::x86_64::*;

/// [`super::thresholds_and_codes`] in registers, with the same bits: the row sums are the
/// same additions (16 lanes in two vectors, then `sum16`'s tree), and each hyperplane's
/// compare sets bit `l` of eight channels' codes at once, 32 bits to a lane (the codes of
/// more than 32 hyperplanes in a second vector).
///
/// # Safety
/// AVX2 must be supported.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn thresholds_and_codes_avx2(
    proj: &[f32],
    cpad: usize,
    c: usize,
    centering: bool,
    thresholds: &mut Vec<f32>,
    codes: &mut [u64],
) -> bool {
    // SAFETY: the caller's tier is this function's.
    let row_sum = |row: &[f32]| unsafe { row_sum_avx2(row) };
    if !row_thresholds(proj, cpad, c, centering, thresholds, row_sum) {
        return false;
    }
    assert!(proj.len() >= thresholds.len() * cpad && codes.len() <= cpad);
    assert!(thresholds.len() <= 64, "codes of at most 64 bits");
    const LANE: usize = 8;
    for ch0 in (0..codes.len()).step_by(LANE) {
        let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for (l, &t) in thresholds.iter().enumerate() {
            // SAFETY: row `l` holds `cpad >= ch0 + 8` values (asserted above; `cpad` is a
            // multiple of 16).
            let v = unsafe { _mm256_loadu_ps(proj.as_ptr().add(l * cpad + ch0)) };
            let gt = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_set1_ps(t)));
            let bit = _mm256_and_si256(gt, _mm256_set1_epi32((1u32 << (l % 32)) as i32));
            if l < 32 {
                lo = _mm256_or_si256(lo, bit);
            } else {
                hi = _mm256_or_si256(hi, bit);
            }
        }
        let (mut low, mut high) = ([0u32; LANE], [0u32; LANE]);
        // SAFETY: each array holds 8 values.
        unsafe {
            _mm256_storeu_si256(low.as_mut_ptr() as *mut _, lo);
            _mm256_storeu_si256(high.as_mut_ptr() as *mut _, hi);
        }
        let n = (codes.len() - ch0).min(LANE);
        for (i, code) in codes[ch0..ch0 + n].iter_mut().enumerate() {
            *code = low[i] as u64 | (high[i] as u64) << 32;
        }
    }
    true
}

/// [`super::row_sum`] in two registers (lanes 0-7 and 8-15).
///
/// # Safety
/// AVX2 must be supported.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn row_sum_avx2(row: &[f32]) -> f32 {
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for block in row.chunks_exact(LANES) {
        // SAFETY: `block` holds 16 values.
        unsafe {
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(block.as_ptr()));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(block.as_ptr().add(8)));
        }
    }
    // `sum16`'s tree: lanes i and i + 8, then i and i + 4, i and i + 2, the last two.
    let a = _mm256_add_ps(lo, hi);
    let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    let d = _mm_add_ss(c, _mm_shuffle_ps::<0b01>(c, c));
    _mm_cvtss_f32(d)
}
