//! The AVX2 + FMA kernel's register blocks. AVX2 has 16 vector registers of 8 lanes (AVX-512:
//! 32 of 16), so a block holds `MR` outputs x `NV` vectors with `MR * NV <= 12` accumulators,
//! beside the `NV` filter vectors of a term and one broadcast input value: 6 outputs x 16
//! channels, so each filter vector loaded feeds 6 FMAs (blocks of 3 x 32, 3 FMAs per filter
//! vector, ran 128 -> 128 and 64 -> 64 layers at 35 GFLOP/s on one core against 57-65 for
//! these, with a 92 GFLOP/s peak). The blocks themselves are [`super::narrow`]'s, shared
//! with NEON; this file gives them AVX2's vector operations.

use crate::kernels::activation::x86::avx2::activate;
use std::arch::x86_64::*;

type V = __m256;
/// The lane mask of a partial last vector.
type Tail = __m256i;
const LANES: usize = 8;

/// The lane mask of the first `lanes` (1 to 8) of 8 lanes, for masked loads and stores.
#[inline]
#[target_feature(enable = "avx2")]
fn tail(lanes: usize) -> Tail {
    let all: [i32; 8] = std::array::from_fn(|k| if k < lanes { -1 } else { 0 });
    // SAFETY: `all` holds 8 integers.
    unsafe { _mm256_loadu_si256(all.as_ptr().cast()) }
}
#[inline]
#[target_feature(enable = "avx2,fma")]
fn zero() -> V {
    _mm256_setzero_ps()
}
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn splat(p: *const f32) -> V {
    // SAFETY: the caller's.
    unsafe { _mm256_broadcast_ss(&*p) }
}
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fma(x: V, w: V, acc: V) -> V {
    _mm256_fmadd_ps(x, w, acc)
}
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load(p: *const f32) -> V {
    // SAFETY: the caller's.
    unsafe { _mm256_loadu_ps(p) }
}
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_tail(p: *const f32, t: Tail) -> V {
    // SAFETY: the caller's: the lanes of `t` from `p`.
    unsafe { _mm256_maskload_ps(p, t) }
}
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(p: *mut f32, v: V) {
    // SAFETY: the caller's.
    unsafe { _mm256_storeu_ps(p, v) }
}
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_tail(p: *mut f32, t: Tail, v: V) {
    // SAFETY: the caller's: the lanes of `t` from `p`.
    unsafe { _mm256_maskstore_ps(p, t, v) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn prefetch(p: *const f32) {
    // A prefetch never faults, whatever the address.
    _mm_prefetch::<_MM_HINT_T1>(p.cast())
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn set1(x: f32) -> V {
    _mm256_set1_ps(x)
}
#[inline]
#[target_feature(enable = "avx2,fma")]
fn add(a: V, b: V) -> V {
    _mm256_add_ps(a, b)
}
/// `x < 0 ? 0 : x`: `max(0, x)` returns its second operand when either is NaN and when both
/// are zeros, so NaN and -0.0 pass through.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn relu(x: V) -> V {
    _mm256_max_ps(_mm256_setzero_ps(), x)
}
/// `x < 0 ? x * alpha : x` (an ordered comparison: NaN passes through).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn leaky_relu(x: V, alpha: V) -> V {
    let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps());
    _mm256_blendv_ps(x, _mm256_mul_ps(x, alpha), neg)
}
/// `x < lo ? lo : x > hi ? hi : x`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn clip(x: V, lo: V, hi: V) -> V {
    let above = _mm256_blendv_ps(x, hi, _mm256_cmp_ps::<_CMP_GT_OQ>(x, hi));
    _mm256_blendv_ps(above, lo, _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo))
}

super::narrow::narrow_tier!(mr: 6, nv: 2, #[target_feature(enable = "avx2,fma")]);
