//! The HASTE knobs shared by `eval`, `sweep`, `inspect` and `bench`.

use crate::compress::{CompressOptions, MagnitudeMode};
use crate::error::{Error, Result};
use crate::haste::cost::TILE_CHOICES;
use crate::haste::{HasteConfig, HyperplaneKind};
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
    /// Output patch side P in pixels, or `auto`: each compressed layer runs at the tile
    /// (4, 8 or 16) of its least predicted time on the first batch (`calibrate`: 4 or 8).
    #[arg(long, default_value = "auto", value_parser = parse_tile)]
    pub tile: TileArg,
    /// Index of the first convolution to compress (execution order from 0; the first conv
    /// reads RGB and always stays dense, grouped convs too). Default 2: the second conv works
    /// at the highest resolution and was the most fragile one measured (see README).
    #[arg(long, default_value_t = 2)]
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
    /// Magnitude-aware hashing (not in the paper): also bucket channels by log2 of their norm
    /// over the window. `auto` (default): step 0.5 where a layer's input can be negative
    /// (LeakyReLU networks), none after ReLU; `off`; or a step such as 0.5 for every layer.
    #[arg(long, default_value = "auto", value_parser = parse_magnitude, allow_hyphen_values = true)]
    pub magnitude_bins: MagnitudeMode,
    /// Compress 1x1 convolutions too (kept dense by default: hashing costs too much there).
    #[arg(long)]
    pub include_1x1: bool,
    /// Compress every eligible layer, also those where HASTE's per-patch overhead is too
    /// large a share of the layer's cost to ever be faster than dense (kept dense by default;
    /// the FLOPs view of the paper, e.g. for the CIFAR ResNets, whose layers are all small).
    #[arg(long)]
    pub all_layers: bool,
    /// The paper's method as published: start at the second conv, compress 1x1 convs, angular
    /// hash only, every layer (overrides --start-layer, --include-1x1, --magnitude-bins and
    /// implies --all-layers).
    #[arg(long)]
    pub paper: bool,
    /// Time HASTE against dense per layer on the first batch and keep the dense kernel where
    /// HASTE is slower (results then depend on the machine's timing).
    #[arg(long)]
    pub keep_dense_when_slower: bool,
}

/// `--tile`: chosen per layer, or one side for every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileArg {
    /// Each layer chooses among [`TILE_CHOICES`] on the first batch.
    Auto,
    Fixed(usize),
}

impl TileArg {
    /// The tiles a layer may take: [`TILE_CHOICES`] or the one given.
    pub fn choices(self) -> Vec<usize> {
        self.choices_or(&TILE_CHOICES)
    }

    /// The tiles given, or `auto` when left to haste.
    pub fn choices_or(self, auto: &[usize]) -> Vec<usize> {
        match self {
            TileArg::Auto => auto.to_vec(),
            TileArg::Fixed(t) => vec![t],
        }
    }
}

/// Parses "auto" or a side of at least 1.
pub fn parse_tile(s: &str) -> std::result::Result<TileArg, String> {
    match s {
        "auto" => Ok(TileArg::Auto),
        _ => match s.parse::<usize>() {
            Ok(t) if t >= 1 => Ok(TileArg::Fixed(t)),
            _ => Err(format!(
                "'{s}': expected auto or a side of at least 1 pixel"
            )),
        },
    }
}

/// Parses "auto", "off" or a positive step.
pub fn parse_magnitude(s: &str) -> std::result::Result<MagnitudeMode, String> {
    match s {
        "auto" => Ok(MagnitudeMode::SignedInputs(0.5)),
        "off" | "none" => Ok(MagnitudeMode::Off),
        _ => match s.parse::<f32>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(MagnitudeMode::Always(v)),
            _ => Err(format!(
                "'{s}': expected auto, off or a positive step such as 0.5"
            )),
        },
    }
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
            tile: self.tile.choices()[0],
            seed: self.seed,
            kind: match self.hyperplane_kind {
                Kind::Ternary => HyperplaneKind::Ternary,
                Kind::Gaussian => HyperplaneKind::Gaussian,
            },
            centering: !self.no_centering,
            magnitude_bins: None,
            drop_zero_channels: true,
        };
        config.validate()?;
        if self.paper {
            return Ok(CompressOptions::paper(config));
        }
        Ok(CompressOptions {
            config,
            // The first convolution reads RGB and always stays dense: 0 and 1 mean the same.
            start_layer: self.start_layer.max(1),
            skip_pointwise: !self.include_1x1,
            magnitude: self.magnitude_bins,
            keep_dense_when_slower: self.keep_dense_when_slower,
            cost_aware: !self.all_layers,
            tile_choices: self.tile.choices(),
            ..CompressOptions::default()
        })
    }
}
