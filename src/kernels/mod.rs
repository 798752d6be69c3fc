//! Compute kernels: plain functions over slices.
//!
//! - [`convolution`]: the [`ConvKernel`] interface a plan runs convolutions through, and the
//!   dense kernel ([`DenseConv`]);
//! - [`depthwise`]: depthwise convolutions on pixel-major images;
//! - [`direct`]: the direct convolution on pixel-major images, used for every spatial
//!   convolution (and wide 1x1 ones) and for every HASTE patch;
//! - [`grouped`]: grouped convolutions (group widths 8 to 64) on pixel-major images;
//! - [`im2col`]: im2col + GEMM, for the rest (other grouped, dilated, narrow 1x1);
//! - [`gemm`], [`pool`], [`layout`] (transposes, padding, slicing);
//! - [`isa`]: the instruction-set tier every kernel dispatches on;
//! - [`mod@reference`]: naive versions the tests compare against.

pub mod convolution;
pub mod depthwise;
pub mod direct;
pub mod gemm;
pub mod grouped;
pub mod im2col;
pub mod isa;
pub mod layout;
pub mod pool;
pub mod reference;

pub use convolution::{ConvJob, ConvKernel, DenseConv, Scratch, Scratches};

/// Grows `v` to at least `n` elements (never shrinks, so steady state does not allocate).
pub(crate) fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}
