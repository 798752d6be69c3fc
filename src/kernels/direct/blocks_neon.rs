//! The NEON kernel's register blocks (aarch64). NEON has 32 vector registers of 4 lanes, so a
//! block holds `MR` outputs x `NV` vectors with `MR * NV <= 24` accumulators, beside the `NV`
//! filter vectors of a term and one broadcast input value: 6 outputs x 16 channels, so each
//! filter vector loaded feeds 6 FMAs, as on AVX2 (the classic 6 x 16 block of NEON SGEMM
//! kernels). The blocks themselves are [`super::narrow`]'s, shared with AVX2; this file gives
//! them NEON's vector operations (`fmla` is fused, so the bits are the portable kernel's).
//! No speed is claimed for this tier until a real ARM machine measures it; its tests run
//! under user-mode emulation.

use std::arch::aarch64::*;

type V = float32x4_t;
/// The lanes in use of a partial last vector (NEON has no masked loads and stores).
type Tail = usize;
const LANES: usize = 4;

#[inline(always)]
fn tail(lanes: usize) -> Tail {
    lanes
}
#[inline(always)]
fn zero() -> V {
    // SAFETY: NEON is in aarch64's baseline.
    unsafe { vdupq_n_f32(0.0) }
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
#[inline(always)]
unsafe fn load(p: *const f32) -> V {
    // SAFETY: the caller's.
    unsafe { vld1q_f32(p) }
}
/// The first `t` floats from `p`, zeros after (lane by lane: a copy of `t` floats would be
/// a `memcpy` call per term).
#[inline(always)]
unsafe fn load_tail(p: *const f32, t: Tail) -> V {
    // SAFETY: the caller's: `t` floats from `p`.
    unsafe {
        if t >= 4 {
            return vld1q_f32(p);
        }
        let mut v = vld1q_lane_f32::<0>(p, vdupq_n_f32(0.0));
        if t > 1 {
            v = vld1q_lane_f32::<1>(p.add(1), v);
        }
        if t > 2 {
            v = vld1q_lane_f32::<2>(p.add(2), v);
        }
        v
    }
}
#[inline(always)]
unsafe fn store(p: *mut f32, v: V) {
    // SAFETY: the caller's.
    unsafe { vst1q_f32(p, v) }
}
/// The first `t` lanes of `v` to `p`.
#[inline(always)]
unsafe fn store_tail(p: *mut f32, t: Tail, v: V) {
    // SAFETY: the caller's: `t` floats from `p`.
    unsafe {
        if t >= 4 {
            return vst1q_f32(p, v);
        }
        vst1q_lane_f32::<0>(p, v);
        if t > 1 {
            vst1q_lane_f32::<1>(p.add(1), v);
        }
        if t > 2 {
            vst1q_lane_f32::<2>(p.add(2), v);
        }
    }
}

super::narrow::narrow_tier!(mr: 6, nv: 4, #[target_feature(enable = "neon")]);
