//! What happens to each output of the direct kernel once its sum is complete: the bias, a
//! fused residual addition, the activation; in scalar code and on 16 lanes with the same bits.

use crate::ops::Activation;

/// What happens to each output once its sum is complete: the bias is added, then a residual
/// connection's value, then the activation applied, while the output is still in cache (a
/// separate pass would read a large layer's output back from memory).
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// One value per output channel.
    pub bias: Option<&'a [f32]>,
    /// One value per output, laid out as the call's `out` (the same offsets).
    pub residual: Option<&'a [f32]>,
    pub activation: Activation,
}

/// An [`Activation`] on 16 lanes. One type per activation, so a loop over a block's vectors
/// is compiled once per activation with no branch inside ([`with_lanes`] picks the type).
#[cfg(target_arch = "x86_64")]
pub(super) trait Lanes {
    /// False for [`lanes::Deferred`]: the block finishes its sums outside its loop, from
    /// the stack ([`finish_sums`]) or, in HASTE's patches, from its stored output
    /// ([`finish_block`]).
    const IN_REGISTERS: bool = true;

    /// # Safety
    /// Only called from AVX-512 code (it is inlined there).
    unsafe fn apply(&self, x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512;
}

#[cfg(target_arch = "x86_64")]
pub(super) mod lanes {
    use super::Lanes;
    use std::arch::x86_64::*;

    pub struct Identity;
    pub struct Relu;
    pub struct LeakyRelu(pub f32);
    pub struct Clip(pub f32, pub f32);
    /// The smooth activations (Sigmoid, SiLU, hard-swish, ...), by
    /// [`crate::kernels::activation`]'s lanes, which give the scalar code's bits.
    pub struct Smooth(pub crate::ops::Activation);

    impl Lanes for Smooth {
        #[inline(always)]
        unsafe fn apply(&self, x: __m512) -> __m512 {
            // SAFETY: called from AVX-512 code only (the trait's contract).
            unsafe { crate::kernels::activation::x86::avx512::activate(self.0, x) }
        }
    }

    /// No activation chosen by the caller: the block's epilogue runs in a function of its
    /// own (see [`Lanes::IN_REGISTERS`]).
    pub struct Deferred;

    impl Lanes for Deferred {
        const IN_REGISTERS: bool = false;

        #[inline(always)]
        unsafe fn apply(&self, x: __m512) -> __m512 {
            x
        }
    }

    impl Lanes for Identity {
        #[inline(always)]
        unsafe fn apply(&self, x: __m512) -> __m512 {
            x
        }
    }

    impl Lanes for Relu {
        /// `max(0, x)` returns `x` when either is NaN, and keeps -0.0 as `x < 0` does.
        #[inline(always)]
        unsafe fn apply(&self, x: __m512) -> __m512 {
            _mm512_max_ps(_mm512_setzero_ps(), x)
        }
    }

    /// The comparisons are ordered, so NaN passes through as in the scalar code.
    impl Lanes for LeakyRelu {
        #[inline(always)]
        unsafe fn apply(&self, x: __m512) -> __m512 {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
            _mm512_mask_mul_ps(x, neg, x, _mm512_set1_ps(self.0))
        }
    }

    impl Lanes for Clip {
        #[inline(always)]
        unsafe fn apply(&self, x: __m512) -> __m512 {
            let (lo, hi) = (_mm512_set1_ps(self.0), _mm512_set1_ps(self.1));
            let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, hi);
            let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lo);
            _mm512_mask_mov_ps(_mm512_mask_mov_ps(x, above, hi), below, lo)
        }
    }
}

/// Evaluates `$body` with `$act` bound to the [`Lanes`] type of activation `$a`.
#[cfg(target_arch = "x86_64")]
macro_rules! with_lanes {
    ($a:expr, $act:ident => $body:expr) => {
        match $a {
            $crate::ops::Activation::None => {
                let $act = $crate::kernels::direct::epilogue::lanes::Identity;
                $body
            }
            $crate::ops::Activation::Relu => {
                let $act = $crate::kernels::direct::epilogue::lanes::Relu;
                $body
            }
            $crate::ops::Activation::LeakyRelu(a) => {
                let $act = $crate::kernels::direct::epilogue::lanes::LeakyRelu(a);
                $body
            }
            $crate::ops::Activation::Clip(lo, hi) => {
                let $act = $crate::kernels::direct::epilogue::lanes::Clip(lo, hi);
                $body
            }
            other => {
                let $act = $crate::kernels::direct::epilogue::lanes::Smooth(other);
                $body
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(super) use with_lanes;

impl Epilogue<'_> {
    /// Leaves the sums as they are.
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        residual: None,
        activation: Activation::None,
    };

    /// Whether it leaves the sums as they are.
    pub(super) fn is_none(&self) -> bool {
        self.bias.is_none() && self.residual.is_none() && self.activation == Activation::None
    }

    /// Output channels `co0..co0 + o.len()` of one output, whose first value sits at offset
    /// `at` of the call's output, as the separate passes would do them.
    pub(super) fn apply(&self, co0: usize, at: usize, o: &mut [f32]) {
        if let Some(b) = self.bias {
            o.iter_mut().zip(&b[co0..]).for_each(|(v, b)| *v += b);
        }
        if let Some(r) = self.residual {
            o.iter_mut().zip(&r[at..]).for_each(|(v, r)| *v += r);
        }
        crate::kernels::activation::apply(self.activation, o);
    }

    /// The bias and the residual of [`Self::apply`] on 16 lanes (`mask` the lanes in use).
    ///
    /// # Safety
    /// Only called from AVX-512 code (it is inlined there); `co + 16` lanes of the bias and
    /// `at + 16` of the residual readable under `mask`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(super) unsafe fn add_avx512(
        &self,
        co: usize,
        at: usize,
        mask: u16,
        x: std::arch::x86_64::__m512,
    ) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let x = match self.bias {
            Some(b) => _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, b.as_ptr().add(co))),
            None => x,
        };
        match self.residual {
            Some(r) => _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, r.as_ptr().add(at))),
            None => x,
        }
    }
}

/// The epilogue of a block just stored (still in L1): the pair blocks' and HASTE's patches'.
/// Kept out of the blocks: its constants, hoisted into their loops, would push the 24
/// accumulators out of registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline(never)]
pub(super) unsafe fn finish_block<const MR: usize, const NV: usize>(
    e: Epilogue,
    op: *mut f32,
    at: [usize; MR],
    co0: usize,
    masks: [u16; 4],
) {
    if e.is_none() {
        return;
    }
    // SAFETY: forwarded from the caller.
    with_lanes!(e.activation, act => unsafe { finish_with::<MR, NV>(e, &act, op, at, co0, masks) })
}

/// The epilogue of a block whose `MR x NV` sums lie at `sums` (vector `v` of output `i` at
/// `16 * (i * NV + v)`), into `op`. Kept out of the block, as [`finish_block`] is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline(never)]
pub(super) unsafe fn finish_sums<const MR: usize, const NV: usize>(
    e: Epilogue,
    sums: *const f32,
    op: *mut f32,
    at: [usize; MR],
    co0: usize,
    masks: [u16; 4],
) {
    use std::arch::x86_64::*;
    with_lanes!(e.activation, act => {
        for (i, &o) in at.iter().enumerate() {
            for (v, &mask) in masks.iter().enumerate().take(NV) {
                let offset = o + co0 + 16 * v;
                let x = unsafe { _mm512_loadu_ps(sums.add(16 * (i * NV + v))) };
                let x = unsafe { act.apply(e.add_avx512(co0 + 16 * v, offset, mask, x)) };
                unsafe { _mm512_mask_storeu_ps(op.add(offset), mask, x) };
            }
        }
    })
}

/// [`finish_block`] for one activation type: add the bias and the residual, then activate,
/// `NV` vectors of each output at offsets `at` (plus `co0`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn finish_with<const MR: usize, const NV: usize>(
    e: Epilogue,
    act: &impl Lanes,
    op: *mut f32,
    at: [usize; MR],
    co0: usize,
    masks: [u16; 4],
) {
    use std::arch::x86_64::*;
    for o in at {
        for (v, &mask) in masks.iter().enumerate().take(NV) {
            let offset = o + co0 + 16 * v;
            let x = _mm512_maskz_loadu_ps(mask, op.add(offset));
            let x = act.apply(e.add_avx512(co0 + 16 * v, offset, mask, x));
            _mm512_mask_storeu_ps(op.add(offset), mask, x);
        }
    }
}
