//! The AVX-512 versions of the hash's inner loops, with the portable loops' bits.

use super::{row_thresholds, LANES};

/// [`thresholds_and_codes`] in registers, with the same bits: the row sums are the same
/// additions (lane `i` of the tree's first level is `v[i] + v[i + 8]`, and so on), and each
/// hyperplane's compare gives a mask of channels whose codes get bit `l`.
///
/// # Safety
/// AVX-512F must be supported.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn thresholds_and_codes_avx512(
    proj: &[f32],
    cpad: usize,
    c: usize,
    centering: bool,
    thresholds: &mut Vec<f32>,
    codes: &mut [u64],
) -> bool {
    use std::arch::x86_64::*;
    // SAFETY: the caller's tier is this function's.
    let row_sum = |row: &[f32]| unsafe { row_sum_avx512(row) };
    if !row_thresholds(proj, cpad, c, centering, thresholds, row_sum) {
        return false;
    }
    assert!(proj.len() >= thresholds.len() * cpad && codes.len() <= cpad);
    for ch0 in (0..codes.len()).step_by(LANES) {
        let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for (l, &t) in thresholds.iter().enumerate() {
            // SAFETY: row `l` holds `cpad >= ch0 + 16` values (asserted above).
            let v = unsafe { _mm512_loadu_ps(proj.as_ptr().add(l * cpad + ch0)) };
            let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_set1_ps(t));
            let bit = _mm512_set1_epi64(1i64 << l);
            lo = _mm512_mask_or_epi64(lo, gt as u8, lo, bit);
            hi = _mm512_mask_or_epi64(hi, (gt >> 8) as u8, hi, bit);
        }
        let mut lanes = [0u64; LANES];
        // SAFETY: `lanes` holds 16 values.
        unsafe {
            _mm512_storeu_si512(lanes.as_mut_ptr() as *mut _, lo);
            _mm512_storeu_si512(lanes.as_mut_ptr().add(8) as *mut _, hi);
        }
        let n = (codes.len() - ch0).min(LANES);
        codes[ch0..ch0 + n].copy_from_slice(&lanes[..n]);
    }
    true
}

/// [`row_sum`] in one register.
///
/// # Safety
/// AVX-512F must be supported.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn row_sum_avx512(row: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut v = _mm512_setzero_ps();
    for block in row.chunks_exact(LANES) {
        // SAFETY: `block` holds 16 values.
        v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(block.as_ptr()) });
    }
    // Halves, quarters, pairs, then the last two: the low lanes of each step hold the sums
    // `sum16` forms (an addition of two finite values is the same either way round).
    let a = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b01_00_11_10>(v, v));
    let b = _mm512_add_ps(a, _mm512_shuffle_f32x4::<0b00_00_00_01>(a, a));
    let c = _mm512_add_ps(b, _mm512_permute_ps::<0b00_00_11_10>(b));
    let d = _mm512_add_ps(c, _mm512_permute_ps::<0b00_00_00_01>(c));
    _mm512_cvtss_f32(d)
}

/// The codes of channels `ch0..ch0 + cw` (`cw <= 16`): hyperplane `l` adds the rows at
/// `pos[lists[2l - 1]..lists[2l]]` and subtracts those at `pos[lists[2l]..lists[2l + 1]]`, in
/// order (the same additions, in the same order, as the portable loop).
///
/// # Safety
/// AVX-512F must be supported; every `p * c + ch0 + cw <= z.len()` for `p` in `pos`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn project_avx512(
    z: &[f32],
    c: usize,
    ch0: usize,
    cw: usize,
    pos: &[u32],
    lists: &[u32],
) -> [u64; LANES] {
    use std::arch::x86_64::*;
    let mask: u16 = if cw == LANES {
        0xffff
    } else {
        (1u16 << cw) - 1
    };
    assert!(pos.iter().all(|&p| p as usize * c + ch0 + cw <= z.len()));
    let base = z.as_ptr().add(ch0);
    let zero = _mm512_setzero_ps();
    let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
    let mut from = 0usize;
    for l in 0..lists.len() / 2 {
        let (mid, to) = (lists[2 * l] as usize, lists[2 * l + 1] as usize);
        let mut acc = zero;
        for &p in &pos[from..mid] {
            acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mask, base.add(p as usize * c)));
        }
        for &p in &pos[mid..to] {
            acc = _mm512_sub_ps(acc, _mm512_maskz_loadu_ps(mask, base.add(p as usize * c)));
        }
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(acc, zero);
        let bit = _mm512_set1_epi64(1i64 << l);
        lo = _mm512_mask_or_epi64(lo, gt as u8, lo, bit);
        hi = _mm512_mask_or_epi64(hi, (gt >> 8) as u8, hi, bit);
        from = to;
    }
    let mut code = [0u64; LANES];
    _mm512_storeu_si512(code.as_mut_ptr() as *mut _, lo);
    _mm512_storeu_si512(code.as_mut_ptr().add(8) as *mut _, hi);
    code
}
