//! The register blocks of the grouped convolution: `MR` output pixels x one group's `CO`
//! output channels, summed over the group's taps and input channels in the order (tap,
//! channel) with fused multiply-adds, so every tier gives the portable code's bits.

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
    fn in_bounds(&self, co: usize) -> bool {
        let last_tap = self.tap_at.iter().max().copied().unwrap_or(0);
        let last_origin = self.origin.iter().max().copied().unwrap_or(0);
        last_origin + last_tap + self.cig <= self.padded.len()
            && self.tap_at.len() * self.cig * co <= self.weights.len()
    }
}

/// Portable block (the compiler vectorizes over the `CO` channels).
#[inline(always)]
pub(super) fn portable<const CO: usize, const MR: usize>(b: &Block<MR>) -> [[f32; CO]; MR] {
    let mut acc = [[0.0f32; CO]; MR];
    for (t, &tap_at) in b.tap_at.iter().enumerate() {
        let wt = &b.weights[t * b.cig * CO..][..b.cig * CO];
        for (i, wv) in wt.chunks_exact(CO).enumerate() {
            let wv: &[f32; CO] = wv.try_into().expect("CO weights");
            for (a, &o) in acc.iter_mut().zip(&b.origin) {
                let x = b.padded[o + tap_at + i];
                for (a, &wj) in a.iter_mut().zip(wv) {
                    *a = x.mul_add(wj, *a);
                }
            }
        }
    }
    acc
}

/// AVX-512 block: `NV` vectors of 16 channels per pixel (the last one masked when `CO` is
/// not a multiple of 16), the sums in registers, each weight vector loaded once per term.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn avx512<const CO: usize, const MR: usize, const NV: usize>(
    b: &Block<MR>,
) -> [[f32; CO]; MR] {
    use std::arch::x86_64::*;
    assert!(NV * 16 >= CO && b.in_bounds(CO));
    let mask = |v: usize| -> u16 {
        let lanes = CO.saturating_sub(16 * v).min(16);
        ((1u32 << lanes) - 1) as u16
    };
    let masks: [u16; NV] = std::array::from_fn(mask);
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let (pp, wp) = (b.padded.as_ptr(), b.weights.as_ptr());
    for (t, &tap_at) in b.tap_at.iter().enumerate() {
        // SAFETY (the reads): inside `padded` and the weights (`in_bounds`, asserted).
        let a: [*const f32; MR] = std::array::from_fn(|q| unsafe { pp.add(b.origin[q] + tap_at) });
        let wt = unsafe { wp.add(t * b.cig * CO) };
        for i in 0..b.cig {
            let w = unsafe { wt.add(i * CO) };
            let wv: [__m512; NV] =
                std::array::from_fn(|v| unsafe { _mm512_maskz_loadu_ps(masks[v], w.add(16 * v)) });
            for (row, a) in acc.iter_mut().zip(&a) {
                let x = _mm512_set1_ps(unsafe { *a.add(i) });
                for (acc, &wv) in row.iter_mut().zip(&wv) {
                    *acc = _mm512_fmadd_ps(x, wv, *acc);
                }
            }
        }
    }
    let mut out = [[0.0f32; CO]; MR];
    for (o, row) in out.iter_mut().zip(&acc) {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: lanes past `CO` are masked off.
            unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr().add(16 * v), masks[v], x) };
        }
    }
    out
}

/// AVX2 block: `NV = CO / 8` vectors per pixel (every group width the kernel takes is a
/// multiple of 8).
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn avx2<const CO: usize, const MR: usize, const NV: usize>(
    b: &Block<MR>,
) -> [[f32; CO]; MR] {
    use std::arch::x86_64::*;
    assert!(NV * 8 == CO && b.in_bounds(CO));
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    let (pp, wp) = (b.padded.as_ptr(), b.weights.as_ptr());
    for (t, &tap_at) in b.tap_at.iter().enumerate() {
        // SAFETY (the reads): inside `padded` and the weights (`in_bounds`, asserted).
        let a: [*const f32; MR] = std::array::from_fn(|q| unsafe { pp.add(b.origin[q] + tap_at) });
        let wt = unsafe { wp.add(t * b.cig * CO) };
        for i in 0..b.cig {
            let w = unsafe { wt.add(i * CO) };
            let wv: [__m256; NV] =
                std::array::from_fn(|v| unsafe { _mm256_loadu_ps(w.add(8 * v)) });
            for (row, a) in acc.iter_mut().zip(&a) {
                let x = _mm256_set1_ps(unsafe { *a.add(i) });
                for (acc, &wv) in row.iter_mut().zip(&wv) {
                    *acc = _mm256_fmadd_ps(x, wv, *acc);
                }
            }
        }
    }
    let mut out = [[0.0f32; CO]; MR];
    for (o, row) in out.iter_mut().zip(&acc) {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: `8 * NV == CO` floats.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * v), x) };
        }
    }
    out
}
