//! The NEON kernel's register blocks (aarch64). NEON has 32 vector registers of 4 lanes, so a
//! block holds `MR` outputs x `NV` vectors with `MR * NV <= 24` accumulators, beside the `NV`
//! filter vectors of a term and one broadcast input value: 6 outputs x 16 channels, so each
//! filter vector loaded feeds 6 FMAs, as on AVX2 (the classic 6 x 16 block of NEON SGEMM
//! kernels). The blocks themselves are [`super::narrow`]'s, shared with AVX2; this file gives
//! them NEON's vector operations (`fmla` is fused, so the bits are the portable kernel's).
//! No speed is claimed for this tier until a real ARM machine measures it; its tests run
//! under user-mode emulation.

use crate::kernels::activation::neon::lanes::activate;
use crate::kernels::neon::{load, splat as set1, store, zero, LANES, V};
use std::arch::aarch64::*;

/// The lanes in use of a partial last vector (NEON has no masked loads and stores).
type Tail = usize;

#[inline(always)]
fn tail(lanes: usize) -> Tail {
    lanes
}
#[inline(always)]
unsafe fn splat(p: *const f32) -> V {
    // SAFETY: the caller's.
    unsafe { vld1q_dup_f32(p) }
}
#[inline(always)]
fn fma(x: V, w: V, acc: V) -> V {
    // SAFETY: NEON is in aarch64's baseline.
    unsafe { vfmaq_f32(acc, x, w) }
}
/// The first `t` floats from `p`, zeros after.
#[inline(always)]
unsafe fn load_tail(p: *const f32, t: Tail) -> V {
    // SAFETY: the caller's.
    unsafe { crate::kernels::neon::load_n(p, t) }
}
/// The first `t` lanes of `v` to `p`.
#[inline(always)]
unsafe fn store_tail(p: *mut f32, t: Tail, v: V) {
    // SAFETY: the caller's.
    unsafe { crate::kernels::neon::store_n(p, t, v) }
}

#[inline(always)]
fn prefetch(p: *const f32) {
    // SAFETY: `prfm` is a hint: it never faults and changes no register or memory.
    unsafe {
        std::arch::asm!("prfm pldl2keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    }
}

#[inline(always)]
fn add(a: V, b: V) -> V {
    // SAFETY: NEON is in aarch64's baseline.
    unsafe { vaddq_f32(a, b) }
}
/// `x < 0 ? 0 : x`, by an ordered comparison and a select (`vmaxq_f32` would turn -0.0
/// into +0.0 and NaN into the default NaN).
#[inline(always)]
fn relu(x: V) -> V {
    // SAFETY: NEON is in aarch64's baseline.
    unsafe { vbslq_f32(vcltzq_f32(x), vdupq_n_f32(0.0), x) }
}
/// `x < 0 ? x * alpha : x`.
#[inline(always)]
fn leaky_relu(x: V, alpha: V) -> V {
    // SAFETY: NEON is in aarch64's baseline.
    unsafe { vbslq_f32(vcltzq_f32(x), vmulq_f32(x, alpha), x) }
}
/// `x < lo ? lo : x > hi ? hi : x`.
#[inline(always)]
fn clip(x: V, lo: V, hi: V) -> V {
    // SAFETY: NEON is in aarch64's baseline.
    unsafe {
        let above = vbslq_f32(vcgtq_f32(x, hi), hi, x);
        vbslq_f32(vcltq_f32(x, lo), lo, above)
    }
}

super::narrow::narrow_tier!(mr: 6, nv: 4, #[target_feature(enable = "neon")]);
