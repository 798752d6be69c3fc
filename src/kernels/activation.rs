//! The activations on vectors: what every kernel and the plan call to activate a slice.
//!
//! [`Activation::apply`] is the definition (plain scalar code). Here the smooth ones
//! (Sigmoid, SiLU, hard-sigmoid, hard-swish) run on 16 (AVX-512) or 8 (AVX2) lanes with the
//! same operations in the same order, so every tier gives the scalar code's bits: without
//! this, a SiLU after a 1x1 convolution cost more than the convolution (EfficientNet-B0's
//! expand layers ran at 18-100 GFLOP/s against 150-350 for its projections). ReLU and clips
//! vectorize as they are and stay scalar code.

use crate::ops::{Activation, ConvOp};

/// `xs` activated in place, with the bits of [`Activation::apply`], on the fastest tier.
#[inline]
pub fn apply(a: Activation, xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if a == Activation::Gelu {
        // The definition compiled for wider vectors: its error function is branch-free f32
        // arithmetic the compiler vectorizes (the same operations, so the same bits).
        match super::isa::Isa::current() {
            // SAFETY: the tier is supported by this CPU.
            super::isa::Isa::Avx512 => return unsafe { x86::plain_avx512(a, xs) },
            super::isa::Isa::Avx2 => return unsafe { x86::plain_avx2(a, xs) },
            _ => {}
        }
    }
    if !is_smooth(a) {
        return a.apply(xs);
    }
    #[cfg(target_arch = "x86_64")]
    match super::isa::Isa::current() {
        // SAFETY: the tier is supported by this CPU.
        super::isa::Isa::Avx512 => return unsafe { x86::apply_avx512(a, xs) },
        super::isa::Isa::Avx2 => return unsafe { x86::apply_avx2(a, xs) },
        super::isa::Isa::Sse2 => return apply_unfused(a, xs),
        super::isa::Isa::Portable | super::isa::Isa::Neon => {}
    }
    #[cfg(target_arch = "aarch64")]
    if super::isa::Isa::current() == super::isa::Isa::Neon {
        // SAFETY: NEON is in aarch64's baseline.
        return unsafe { neon::lanes::apply(a, xs) };
    }
    a.apply(xs)
}

/// [`Activation::apply`] for the SSE2 tier: the sigmoid's `e^x` without fused multiply-adds
/// ([`crate::ops::exp`]), so that its loops vectorize on a CPU without FMA.
pub(crate) fn apply_unfused(a: Activation, xs: &mut [f32]) {
    let sigmoid = |x: f32| 1.0 / (1.0 + crate::ops::exp(-x));
    match a {
        Activation::Sigmoid => xs.iter_mut().for_each(|x| *x = sigmoid(*x)),
        Activation::Silu => xs.iter_mut().for_each(|x| *x *= sigmoid(*x)),
        _ => a.apply(xs),
    }
}

/// `out = act(out + r)` a block at a time, so the sums are still in L1 when activated.
pub fn add_then_apply(a: Activation, out: &mut [f32], r: &[f32]) {
    for (o, r) in out.chunks_mut(1024).zip(r.chunks(1024)) {
        o.iter_mut().zip(r).for_each(|(o, r)| *o += r);
        apply(a, o);
    }
}

/// For kernels that stop at the bias (HASTE): the op's activation, or its fused residual `r`
/// and the activation after it.
pub fn finish(op: &ConvOp, out: &mut [f32], r: Option<&[f32]>) {
    apply(op.activation, out);
    add_residual(op, out, r);
}

/// For kernels that leave the residual out: adds the op's fused residual `r` (this image's,
/// or the part of it `out` holds) to `out`, which holds the convolution and its bias, and
/// applies the activation after it. Nothing without a fused residual.
pub fn add_residual(op: &ConvOp, out: &mut [f32], r: Option<&[f32]>) {
    if let (Some(after), Some(r)) = (op.residual, r) {
        add_then_apply(after, out, r);
    }
}

/// The activations with a vector form here (the others are compares and selects, which the
/// compiler vectorizes from the scalar code).
fn is_smooth(a: Activation) -> bool {
    matches!(
        a,
        Activation::Sigmoid
            | Activation::Silu
            | Activation::HardSwish
            | Activation::HardSigmoid(..)
    )
}

/// One body per tier, written once: `lanes!` instantiates it for a tier's vector type over
/// its operations (x86: `__m512` and `__m256`; NEON: `float32x4_t`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! lanes {
    ($tier:ident, $feat:literal, $v:ty, $n:literal,
     $set1:ident, $add:ident, $sub:ident, $mul:ident, $fma:ident, $div:ident, $max:ident, $min:ident,
     $cvt:ident, $slli:ident, $addi:ident, $set1i:ident, $cast:ident, $load:ident, $store:ident) => {
        pub(crate) mod $tier {
            use super::*;

            /// [`crate::ops::exp_fused`] on lanes: the same operations, each rounded
            /// alone or fused as there.
            #[target_feature(enable = $feat)]
            #[inline]
            pub(crate) unsafe fn exp(x: $v) -> $v {
                // `max(lo, x)` and `min(hi, .)` return `x` when it is NaN, as `clamp` does.
                let x = $min($set1(88.0), $max($set1(-87.0), x));
                let round = $set1(ops::ROUND);
                let n = $sub($fma(x, $set1(ops::LOG2E), round), round);
                let r = $fma(n, $set1(-ops::LN2_LO), $fma(n, $set1(-ops::LN2_HI), x));
                let mut p = $set1(ops::EXP_POLY[0]);
                for &c in &ops::EXP_POLY[1..] {
                    p = $fma(p, r, $set1(c));
                }
                let er = $add($fma($mul(p, r), r, r), $set1(1.0));
                // `n` is a whole number in [-126, 127]: the conversion is exact.
                let two_n = $cast($slli::<23>($addi($cvt(n), $set1i(127))));
                $mul(er, two_n)
            }

            #[target_feature(enable = $feat)]
            #[inline]
            pub(crate) unsafe fn sigmoid(x: $v) -> $v {
                let neg = $sub($set1(0.0), x);
                $div($set1(1.0), $add($set1(1.0), exp(neg)))
            }

            /// `a` on one vector, as [`Activation::apply`] does it on each lane.
            #[target_feature(enable = $feat)]
            #[inline]
            pub(crate) unsafe fn activate(a: Activation, x: $v) -> $v {
                match a {
                    Activation::Sigmoid => sigmoid(x),
                    Activation::Silu => $mul(x, sigmoid(x)),
                    Activation::HardSigmoid(alpha, beta) => {
                        let y = $add($mul($set1(alpha), x), $set1(beta));
                        $min($set1(1.0), $max($set1(0.0), y))
                    }
                    Activation::HardSwish => {
                        let y = $add($div(x, $set1(6.0)), $set1(0.5));
                        $mul(x, $min($set1(1.0), $max($set1(0.0), y)))
                    }
                    _ => x,
                }
            }

            /// A slice: whole vectors here, the tail through the scalar code.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn apply(a: Activation, xs: &mut [f32]) {
                // One loop per activation, so that none decides per vector which it is.
                // SAFETY (all): as this function's.
                match a {
                    Activation::Sigmoid => unsafe { each(a, xs, |x| sigmoid(x)) },
                    Activation::Silu => unsafe { each(a, xs, |x| $mul(x, sigmoid(x))) },
                    _ => unsafe { each(a, xs, |x| activate(a, x)) },
                }
            }

            /// `xs` through `f` a vector at a time, the tail through `a`'s scalar code.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn each(a: Activation, xs: &mut [f32], f: impl Fn($v) -> $v) {
                // Four vectors at a time: four independent chains of some thirty
                // dependent operations, which the core overlaps.
                let mut quads = xs.chunks_exact_mut(4 * $n);
                for q in &mut quads {
                    let p = q.as_mut_ptr();
                    // SAFETY: `q` holds four vectors' lanes.
                    unsafe {
                        let (x0, x1) = ($load(p), $load(p.add($n)));
                        let (x2, x3) = ($load(p.add(2 * $n)), $load(p.add(3 * $n)));
                        let (y0, y1, y2, y3) = (f(x0), f(x1), f(x2), f(x3));
                        $store(p, y0);
                        $store(p.add($n), y1);
                        $store(p.add(2 * $n), y2);
                        $store(p.add(3 * $n), y3);
                    }
                }
                let mut chunks = quads.into_remainder().chunks_exact_mut($n);
                for c in &mut chunks {
                    // SAFETY: `c` holds one vector's lanes.
                    unsafe { $store(c.as_mut_ptr(), f($load(c.as_ptr()))) };
                }
                a.apply(chunks.into_remainder());
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use crate::ops::{self, Activation};
    use std::arch::x86_64::*;

    /// [`Activation::apply`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn plain_avx512(a: Activation, xs: &mut [f32]) {
        a.apply(xs)
    }

    /// [`Activation::apply`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn plain_avx2(a: Activation, xs: &mut [f32]) {
        a.apply(xs)
    }

    lanes!(
        avx512,
        "avx512f",
        __m512,
        16,
        _mm512_set1_ps,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_fmadd_ps,
        _mm512_div_ps,
        _mm512_max_ps,
        _mm512_min_ps,
        _mm512_cvttps_epi32,
        _mm512_slli_epi32,
        _mm512_add_epi32,
        _mm512_set1_epi32,
        _mm512_castsi512_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps
    );
    lanes!(
        avx2,
        "avx2,fma",
        __m256,
        8,
        _mm256_set1_ps,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_mul_ps,
        _mm256_fmadd_ps,
        _mm256_div_ps,
        _mm256_max_ps,
        _mm256_min_ps,
        _mm256_cvttps_epi32,
        _mm256_slli_epi32,
        _mm256_add_epi32,
        _mm256_set1_epi32,
        _mm256_castsi256_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps
    );

    /// # Safety
    /// The CPU has AVX-512F.
    pub(super) unsafe fn apply_avx512(a: Activation, xs: &mut [f32]) {
        unsafe { avx512::apply(a, xs) }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    pub(super) unsafe fn apply_avx2(a: Activation, xs: &mut [f32]) {
        unsafe { avx2::apply(a, xs) }
    }
}

/// NEON's operations under the names and semantics `lanes!` expects (x86's): `max(lo, x)`
/// and `min(hi, x)` are compares and selects that return `x` when it is NaN and keep a
/// -0.0 (`fmax` would give +0.0 for `max(0.0, -0.0)`); `fma(a, b, c)` is `a * b + c`, fused.
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use crate::kernels::neon::{load, splat as set1, store, V};
    use crate::ops::{self, Activation};
    use std::arch::aarch64::*;

    // SAFETY (every `unsafe` block here): NEON is in aarch64's baseline.
    #[inline(always)]
    fn add(a: V, b: V) -> V {
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    fn sub(a: V, b: V) -> V {
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    fn mul(a: V, b: V) -> V {
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    fn fma(a: V, b: V, c: V) -> V {
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    fn div(a: V, b: V) -> V {
        unsafe { vdivq_f32(a, b) }
    }
    #[inline(always)]
    fn max(lo: V, x: V) -> V {
        unsafe { vbslq_f32(vcltq_f32(x, lo), lo, x) }
    }
    #[inline(always)]
    fn min(hi: V, x: V) -> V {
        unsafe { vbslq_f32(vcgtq_f32(x, hi), hi, x) }
    }
    #[inline(always)]
    fn cvt(x: V) -> int32x4_t {
        unsafe { vcvtq_s32_f32(x) }
    }
    #[inline(always)]
    fn slli<const N: i32>(x: int32x4_t) -> int32x4_t {
        unsafe { vshlq_n_s32::<N>(x) }
    }
    #[inline(always)]
    fn addi(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        unsafe { vaddq_s32(a, b) }
    }
    #[inline(always)]
    fn set1i(x: i32) -> int32x4_t {
        unsafe { vdupq_n_s32(x) }
    }
    #[inline(always)]
    fn cast(x: int32x4_t) -> V {
        unsafe { vreinterpretq_f32_s32(x) }
    }

    lanes!(
        lanes, "neon", V, 4, set1, add, sub, mul, fma, div, max, min, cvt, slli, addi, set1i, cast,
        load, store
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{assert_tier_result, Isa};

    /// Every smooth activation on every tier this CPU has: the scalar definition's bits (on
    /// SSE2 within rounding), on values across the whole range, the clamps' edges, NaN and
    /// infinities, in slices whose lengths leave tails.
    #[test]
    fn every_tier_gives_the_scalar_bits() {
        let mut xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.061).collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            3.0,
            -3.0,
            88.5,
            -87.5,
        ]);
        xs.extend((0..64).map(|i| f32::from_bits(0x3f80_0000 + i * 77_777)));
        for a in [
            Activation::Sigmoid,
            Activation::Silu,
            Activation::HardSwish,
            Activation::HardSigmoid(0.2, 0.5),
        ] {
            let mut want = xs.clone();
            a.apply(&mut want);
            for isa in Isa::available() {
                for len in [xs.len(), 13, 7] {
                    let mut got = xs[..len].to_vec();
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: `available` lists only the tiers this CPU runs.
                        Isa::Avx512 => unsafe { x86::apply_avx512(a, &mut got) },
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: as above.
                        Isa::Avx2 => unsafe { x86::apply_avx2(a, &mut got) },
                        #[cfg(target_arch = "aarch64")]
                        // SAFETY: NEON is in aarch64's baseline.
                        Isa::Neon => unsafe { neon::lanes::apply(a, &mut got) },
                        Isa::Sse2 => apply_unfused(a, &mut got),
                        _ => a.apply(&mut got),
                    }
                    assert_tier_result(isa, &got, &want[..len], &format_args!("{a:?}"));
                }
            }
        }
    }

    /// GELU compiled for each x86 tier (the definition, vectorized by the compiler): the
    /// definition's bits exactly, since the compiler does not fuse its products and sums.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn gelu_on_wide_vectors_gives_the_scalar_bits() {
        let mut xs: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.0037).collect();
        xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 4.5, -4.5]);
        let mut want = xs.clone();
        Activation::Gelu.apply(&mut want);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for isa in Isa::available() {
            let mut got = xs.clone();
            match isa {
                // SAFETY: `available` lists only the tiers this CPU runs.
                Isa::Avx512 => unsafe { x86::plain_avx512(Activation::Gelu, &mut got) },
                // SAFETY: as above.
                Isa::Avx2 => unsafe { x86::plain_avx2(Activation::Gelu, &mut got) },
                _ => apply(Activation::Gelu, &mut got),
            }
            assert_eq!(bits(&got), bits(&want), "{isa}");
        }
        // The definition itself, at a few points against the exact function.
        for x in [-3.0f32, -1.0, -0.25, 0.0, 0.5, 1.0, 2.5] {
            let exact = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / 2f64.sqrt()));
            let mut v = [x];
            Activation::Gelu.apply(&mut v);
            assert!(
                (v[0] as f64 - exact).abs() < 1e-6,
                "{x}: {} vs {exact}",
                v[0]
            );
        }
    }

    /// `erf` in f64 by its series (enough terms for |x| < 3).
    #[cfg(target_arch = "x86_64")]
    fn libm_erf(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..80 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
