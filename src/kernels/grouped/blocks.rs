//! The register blocks of the grouped convolution: `MR` output pixels x one group's `CO`
//! output channels, summed over the group's taps and input channels in the order (tap,
//! channel) with fused multiply-adds, so every tier gives the portable code's bits (the SSE2
//! tier's multiply-adds round twice).

use crate::kernels::isa::MulAdd;

/// What one block reads.
pub(super) struct Block<'a, const MR: usize> {
    /// The zero-padded pixel-major image.
    pub padded: &'a [f32],
    /// Each pixel's tap-(0, 0) offset in `padded`, at the group's first input channel.
    pub origin: [usize; MR],
    /// Each tap's offset from the origin.
    pub tap_at: &'a [usize],
    /// Input channels of the group.
    pub cig: usize,
    /// The group's weights `[tap][cig][CO]`.
    pub weights: &'a [f32],
}

impl<const MR: usize> Block<'_, MR> {
    /// Whether every read of a block of `co` channels lies inside the image and the weights
    /// (the vector blocks read through pointers).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn in_bounds(&self, co: usize) -> bool {
        let last_tap = self.tap_at.iter().max().copied().unwrap_or(0);
        let last_origin = self.origin.iter().max().copied().unwrap_or(0);
        last_origin + last_tap + self.cig <= self.padded.len()
            && self.tap_at.len() * self.cig * co <= self.weights.len()
    }
}

/// Portable block (the compiler vectorizes over the `CO` channels), its multiply-adds as `M`
/// computes them.
#[inline(always)]
pub(super) fn portable<const CO: usize, const MR: usize, M: MulAdd>(
    b: &Block<MR>,
) -> [[f32; CO]; MR] {
    let mut acc = [[0.0f32; CO]; MR];
    for (t, &tap_at) in b.tap_at.iter().enumerate() {
        let wt = &b.weights[t * b.cig * CO..][..b.cig * CO];
        for (i, wv) in wt.chunks_exact(CO).enumerate() {
            let wv: &[f32; CO] = wv.try_into().expect("CO weights");
            for (a, &o) in acc.iter_mut().zip(&b.origin) {
                let x = b.padded[o + tap_at + i];
                for (a, &wj) in a.iter_mut().zip(wv) {
                    *a = M::madd(x, wj, *a);
                }
            }
        }
    }
    acc
}

/// The vector block, written once over the operations each tier defines (`V`, `LANES`,
/// `zero`, `splat`, `fma`, and `load`/`store` of the first `n` lanes): `NV` vectors of
/// `LANES` channels per pixel, the last one partial when `CO` is not a multiple of `LANES`,
/// the sums in registers, each weight vector loaded once per term.
macro_rules! vector_block {
    ($(#[$feat:meta])*) => {
        /// # Safety
        /// The CPU runs this tier's instructions.
        $(#[$feat])*
        pub(crate) unsafe fn block<const CO: usize, const MR: usize, const NV: usize>(
            b: &Block<MR>,
        ) -> [[f32; CO]; MR] {
            assert!(NV * LANES >= CO && b.in_bounds(CO));
            let lanes: [usize; NV] = std::array::from_fn(|v| (CO - LANES * v).min(LANES));
            let mut acc = [[zero(); NV]; MR];
            let (pp, wp) = (b.padded.as_ptr(), b.weights.as_ptr());
            for (t, &tap_at) in b.tap_at.iter().enumerate() {
                // SAFETY (the reads): inside `padded` and the weights (`in_bounds`,
                // asserted); a partial vector reads only its lanes.
                let a: [*const f32; MR] =
                    std::array::from_fn(|q| unsafe { pp.add(b.origin[q] + tap_at) });
                let wt = unsafe { wp.add(t * b.cig * CO) };
                for i in 0..b.cig {
                    let w = unsafe { wt.add(i * CO) };
                    let wv: [V; NV] =
                        std::array::from_fn(|v| unsafe { load(w.add(LANES * v), lanes[v]) });
                    for (row, a) in acc.iter_mut().zip(&a) {
                        let x = splat(unsafe { *a.add(i) });
                        for (acc, &wv) in row.iter_mut().zip(&wv) {
                            *acc = fma(x, wv, *acc);
                        }
                    }
                }
            }
            let mut out = [[0.0f32; CO]; MR];
            for (o, row) in out.iter_mut().zip(&acc) {
                for (v, &x) in row.iter().enumerate() {
                    // SAFETY: a partial vector writes only its lanes.
                    unsafe { store(o.as_mut_ptr().add(LANES * v), lanes[v], x) };
                }
            }
            out
        }
    };
}

/// AVX-512: 16 lanes, partial vectors under a mask (group widths 8, 24 and 48).
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use super::Block;
    use std::arch::x86_64::*;

    type V = __m512;
    const LANES: usize = 16;

    fn mask(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn zero() -> V {
        _mm512_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn splat(x: f32) -> V {
        _mm512_set1_ps(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn fma(a: V, b: V, c: V) -> V {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f32, n: usize) -> V {
        unsafe { _mm512_maskz_loadu_ps(mask(n), p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(p: *mut f32, n: usize, v: V) {
        unsafe { _mm512_mask_storeu_ps(p, mask(n), v) }
    }

    vector_block!(#[target_feature(enable = "avx512f,fma")]);
}

/// AVX2: 8 lanes; every group width the kernel takes is a multiple of 8, so no vector is
/// partial.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::Block;
    use std::arch::x86_64::*;

    type V = __m256;
    const LANES: usize = 8;

    #[inline]
    #[target_feature(enable = "avx")]
    fn zero() -> V {
        _mm256_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx")]
    fn splat(x: f32) -> V {
        _mm256_set1_ps(x)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fma(a: V, b: V, c: V) -> V {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn load(p: *const f32, n: usize) -> V {
        debug_assert_eq!(n, LANES);
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn store(p: *mut f32, n: usize, v: V) {
        debug_assert_eq!(n, LANES);
        unsafe { _mm256_storeu_ps(p, v) }
    }

    vector_block!(#[target_feature(enable = "avx2,fma")]);
}

/// NEON: 4 lanes; every group width the kernel takes is a multiple of 4, so no vector is
/// partial. `vfmaq_f32` is fused, as `f32::mul_add` is: the portable code's bits.
#[cfg(target_arch = "aarch64")]
pub(super) mod neon {
    use super::Block;
    use crate::kernels::neon::{splat, zero, LANES, V};
    use std::arch::aarch64::*;

    #[inline(always)]
    fn fma(a: V, b: V, c: V) -> V {
        // SAFETY: NEON is in aarch64's baseline.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32, n: usize) -> V {
        debug_assert_eq!(n, LANES);
        // SAFETY: the caller's.
        unsafe { crate::kernels::neon::load(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, n: usize, v: V) {
        debug_assert_eq!(n, LANES);
        // SAFETY: the caller's.
        unsafe { crate::kernels::neon::store(p, v) }
    }

    vector_block!();
}
