//! Operators: one params struct per op, built once at import.

mod conv;

pub use conv::Conv2dParams;
