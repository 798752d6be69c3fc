//! Compute kernels: plain functions over slices.
//!
//! - [`direct`]: the direct convolution on pixel-major images, used for every spatial
//!   convolution (and wide 1x1 ones) and for every HASTE patch;
//! - [`conv`]: im2col + GEMM, for the rest (grouped, dilated, narrow 1x1);
//! - [`gemm`], [`pool`], [`layout`] (transposes, padding, slicing);
//! - [`mod@reference`]: naive versions the tests compare against.

pub mod conv;
pub mod direct;
pub mod gemm;
pub mod isa;
pub mod layout;
pub mod pool;
#[cfg(target_arch = "x86_64")]
mod pool_avx2;
pub mod reference;

/// Grows `v` to at least `n` elements (never shrinks, so steady state does not allocate).
pub(crate) fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}
