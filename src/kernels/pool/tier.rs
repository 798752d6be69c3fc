//! Max pooling on pixel-major images, a vector of channels at a time, with the bits of the
//! scalar loops in [`super`]: the same taps in the same order, each folded in by the same
//! NaN-propagating max. Those loops do not vectorize (Tiny Darknet's five 2x2 pools took
//! 3.9 % of its time on the AVX2 tier; ResNet-18's 3x3 stride-2 pool 0.3 ms at batch 1
//! against onnxruntime's 0.11 on AVX-512).
//!
//! Written once (`max_pool_tier!`) over the vector operations each tier's module defines:
//! `V`, `LANES`, `splat(x)`, `load(p)`, `store(p, v)` and `nan_max(m, v)` ([`super::nan_max`]
//! on every lane, NaN payloads included).

use crate::kernels::isa::Isa;

macro_rules! max_pool_tier {
    ($(#[$feat:meta])*) => {
        use crate::ops::PoolParams;

        /// `s[k] = 0 + x[0][k] + x[1][k] + ...` over the pixels of `x` (`c` channels each,
        /// `c` a multiple of `LANES`), in pixel order: the bits of the scalar loop in
        /// [`super::mean_hwc_parts`]. Four vectors of sums stay in registers while the
        /// pixels stream by, where the scalar loop (compiled for the baseline) loaded and
        /// stored its sums for every pixel, 4 lanes at a time.
        ///
        /// # Safety
        /// The CPU must support this tier.
        $(#[$feat])*
        pub(super) unsafe fn sum_pixels(x: &[f32], c: usize, s: &mut [f32]) {
            assert!(c.is_multiple_of(LANES) && s.len() >= c && x.len().is_multiple_of(c.max(1)));
            let pixels = x.len() / c.max(1);
            let (xp, sp) = (x.as_ptr(), s.as_mut_ptr());
            let mut k = 0;
            while k < c {
                let vectors = ((c - k) / LANES).min(4);
                // SAFETY (loads and stores): `k + vectors * LANES <= c`, and every pixel
                // `p < pixels` holds `c` values of `x`.
                unsafe {
                    let mut acc = [splat(0.0); 4];
                    for p in 0..pixels {
                        let at = xp.add(p * c + k);
                        for (j, a) in acc.iter_mut().enumerate().take(vectors) {
                            *a = add(*a, load(at.add(j * LANES)));
                        }
                    }
                    for (j, a) in acc.iter().enumerate().take(vectors) {
                        store(sp.add(k + j * LANES), *a);
                    }
                }
                k += vectors * LANES;
            }
        }

        /// The 2x2 stride-2 max pool of output rows `rows` (`c` a multiple of `LANES`).
        ///
        /// # Safety
        /// The CPU must support this tier.
        $(#[$feat])*
        pub(super) unsafe fn max_2x2_stride2_hwc(
            x: &[f32],
            (w, c): (usize, usize),
            rows: std::ops::Range<usize>,
            ow: usize,
            out: &mut [f32],
        ) {
            assert!(c.is_multiple_of(LANES));
            for (r, orow) in rows.zip(out.chunks_exact_mut(ow * c)) {
                let top = &x[2 * r * w * c..][..2 * ow * c];
                let bottom = &x[(2 * r + 1) * w * c..][..2 * ow * c];
                for ox in 0..ow {
                    let (a, b) = (top[2 * ox * c..].as_ptr(), bottom[2 * ox * c..].as_ptr());
                    let o = orow[ox * c..].as_mut_ptr();
                    for k in (0..c).step_by(LANES) {
                        // SAFETY: `top` and `bottom` hold `2 * ow * c` values, `orow` `ow *
                        // c`, and `k + LANES <= c`.
                        unsafe {
                            let (a0, a1) = (load(a.add(k)), load(a.add(c + k)));
                            let (b0, b1) = (load(b.add(k)), load(b.add(c + k)));
                            store(o.add(k), nan_max(nan_max(a0, a1), nan_max(b0, b1)));
                        }
                    }
                }
            }
        }

        /// Max pooling of output rows `rows`, any window (`c` a multiple of `LANES`).
        ///
        /// # Safety
        /// The CPU must support this tier.
        $(#[$feat])*
        pub(super) unsafe fn max_hwc(
            p: &PoolParams,
            x: &[f32],
            (h, w, c): (usize, usize, usize),
            rows: std::ops::Range<usize>,
            out: &mut [f32],
        ) {
            assert!(c.is_multiple_of(LANES));
            let (_, ow) = p.out_hw(h, w);
            let out = &mut out[..rows.len() * ow * c];
            // Input coordinate of tap `k` of output `o` along one axis, if inside the image.
            let tap = |o: usize, k: usize, s: usize, d: usize, pad: usize, size: usize| {
                (o * s + k * d).checked_sub(pad).filter(|&i| i < size)
            };
            for (o, px) in out.chunks_exact_mut(c).enumerate() {
                let (oy, ox) = (rows.start + o / ow, o % ow);
                for k in (0..c).step_by(4 * LANES) {
                    // Up to 4 vectors of channels held in registers over every tap.
                    let vectors = (c - k).min(4 * LANES) / LANES;
                    let mut m = [splat(f32::NEG_INFINITY); 4];
                    for ky in 0..p.kernel.0 {
                        let Some(iy) = tap(oy, ky, p.stride.0, p.dilation.0, p.pads[0], h) else {
                            continue;
                        };
                        for kx in 0..p.kernel.1 {
                            let Some(ix) = tap(ox, kx, p.stride.1, p.dilation.1, p.pads[1], w)
                            else {
                                continue;
                            };
                            let src = x[(iy * w + ix) * c + k..][..LANES * vectors].as_ptr();
                            for (v, m) in m.iter_mut().enumerate().take(vectors) {
                                // SAFETY: `src` holds `LANES * vectors` values (sliced above).
                                *m = unsafe { nan_max(*m, load(src.add(LANES * v))) };
                            }
                        }
                    }
                    let dst = px[k..][..LANES * vectors].as_mut_ptr();
                    for (v, m) in m.iter().enumerate().take(vectors) {
                        // SAFETY: `dst` holds `LANES * vectors` values (sliced just above).
                        unsafe { store(dst.add(LANES * v), *m) };
                    }
                }
            }
        }
    };
}

/// AVX-512: 16 channels a vector.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn splat(x: f32) -> V {
        // SAFETY: called from AVX-512 code only (inlined there).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V {
        // SAFETY: the caller's: 16 floats from `p`, AVX-512 code.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: V) {
        // SAFETY: the caller's.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: V, b: V) -> V {
        // SAFETY: called from AVX-512 code only (inlined there).
        unsafe { _mm512_add_ps(a, b) }
    }
    /// `max_ps(v, m)` is `v > m ? v : m` when neither is NaN and `m` when either is; a NaN
    /// `v` then replaces the result.
    #[inline(always)]
    unsafe fn nan_max(m: V, v: V) -> V {
        // SAFETY: called from AVX-512 code only (inlined there).
        unsafe {
            let r = _mm512_max_ps(v, m);
            _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), v)
        }
    }

    max_pool_tier!(#[target_feature(enable = "avx512f")]);
}

/// AVX2: 8 channels a vector.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn splat(x: f32) -> V {
        // SAFETY: called from AVX2 code only (inlined there).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V {
        // SAFETY: the caller's: 8 floats from `p`, AVX2 code.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: V) {
        // SAFETY: the caller's.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: V, b: V) -> V {
        // SAFETY: called from AVX2 code only (inlined there).
        unsafe { _mm256_add_ps(a, b) }
    }
    /// As AVX-512's, with a blend.
    #[inline(always)]
    unsafe fn nan_max(m: V, v: V) -> V {
        // SAFETY: called from AVX2 code only (inlined there).
        unsafe {
            let r = _mm256_max_ps(v, m);
            _mm256_blendv_ps(r, v, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v))
        }
    }

    max_pool_tier!(#[target_feature(enable = "avx2")]);
}

/// NEON: 4 channels a vector. No speed is claimed until a real ARM machine measures it.
#[cfg(target_arch = "aarch64")]
pub(super) mod neon {
    use crate::kernels::neon::{load, splat, store, LANES, V};
    use std::arch::aarch64::*;

    #[inline(always)]
    unsafe fn add(a: V, b: V) -> V {
        // SAFETY: NEON is in aarch64's baseline.
        unsafe { vaddq_f32(a, b) }
    }

    /// `v` where `v > m` or `v` is NaN (`v != v`), else `m`: selects, so NaN payloads pass
    /// through as in the scalar code.
    #[inline(always)]
    unsafe fn nan_max(m: V, v: V) -> V {
        // SAFETY: NEON is in aarch64's baseline.
        unsafe {
            let take_v = vorrq_u32(vcgtq_f32(v, m), vmvnq_u32(vceqq_f32(v, v)));
            vbslq_f32(take_v, v, m)
        }
    }

    max_pool_tier!(#[target_feature(enable = "neon")]);
}

/// A tier whose vectors run a max pool of some channel count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct VectorTier(Isa);

impl VectorTier {
    /// The widest tier up to `isa` (which the CPU must support) whose vectors divide `c`
    /// channels, if any.
    pub(super) fn new(isa: Isa, c: usize) -> Option<VectorTier> {
        assert!(isa.supported(), "tier {isa} on a CPU without it");
        match isa {
            Isa::Avx512 if c.is_multiple_of(16) => Some(VectorTier(Isa::Avx512)),
            Isa::Avx512 | Isa::Avx2 if c.is_multiple_of(8) => Some(VectorTier(Isa::Avx2)),
            Isa::Neon if c.is_multiple_of(4) => Some(VectorTier(Isa::Neon)),
            _ => None,
        }
    }

    /// The 2x2 stride-2 max pool of output rows `rows` on this tier.
    pub(super) fn max_2x2_stride2_hwc(
        self,
        x: &[f32],
        wc: (usize, usize),
        rows: std::ops::Range<usize>,
        ow: usize,
        out: &mut [f32],
    ) {
        // SAFETY (each): `new` only makes tiers the CPU supports, for `c` they divide.
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::max_2x2_stride2_hwc(x, wc, rows, ow, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::max_2x2_stride2_hwc(x, wc, rows, ow, out) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::max_2x2_stride2_hwc(x, wc, rows, ow, out) },
            _ => unreachable!("no vector tier {}", self.0),
        }
    }

    /// [`avx512::sum_pixels`] (the per-channel sums of a run of pixels) on this tier.
    pub(super) fn sum_pixels(self, x: &[f32], c: usize, s: &mut [f32]) {
        // SAFETY (each): `new` only makes tiers the CPU supports, for `c` they divide.
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::sum_pixels(x, c, s) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::sum_pixels(x, c, s) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::sum_pixels(x, c, s) },
            _ => unreachable!("no vector tier {}", self.0),
        }
    }

    /// Max pooling of output rows `rows`, any window, on this tier.
    pub(super) fn max_hwc(
        self,
        p: &crate::ops::PoolParams,
        x: &[f32],
        hwc: (usize, usize, usize),
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        // SAFETY (each): `new` only makes tiers the CPU supports, for `c` they divide.
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::max_hwc(p, x, hwc, rows, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::max_hwc(p, x, hwc, rows, out) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::max_hwc(p, x, hwc, rows, out) },
            _ => unreachable!("no vector tier {}", self.0),
        }
    }
}
