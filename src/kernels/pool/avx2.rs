//! Max pooling on pixel-major images, 8 channels at a time on AVX2, with the bits of the
//! scalar loops in [`super`]: the same taps in the same order, each folded in by the
//! same NaN-propagating max (those loops do not vectorize: Tiny Darknet's five 2x2 pools
//! took 3.9 % of its time on the AVX2 tier).

use crate::ops::PoolParams;
use std::arch::x86_64::*;

/// [`super::nan_max`] on 8 lanes: `max_ps(v, m)` is `v > m ? v : m` when neither is
/// NaN and `m` when either is; a NaN `v` then replaces the result.
#[inline(always)]
unsafe fn nan_max(m: __m256, v: __m256) -> __m256 {
    // SAFETY: called from AVX2 code only (inlined there).
    unsafe {
        let r = _mm256_max_ps(v, m);
        _mm256_blendv_ps(r, v, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v))
    }
}

/// The 2x2 stride-2 max pool of output rows `rows` (`c` a multiple of 8).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn max_2x2_stride2_hwc(
    x: &[f32],
    (w, c): (usize, usize),
    rows: std::ops::Range<usize>,
    ow: usize,
    out: &mut [f32],
) {
    assert!(c.is_multiple_of(8));
    for (r, orow) in rows.zip(out.chunks_exact_mut(ow * c)) {
        let top = &x[2 * r * w * c..][..2 * ow * c];
        let bottom = &x[(2 * r + 1) * w * c..][..2 * ow * c];
        for ox in 0..ow {
            let (a, b) = (top[2 * ox * c..].as_ptr(), bottom[2 * ox * c..].as_ptr());
            let o = orow[ox * c..].as_mut_ptr();
            for k in (0..c).step_by(8) {
                // SAFETY: `top` and `bottom` hold `2 * ow * c` values, `orow` `ow * c`, and
                // `k + 8 <= c`.
                unsafe {
                    let (a0, a1) = (_mm256_loadu_ps(a.add(k)), _mm256_loadu_ps(a.add(c + k)));
                    let (b0, b1) = (_mm256_loadu_ps(b.add(k)), _mm256_loadu_ps(b.add(c + k)));
                    let m = nan_max(nan_max(a0, a1), nan_max(b0, b1));
                    _mm256_storeu_ps(o.add(k), m);
                }
            }
        }
    }
}

/// Max pooling of output rows `rows`, any window (`c` a multiple of 8).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn max_hwc(
    p: &PoolParams,
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    assert!(c.is_multiple_of(8));
    let (_, ow) = p.out_hw(h, w);
    let out = &mut out[..rows.len() * ow * c];
    // Input coordinate of tap `k` of output `o` along one axis, if inside the image.
    let tap = |o: usize, k: usize, s: usize, d: usize, pad: usize, size: usize| {
        (o * s + k * d).checked_sub(pad).filter(|&i| i < size)
    };
    for (o, px) in out.chunks_exact_mut(c).enumerate() {
        let (oy, ox) = (rows.start + o / ow, o % ow);
        for k in (0..c).step_by(32) {
            // Up to 4 vectors of channels held in registers over every tap.
            let lanes = (c - k).min(32) / 8;
            let mut m = [_mm256_set1_ps(f32::NEG_INFINITY); 4];
            for ky in 0..p.kernel.0 {
                let Some(iy) = tap(oy, ky, p.stride.0, p.dilation.0, p.pads[0], h) else {
                    continue;
                };
                for kx in 0..p.kernel.1 {
                    let Some(ix) = tap(ox, kx, p.stride.1, p.dilation.1, p.pads[1], w) else {
                        continue;
                    };
                    let src = x[(iy * w + ix) * c + k..][..8 * lanes].as_ptr();
                    for (v, m) in m.iter_mut().enumerate().take(lanes) {
                        // SAFETY: `src` holds `8 * lanes` values (sliced just above).
                        *m = unsafe { nan_max(*m, _mm256_loadu_ps(src.add(8 * v))) };
                    }
                }
            }
            let dst = px[k..][..8 * lanes].as_mut_ptr();
            for (v, m) in m.iter().enumerate().take(lanes) {
                // SAFETY: `dst` holds `8 * lanes` values (sliced just above).
                unsafe { _mm256_storeu_ps(dst.add(8 * v), *m) };
            }
        }
    }
}
