//! The NEON vector operations every NEON tier of the kernels builds on (aarch64): one
//! register of 4 floats, loads and stores of a partial last vector lane by lane (NEON has no
//! masked loads and stores, and a copy of a few floats would be a `memcpy` call).

use std::arch::aarch64::*;

/// One NEON register of floats.
pub(crate) type V = float32x4_t;
/// Floats per [`V`].
pub(crate) const LANES: usize = 4;

/// Zeros.
#[inline(always)]
pub(crate) fn zero() -> V {
    // SAFETY: NEON is in aarch64's baseline.
    unsafe { vdupq_n_f32(0.0) }
}

/// `x` on every lane.
#[inline(always)]
pub(crate) fn splat(x: f32) -> V {
    // SAFETY: NEON is in aarch64's baseline.
    unsafe { vdupq_n_f32(x) }
}

/// # Safety
/// `p` addresses 4 readable floats.
#[inline(always)]
pub(crate) unsafe fn load(p: *const f32) -> V {
    // SAFETY: the caller's.
    unsafe { vld1q_f32(p) }
}

/// # Safety
/// `p` addresses 4 writable floats.
#[inline(always)]
pub(crate) unsafe fn store(p: *mut f32, v: V) {
    // SAFETY: the caller's.
    unsafe { vst1q_f32(p, v) }
}

/// The first `n` floats from `p` (all 4 when `n >= 4`), zeros after.
///
/// # Safety
/// `p` addresses `n.min(4)` readable floats, `n >= 1`.
#[inline(always)]
pub(crate) unsafe fn load_n(p: *const f32, n: usize) -> V {
    // SAFETY: the caller's.
    unsafe {
        if n >= 4 {
            return vld1q_f32(p);
        }
        let mut v = vld1q_lane_f32::<0>(p, vdupq_n_f32(0.0));
        if n > 1 {
            v = vld1q_lane_f32::<1>(p.add(1), v);
        }
        if n > 2 {
            v = vld1q_lane_f32::<2>(p.add(2), v);
        }
        v
    }
}

/// The first `n` lanes of `v` to `p` (all 4 when `n >= 4`).
///
/// # Safety
/// `p` addresses `n.min(4)` writable floats, `n >= 1`.
#[inline(always)]
pub(crate) unsafe fn store_n(p: *mut f32, n: usize, v: V) {
    // SAFETY: the caller's.
    unsafe {
        if n >= 4 {
            return vst1q_f32(p, v);
        }
        vst1q_lane_f32::<0>(p, v);
        if n > 1 {
            vst1q_lane_f32::<1>(p.add(1), v);
        }
        if n > 2 {
            vst1q_lane_f32::<2>(p.add(2), v);
        }
    }
}
