//! Compute kernels: plain functions over slices. Naive references live in [`mod@reference`].

pub mod conv;
pub mod direct;
pub mod gemm;
pub mod layout;
pub mod pool;
pub mod reference;
