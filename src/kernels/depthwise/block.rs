//! One block of depthwise sums in registers: a vector of channels of `P` neighbouring output
//! pixels, for a kernel `KW` wide with stride `S` across (both constants, so the loops below
//! unroll and every sum stays in its register).
//!
//! Per kernel row the block loads that row's `KW` weight vectors once, then walks the input
//! columns under the block, each loaded once and multiplied into every pixel whose window
//! covers it: `(P - 1) * S + KW` loads for `P * KW` multiply-adds, where a pixel at a time
//! loads every tap's input again. Columns outside the image read as zeros (the padding), so
//! the pixels at the left and right edges take the same path as the others, and each pixel's
//! sum is over its kernel rows inside the image and all its columns, in row-major order: the
//! bits depend neither on the tier nor on `P`.
//!
//! The body is written once (`tier!`) over a handful of vector operations each tier defines:
//! AVX-512 (16 lanes, masked loads for the last channels), AVX2 (8 lanes, `vmaskmov`), NEON
//! (4 lanes, the last channels loaded lane by lane), and plain arrays of 8 for every other
//! CPU.

use super::{BlockAt, DepthwiseConv};

/// How many channel vectors ahead a block prefetches its input columns (0: none). The loops
/// walk every channel vector of a block's pixels before moving on, so each of its (rows x
/// columns) pixels is a stream of its own, 60 for a 5 x 5 block of 8 pixels: more than the
/// hardware prefetchers follow. Two vectors ahead, one core of a Zen 5 (`examples/depthwise`,
/// two alternated rounds): 96 channels stride 2 at 112 x 112 122 -> 111 us, 144 at 56 x 56
/// 125 -> 115, 240 5 x 5 at 28 x 28 94 -> 81, 672 at 14 x 14 75 -> 70; one ahead gained
/// less, four less again.
const PREFETCH: usize = 2;
use crate::ops::Activation;

macro_rules! tier {
    ($(#[$feat:meta])*) => {
        /// Sums of the block at `at` into `out` (from the first pixel's channel 0); returns
        /// the pixels done, `P` or the row's last few.
        ///
        /// # Safety
        /// The CPU runs this tier's instructions. The shape is `KW` wide with stride `S`
        /// across (asserted), and `at` lies inside the image `hwc` and `out` (asserted).
        $(#[$feat])*
        pub(crate) unsafe fn block<const KW: usize, const S: usize, const P: usize>(
            dw: &DepthwiseConv,
            hwc: &[f32],
            at: BlockAt<'_>,
            out: &mut [f32],
        ) -> usize {
            // Whether every column under the block lies inside the image: then no column
            // needs its mask.
            let first = (at.pixel.1 * S) as isize - dw.params.pads[1] as isize;
            let inside = first >= 0 && first as usize + (P - 1) * S + KW <= at.w;
            // The whole vectors of channels in one loop, then the last few channels: a call
            // per vector spent about as long entering, checking and leaving as summing
            // (`examples/depthwise`, one core: AVX2 32 channels at 112 x 112 300 -> 176 us,
            // 144 at 56 x 56 319 -> 153; AVX-512 144 at 56 x 56 159 -> 131, 240 3 x 3
            // stride 2 at 30 x 30 34 -> 25, small packed images within 5 %; MobileNetV2 at
            // batch 8 on two threads on AVX2 40 -> 35 ms, EfficientNet-Lite1 71 -> 64).
            let full_end = at.c0 + (at.c1 - at.c0) / LANES * LANES;
            let mut done = 0;
            if full_end > at.c0 {
                let at = BlockAt { c1: full_end, kys: at.kys.clone(), ..at };
                let m = mask(LANES);
                // SAFETY: as this function's.
                done = unsafe {
                    if inside {
                        sums::<KW, S, P, true, true, false>(dw, hwc, at, out, m)
                    } else {
                        sums::<KW, S, P, true, false, false>(dw, hwc, at, out, m)
                    }
                };
            }
            if full_end < at.c1 {
                let m = mask(at.c1 - full_end);
                let at = BlockAt { c0: full_end, ..at };
                // SAFETY: as this function's.
                done = unsafe {
                    if inside {
                        sums::<KW, S, P, false, true, false>(dw, hwc, at, out, m)
                    } else {
                        sums::<KW, S, P, false, false, false>(dw, hwc, at, out, m)
                    }
                };
            }
            done
        }

        /// [`block`] on one vector of channels packed between zero columns (`LANES` floats
        /// a pixel, the image's columns from the left padding's width on, wide enough that
        /// every column the block reads lies inside: no masks).
        ///
        /// # Safety
        /// As [`block`], with `at.packed` and `hwc` the packed rows.
        $(#[$feat])*
        pub(crate) unsafe fn block_packed<const KW: usize, const S: usize, const P: usize>(
            dw: &DepthwiseConv,
            packed: &[f32],
            at: BlockAt<'_>,
            out: &mut [f32],
        ) -> usize {
            let lanes = (dw.params.c_in - at.c0).min(LANES);
            assert!(at.packed && at.pixel.1 * S + (P - 1) * S + KW <= at.w, "a packed block lies inside its rows");
            let m = mask(lanes);
            // SAFETY: as this function's.
            unsafe {
                if lanes == LANES {
                    sums::<KW, S, P, true, true, true>(dw, packed, at, out, m)
                } else {
                    sums::<KW, S, P, false, true, true>(dw, packed, at, out, m)
                }
            }
        }

        /// [`block`] for `FULL` vectors or the last channels under mask `m`, with every column
        /// `INSIDE` the image or some outside, reading the image itself or, `PACKED`, one
        /// vector of its channels packed between zero columns (`LANES` floats a pixel).
        $(#[$feat])*
        #[inline]
        unsafe fn sums<
            const KW: usize,
            const S: usize,
            const P: usize,
            const FULL: bool,
            const INSIDE: bool,
            const PACKED: bool,
        >(
            dw: &DepthwiseConv,
            hwc: &[f32],
            at: BlockAt<'_>,
            out: &mut [f32],
            m: Mask,
        ) -> usize {
            let p = &dw.params;
            let c = p.c_in;
            let BlockAt { w, row0, pixel: (oy, ox), ref kys, c0, c1, pixels, .. } = at;
            // Floats from one input pixel to the next, and the zero columns left of the
            // image's first.
            let (xs, x_pad) = if PACKED { (LANES, p.pads[1]) } else { (c, 0) };
            let kys = kys.clone();
            // The vectors of channels summed: whole ones from `c0` to `c1`, or (not `FULL`)
            // the last few channels.
            assert!(c0 < c1 && c1 <= c && (if FULL { (c1 - c0) % LANES == 0 } else { c1 - c0 < LANES }));
            assert!(!PACKED || c1 - c0 <= LANES, "a packed block is one vector");
            // Where the last vector ends in a pixel of the input read.
            let x_end = if PACKED { c1 - c0 } else { c1 };
            let n = pixels.min(P);
            // Every access below stays inside these bounds (checked once, here): rows from
            // `kys` and columns inside `0..w`.
            assert!(p.kw == KW && p.stride.1 == S && n > 0 && kys.end <= p.kh);
            assert!((n - 1) * c + c1 <= out.len(), "depthwise block writes past its row");
            if let Some(last) = kys.clone().last() {
                assert!(oy * p.stride.0 + kys.start >= p.pads[0] + row0, "depthwise block reads above its rows");
                let iy = oy * p.stride.0 + last - p.pads[0] - row0;
                assert!(x_end <= xs && (iy * w + w - 1) * xs + x_end <= hwc.len(), "depthwise block reads past the image");
            }
            debug_assert_eq!(dw.weights.len(), p.kh * KW * c);
            let (x, wt) = (hwc.as_ptr(), dw.weights.as_ptr());
            // SAFETY: inside the bounds asserted above.
            let get = |at: usize, base: *const f32| unsafe {
                if FULL { load(base.add(at)) } else { load_n(base.add(at), m) }
            };
            // The input column under the block's first tap (negative left of the image).
            // Columns outside the image read as zeros, the padding's value: a column inside
            // stands in for each, its value then cleared.
            let first = (ox * S + x_pad) as isize - p.pads[1] as isize;
            let column = |q: usize| {
                if INSIDE {
                    (first + q as isize) as usize
                } else {
                    (first + q as isize).clamp(0, w as isize - 1) as usize
                }
            };
            let within = |q: usize| (0..w as isize).contains(&(first + q as isize));
            // The bias, the residual and the activation, as `PixelFinish` does them.
            let residual = at.residual.filter(|_| dw.finish.residual.is_some());
            let activation = match (residual, dw.finish.residual) {
                (Some(_), Some(after)) => after,
                _ => dw.finish.activation,
            };
            if let Some(r) = residual {
                assert!((n - 1) * c + c1 <= r.len(), "depthwise block's residual");
            }
            // One vector (a constant count, so no loop) when packed or partial.
            let vectors = if PACKED || !FULL { 1 } else { (c1 - c0) / LANES };
            for k in 0..vectors {
                let c0 = c0 + k * LANES;
                // Where the vector starts in a pixel of the input read.
                let xc0 = if PACKED { 0 } else { c0 };
                let mut acc = [zero(); P];
                for ky in kys.clone() {
                    // The row in `hwc`, which starts at image row `row0`.
                    let iy = oy * p.stride.0 + ky - p.pads[0] - row0;
                    let wv: [V; KW] = std::array::from_fn(|kx| get((ky * KW + kx) * c + c0, wt));
                    unroll!((P - 1) * S + KW, q => {
                        if PREFETCH > 0 {
                            prefetch(x.wrapping_add((iy * w + column(q)) * xs + xc0 + PREFETCH * LANES));
                        }
                        let mut xv = get((iy * w + column(q)) * xs + xc0, x);
                        if !INSIDE {
                            xv = keep(xv, within(q));
                        }
                        for (j, a) in acc.iter_mut().enumerate() {
                            // Pixel `j` reads column `q` under its tap `q - j * S`.
                            if q >= j * S && q - j * S < KW {
                                *a = fma(xv, wv[q - j * S], *a);
                            }
                        }
                    });
                }
                let bias = dw.finish.bias.as_deref().map(|b| get(c0, b.as_ptr()));
                for (j, a) in acc.iter().enumerate().take(n) {
                    let mut v = *a;
                    if let Some(b) = bias {
                        v = add(v, b);
                    }
                    if let Some(r) = residual {
                        v = add(v, get(j * c + c0, r.as_ptr()));
                    }
                    v = activate(activation, v);
                    let o = out.as_mut_ptr();
                    // SAFETY: inside the bounds asserted above.
                    unsafe {
                        if FULL {
                            store(o.add(j * c + c0), v)
                        } else {
                            store_n(o.add(j * c + c0), m, v)
                        }
                    }
                    // The line below it, which the next row's block writes, into L2: a layer's
                    // output often lands on memory no layer touched for a whole run, and each
                    // store there waited for its line. `examples/depthwise`, one core, 32
                    // channels at 112 x 112, the output out of L3 (`COLD=1 FLUSH_MB=64
                    // WARM_INPUT=1`): 207-250 -> 173-180 us; in cache 135 -> 140. Networks
                    // (two alternated rounds): MobileNetV2 and EfficientNet-Lite1 2-3 % faster
                    // at batch 1 on one thread and at batch 8 on two, EfficientNet-B0 within
                    // the noise. (Into L1 it saved less and cost more in cache: 185, 142.)
                    prefetch_l2(o.wrapping_add(at.next_row + j * c + c0));
                }
            }
            n
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    type V = __m512;
    type Mask = __mmask16;
    const LANES: usize = 16;

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn mask(lanes: usize) -> Mask {
        ((1u32 << lanes) - 1) as Mask
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn zero() -> V {
        _mm512_setzero_ps()
    }
    /// `x`, or zeros unless `yes`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn keep(x: V, yes: bool) -> V {
        _mm512_maskz_mov_ps(if yes { !0 } else { 0 }, x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f32) -> V {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn prefetch(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    }
    /// Into L2 only (an output line the next row writes).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn prefetch_l2(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_n(p: *const f32, m: Mask) -> V {
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn fma(a: V, b: V, c: V) -> V {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(p: *mut f32, v: V) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_n(p: *mut f32, m: Mask, v: V) {
        unsafe { _mm512_mask_storeu_ps(p, m, v) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn add(a: V, b: V) -> V {
        _mm512_add_ps(a, b)
    }
    /// `a` on lanes with the scalar code's bits (NaN and -0.0 included).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn activate(a: Activation, x: V) -> V {
        let zero = _mm512_setzero_ps();
        match a {
            Activation::None => x,
            // `max` returns its second operand when either is NaN or both are zeros.
            Activation::Relu => _mm512_max_ps(zero, x),
            Activation::LeakyRelu(k) => {
                let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, zero);
                _mm512_mask_mul_ps(x, neg, x, _mm512_set1_ps(k))
            }
            Activation::Clip(lo, hi) => {
                let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
                let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, hi);
                let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lo);
                _mm512_mask_mov_ps(_mm512_mask_mov_ps(x, above, hi), below, lo)
            }
            smooth => {
                // SAFETY: this tier's instructions are enabled here.
                unsafe { crate::kernels::activation::x86::avx512::activate(smooth, x) }
            }
        }
    }

    tier!(#[target_feature(enable = "avx512f,fma")]);
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    type V = __m256;
    type Mask = __m256i;
    const LANES: usize = 8;

    #[inline]
    #[target_feature(enable = "avx2")]
    fn mask(lanes: usize) -> Mask {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(lanes as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn zero() -> V {
        _mm256_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn keep(x: V, yes: bool) -> V {
        _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(-(yes as i32))))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(p: *const f32) -> V {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn prefetch(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    }
    /// Into L2 only (an output line the next row writes).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn prefetch_l2(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load_n(p: *const f32, m: Mask) -> V {
        unsafe { _mm256_maskload_ps(p, m) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fma(a: V, b: V, c: V) -> V {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store(p: *mut f32, v: V) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store_n(p: *mut f32, m: Mask, v: V) {
        unsafe { _mm256_maskstore_ps(p, m, v) }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn add(a: V, b: V) -> V {
        _mm256_add_ps(a, b)
    }
    /// `a` on lanes with the scalar code's bits (NaN and -0.0 included).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn activate(a: Activation, x: V) -> V {
        let zero = _mm256_setzero_ps();
        match a {
            Activation::None => x,
            // `max` returns its second operand when either is NaN or both are zeros.
            Activation::Relu => _mm256_max_ps(zero, x),
            Activation::LeakyRelu(k) => {
                let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(x, zero);
                _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(k)), neg)
            }
            Activation::Clip(lo, hi) => {
                let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
                let above = _mm256_blendv_ps(x, hi, _mm256_cmp_ps::<_CMP_GT_OQ>(x, hi));
                _mm256_blendv_ps(above, lo, _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo))
            }
            smooth => {
                // SAFETY: this tier's instructions are enabled here.
                unsafe { crate::kernels::activation::x86::avx2::activate(smooth, x) }
            }
        }
    }

    tier!(#[target_feature(enable = "avx2,fma")]);
}

/// NEON (aarch64): one register of 4 channels; 32 registers hold 8 pixels' sums, a kernel
/// row of up to 7 weights and the input column. `fmla` is fused, so the bits are the
/// portable tier's. No speed is claimed until a real ARM machine measures it.
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::*;
    use crate::kernels::neon::{load, load_n, store, store_n, zero, LANES, V};
    use std::arch::aarch64::*;

    /// The lanes in use of a partial vector (NEON has no masked loads and stores).
    type Mask = usize;

    #[inline(always)]
    fn mask(lanes: usize) -> Mask {
        lanes
    }
    /// `x`, or zeros unless `yes`.
    #[inline(always)]
    fn keep(x: V, yes: bool) -> V {
        if yes {
            x
        } else {
            zero()
        }
    }
    #[inline(always)]
    fn fma(a: V, b: V, c: V) -> V {
        // SAFETY: NEON is in aarch64's baseline.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    fn prefetch(_: *const f32) {}
    #[inline(always)]
    fn prefetch_l2(_: *const f32) {}
    #[inline(always)]
    fn add(a: V, b: V) -> V {
        // SAFETY: NEON is in aarch64's baseline.
        unsafe { vaddq_f32(a, b) }
    }
    /// `a` on lanes with the scalar code's bits (NaN and -0.0 included): the piecewise
    /// activations as compare and select in the scalar code's order.
    #[inline(always)]
    fn activate(a: Activation, x: V) -> V {
        // SAFETY: NEON is in aarch64's baseline.
        unsafe {
            let below = |lo: V| vcltq_f32(x, lo);
            match a {
                Activation::None => x,
                Activation::Relu => vbslq_f32(below(zero()), zero(), x),
                Activation::LeakyRelu(k) => {
                    vbslq_f32(below(zero()), vmulq_f32(x, vdupq_n_f32(k)), x)
                }
                Activation::Clip(lo, hi) => {
                    let (lo, hi) = (vdupq_n_f32(lo), vdupq_n_f32(hi));
                    let clipped = vbslq_f32(vcgtq_f32(x, hi), hi, x);
                    vbslq_f32(below(lo), lo, clipped)
                }
                smooth => crate::kernels::activation::neon::lanes::activate(smooth, x),
            }
        }
    }

    tier!(#[target_feature(enable = "neon")]);
}

/// A tier of plain arrays the compiler may vectorize for whatever CPU it builds for, its
/// multiply-adds as `$madd` computes them and its smooth activations by `$activate`.
macro_rules! plain_tier {
    ($(#[$doc:meta])* $name:ident, $madd:ty, $activate:path) => {
        $(#[$doc])*
        pub(crate) mod $name {
            use super::*;
            use crate::kernels::isa::MulAdd;

            type V = [f32; LANES];
            type Mask = usize;
            pub(crate) const LANES: usize = 8;

            #[inline(always)]
            fn mask(lanes: usize) -> Mask {
                lanes
            }
            #[inline(always)]
            fn zero() -> V {
                [0.0; LANES]
            }
            #[inline(always)]
            fn keep(x: V, yes: bool) -> V {
                if yes {
                    x
                } else {
                    zero()
                }
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> V {
                // SAFETY: the caller's: `LANES` values from `p`.
                unsafe { std::ptr::read_unaligned(p as *const V) }
            }
            #[inline(always)]
            fn prefetch(_: *const f32) {}
            #[inline(always)]
            fn prefetch_l2(_: *const f32) {}
            #[inline(always)]
            unsafe fn load_n(p: *const f32, n: Mask) -> V {
                // SAFETY: the caller's: `n` values from `p`.
                std::array::from_fn(|i| if i < n { unsafe { *p.add(i) } } else { 0.0 })
            }
            #[inline(always)]
            fn fma(a: V, b: V, c: V) -> V {
                std::array::from_fn(|i| <$madd>::madd(a[i], b[i], c[i]))
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: V) {
                // SAFETY: the caller's.
                unsafe { std::ptr::write_unaligned(p as *mut V, v) }
            }
            #[inline(always)]
            unsafe fn store_n(p: *mut f32, n: Mask, v: V) {
                for (i, v) in v.iter().enumerate().take(n) {
                    // SAFETY: the caller's: `n` values from `p`.
                    unsafe { *p.add(i) = *v }
                }
            }

            #[inline(always)]
            fn add(a: V, b: V) -> V {
                std::array::from_fn(|i| a[i] + b[i])
            }
            #[inline(always)]
            fn activate(a: Activation, mut x: V) -> V {
                $activate(a, &mut x);
                x
            }

            tier!();
        }
    };
}

plain_tier!(
    /// The portable tier: fused multiply-adds, the bits of every vector tier.
    portable,
    crate::kernels::isa::Fused,
    Activation::apply
);

plain_tier!(
    /// The SSE2 tier: the product and the sum rounded apart, vectorized without FMA.
    sse2,
    crate::kernels::isa::Unfused,
    crate::kernels::activation::apply_unfused
);
