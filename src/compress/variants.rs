//! The compressed-convolution variants a [`super::CompressOptions::variant`] can name.
//!
//! A variant is a function that builds a [`ConvKernel`] for one convolution from its op, the
//! HASTE knobs and its index among the network's convolutions (which seeds it). To add one,
//! write its kernel in a file of its own and add one line to [`VARIANTS`].

use crate::error::{Error, Result};
use crate::haste::{HasteConfig, HasteKernel};
use crate::kernels::ConvKernel;
use crate::ops::ConvOp;
use std::sync::Arc;

/// Builds a variant's kernel for `op`, the `layer_index`-th convolution.
pub type Build = fn(&ConvOp, &HasteConfig, usize) -> Result<Arc<dyn ConvKernel>>;

/// Every variant: (name, builder).
pub const VARIANTS: &[(&str, Build)] = &[("haste", haste)];

/// The variant [`super::CompressOptions`] uses by default.
pub const DEFAULT: &str = "haste";

/// The variants' names, for help texts and errors.
pub fn names() -> Vec<&'static str> {
    VARIANTS.iter().map(|(n, _)| *n).collect()
}

/// The builder of the variant called `name`.
pub fn find(name: &str) -> Result<Build> {
    VARIANTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown compression variant '{name}' (known: {})",
                names().join(", ")
            ))
        })
}

fn haste(op: &ConvOp, config: &HasteConfig, layer_index: usize) -> Result<Arc<dyn ConvKernel>> {
    Ok(Arc::new(HasteKernel::new(op, config, layer_index)?))
}
