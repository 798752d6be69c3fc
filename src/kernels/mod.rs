//! Compute kernels: plain functions over slices. Naive references live in [`reference`].

pub mod gemm;
pub mod reference;
