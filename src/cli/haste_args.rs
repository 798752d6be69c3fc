//! The HASTE knobs shared by `eval`, `sweep`, `inspect` and `bench`.

use crate::error::{Error, Result};
use crate::haste::{HasteConfig, HyperplaneKind};
use crate::plan::CompressOptions;
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Sparse ternary entries (the paper): additions only.
    Ternary,
    /// Dense Gaussian entries (classic SimHash), for ablations.
    Gaussian,
}

/// HASTE knobs other than the number of hyperplanes.
#[derive(Args, Debug, Clone)]
pub struct HasteKnobs {
    /// Probability that a hyperplane entry is zero (0 <= s < 1); fractions like 2/3 accepted.
    #[arg(long, default_value = "2/3", value_parser = parse_fraction)]
    pub sparsity: f32,
    /// Output patch side P in pixels.
    #[arg(long, default_value_t = 4)]
    pub tile: usize,
    /// Index of the first convolution to compress (0 = the first conv, which always stays
    /// dense; grouped convs stay dense too).
    #[arg(long, default_value_t = 1)]
    pub start_layer: usize,
    /// Seed of the random hyperplanes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Distribution of the hyperplane entries.
    #[arg(long, value_enum, default_value_t = Kind::Ternary)]
    pub hyperplane_kind: Kind,
    /// Hash the raw channels, without subtracting the per-pixel channel mean (ablation).
    #[arg(long)]
    pub no_centering: bool,
    /// Magnitude-aware hashing: also bucket channels by log2 of their norm over the window,
    /// in steps of this size (e.g. 0.5). Not in the paper; helps LeakyReLU networks.
    #[arg(long)]
    pub magnitude_bins: Option<f32>,
    /// Keep 1x1 convolutions dense.
    #[arg(long)]
    pub skip_1x1: bool,
    /// Keep HASTE on layers where it measures slower than dense on the first batch (by
    /// default those layers go back to dense).
    #[arg(long)]
    pub keep_slow_layers: bool,
}

/// Parses "0.5", "2/3".
pub fn parse_fraction(s: &str) -> std::result::Result<f32, String> {
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let a: f32 = a
                .trim()
                .parse()
                .map_err(|_| format!("'{s}' is not a number or fraction"))?;
            let b: f32 = b
                .trim()
                .parse()
                .map_err(|_| format!("'{s}' is not a number or fraction"))?;
            a / b
        }
        None => s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a number or fraction"))?,
    };
    Ok(v)
}

impl HasteKnobs {
    /// The compression options for `hyperplanes` L, validated.
    pub fn options(&self, hyperplanes: usize) -> Result<CompressOptions> {
        if !(1..=64).contains(&hyperplanes) {
            return Err(Error::InvalidArgument(format!(
                "--hyperplanes {hyperplanes}: L must be 1 to 64"
            )));
        }
        let config = HasteConfig {
            hyperplanes,
            sparsity: self.sparsity,
            tile: self.tile,
            seed: self.seed,
            kind: match self.hyperplane_kind {
                Kind::Ternary => HyperplaneKind::Ternary,
                Kind::Gaussian => HyperplaneKind::Gaussian,
            },
            centering: !self.no_centering,
            magnitude_bins: self.magnitude_bins,
        };
        config.validate()?;
        // The first convolution reads RGB and always stays dense: 0 and 1 mean the same.
        Ok(CompressOptions {
            config,
            start_layer: self.start_layer.max(1),
            skip_pointwise: self.skip_1x1,
            keep_dense_when_slower: !self.keep_slow_layers,
        })
    }
}
