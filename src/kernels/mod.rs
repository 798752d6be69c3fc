//! Compute kernels: plain functions over slices.
//!
//! - [`convolution`]: the [`ConvKernel`] interface a plan runs convolutions through, and the
//!   dense kernel ([`DenseConv`]);
//! - [`depthwise`]: depthwise convolutions on pixel-major images;
//! - [`direct`]: the direct convolution on pixel-major images, used for every spatial
//!   convolution (and wide 1x1 ones) and for every HASTE patch;
//! - [`grouped`]: grouped convolutions (group widths 8 to 64) on pixel-major images;
//! - [`im2col`]: im2col + GEMM, for the rest (other grouped, dilated, narrow 1x1);
//! - [`linear`]: the fully connected layer (classifiers);
//! - [`gemm`]: matrix products (the fully connected layers, im2col), every tier;
//! - [`pool`], [`layout`] (transposes, padding, slicing);
//! - [`isa`]: the instruction-set tier every kernel dispatches on;
//! - [`mod@reference`]: naive versions the tests compare against.

/// `$body` for `$q` = 0, 1, ... up to `$n` - 1 (at most 24; `$n` a constant), written out:
/// LLVM leaves a loop of 17 or more columns rolled (the depthwise blocks; the grouped row
/// blocks at stride 2 from 9), and then the sums go through memory and every pixel's tap is
/// a branch. Defined before the kernel modules, which use it.
macro_rules! unroll {
    ($n:expr, $q:ident => $body:block) => {
        unroll!(@ $n, $q, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23)
    };
    (@ $n:expr, $q:ident, $body:block, $($i:literal)*) => {
        const { assert!($n <= 24, "unroll! covers 24 columns") };
        $(
            if $i < $n {
                let $q: usize = $i;
                $body
            }
        )*
    };
}

pub mod activation;
pub mod affine;
pub mod aligned;
pub mod cache;
pub mod convolution;
pub mod depthwise;
pub mod direct;
pub mod gemm;
pub mod grouped;
pub mod im2col;
pub mod isa;
pub mod layout;
pub mod linear;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
pub mod normalize;
pub mod pool;
pub mod reduce;
pub mod reference;
pub mod shuffle;

pub use convolution::{
    buffer_bytes, scale_image_into, scale_input, ConvBatch, ConvJob, ConvKernel, DenseConv,
    Scratch, ScratchBytes, Scratches,
};

/// Grows `v` to at least `n` elements (never shrinks, so steady state does not allocate).
pub(crate) fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// Operands up to this many floats (64 KB) [`prefetch_to_l2`] asks for; longer ones are
/// streams the hardware prefetcher follows, and a whole large image would evict what the
/// current one uses.
const PREFETCH_FLOATS: usize = 16 << 10;

/// Asks the cache for `data` into L2, a line at a time, when it is short (at most
/// [`PREFETCH_FLOATS`]): a layer-at-a-time step calls it for the next image's operands while
/// it computes this one. A small image's activations (16 KB at CIFAR's 8 x 8 x 64) were
/// otherwise read from L3 a line at a time when its turn came: ResNet-56's 64-channel
/// convolutions ran 3-5 % slower layer by layer than image by image at batch 256.
pub(crate) fn prefetch_to_l2(data: &[f32]) {
    if data.len() > PREFETCH_FLOATS {
        return;
    }
    for line in data.chunks(16) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint: it never faults and changes no memory. SSE is in
        // x86-64's baseline.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast());
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `prfm` is a hint: it never faults and changes no register or memory.
        unsafe {
            std::arch::asm!("prfm pldl2keep, [{0}]", in(reg) line.as_ptr(), options(nostack, readonly, preserves_flags));
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = line;
    }
}

/// An output that several rayon tasks write, each its own disjoint elements (channels of
/// every pixel, columns of every row), through a raw pointer: slices cannot express such
/// interleaved parts.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);

// SAFETY: every user writes disjoint elements from each task (its own documented split).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The output from float `offset` on (taking `self`, so a closure captures the whole
    /// wrapper and not its pointer field).
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// What the pixel-major convolution kernels do to each finished output pixel (all its
/// channels, in L1): the bias, then the op's fused residual and the activation after it, or
/// its activation alone.
#[derive(Clone, Debug)]
pub(crate) struct PixelFinish {
    bias: Option<Vec<f32>>,
    activation: crate::ops::Activation,
    /// The activation after a fused residual addition ([`crate::ops::ConvOp::residual`]).
    residual: Option<crate::ops::Activation>,
}

impl PixelFinish {
    pub(crate) fn of(op: &crate::ops::ConvOp) -> PixelFinish {
        PixelFinish {
            bias: op.bias.clone(),
            activation: op.activation,
            residual: op.residual,
        }
    }

    /// Pixels of `c` channels each (`o`, a run of whole pixels, at most a few thousand
    /// values so they stay in L1) finished, with `residual` theirs if given: the bias and
    /// residual pixel by pixel, then the activation once over the run, which pays its call
    /// once and keeps its lanes full.
    #[inline(always)]
    pub(crate) fn apply_pixels(&self, c: usize, o: &mut [f32], residual: Option<&[f32]>) {
        let residual = residual.filter(|_| self.residual.is_some());
        if let Some(b) = &self.bias {
            o.chunks_exact_mut(c)
                .for_each(|o| o.iter_mut().zip(b).for_each(|(v, b)| *v += b));
        }
        if let Some(r) = residual {
            o.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
        let activation = match (residual, self.residual) {
            (Some(_), Some(after)) => after,
            _ => self.activation,
        };
        activation::apply(activation, o);
    }

    /// The activation [`Self::apply_pixels`] applies with `residual`, and the residual it
    /// adds.
    fn parts<'a>(
        &self,
        residual: Option<&'a [f32]>,
    ) -> (crate::ops::Activation, Option<&'a [f32]>) {
        match (residual, self.residual) {
            (Some(r), Some(after)) => (after, Some(r)),
            _ => (self.activation, None),
        }
    }

    /// Whether [`Self::finish_into`] applies the activation with `residual` (a
    /// piecewise-linear one, inlined per few values); else [`Self::activate`] does, over a
    /// run.
    #[inline(always)]
    pub(crate) fn activates_in_place(&self, residual: Option<&[f32]>) -> bool {
        self.parts(residual).0.apply_piecewise_linear(&mut [])
    }

    /// Sums `sums` of channels `c0..c0 + N` of one pixel written into `o`, with what
    /// [`Self::apply_pixels`] does to them (`residual`: the pixel's, all its channels; the
    /// activation only when [`Self::activates_in_place`]), in the same order: the same bits,
    /// the output written once while the sums are in registers or L1.
    #[inline(always)]
    pub(crate) fn finish_into<const N: usize>(
        &self,
        sums: &[f32; N],
        c0: usize,
        o: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let mut v = *sums;
        if let Some(b) = &self.bias {
            v.iter_mut().zip(&b[c0..c0 + N]).for_each(|(v, b)| *v += b);
        }
        let (activation, residual) = self.parts(residual);
        if let Some(r) = residual {
            v.iter_mut().zip(&r[c0..c0 + N]).for_each(|(v, r)| *v += r);
        }
        activation.apply_piecewise_linear(&mut v);
        o[..N].copy_from_slice(&v);
    }

    /// The activation of a run of pixels finished by [`Self::finish_into`] when it did not
    /// apply it (`residual` as there: whether the run had one).
    pub(crate) fn activate(&self, o: &mut [f32], residual: Option<&[f32]>) {
        if !self.activates_in_place(residual) {
            activation::apply(self.parts(residual).0, o);
        }
    }
}
