//! Step 0: the knobs of HASTE for one network, validated once.

use crate::error::{Error, Result};

/// How hyperplane entries are drawn (see [`super::hyperplanes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HyperplaneKind {
    /// The paper's choice: entries are 0 with probability `sparsity`, else +1 or -1 with equal
    /// probability, so a projection is only additions and subtractions.
    #[default]
    Ternary,
    /// Dense standard normal entries (classic SimHash); `sparsity` is ignored. For comparison.
    Gaussian,
}

/// Configuration of HASTE. `Default` is the paper's method with `L = 14`, `s = 2/3`, `P = 4`,
/// with one exact refinement on (zero channels left out, [`Self::drop_zero_channels`]).
///
/// ```
/// use haste::haste::HasteConfig;
/// let cfg = HasteConfig { hyperplanes: 20, ..HasteConfig::default() };
/// assert!(cfg.validate().is_ok());
/// assert!(HasteConfig { hyperplanes: 65, ..cfg }.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HasteConfig {
    /// Number of hyperplanes L (bits of a bucket code), `1..=64`. More => fewer merges.
    pub hyperplanes: usize,
    /// Probability that a ternary hyperplane entry is zero, `0 <= s < 1`.
    pub sparsity: f32,
    /// Output patch side P (edge patches are smaller), `>= 1`.
    pub tile: usize,
    /// Seed of the hyperplanes; each layer derives its own seed from it (see [`layer_seed`]).
    pub seed: u64,
    /// Distribution of the hyperplane entries.
    pub kind: HyperplaneKind,
    /// Subtract the per-pixel channel mean before hashing (the paper does).
    pub centering: bool,
    /// Magnitude-aware hashing (not in the paper): also bucket by the log2 of each channel's
    /// L2 norm over the window, in steps of this size (`Some(0.5)`: half octaves).
    pub magnitude_bins: Option<f32>,
    /// Leave out of the buckets the channels that are zero over a patch's whole window (not
    /// in the paper): they add nothing to the convolution, so leaving them out is exact,
    /// saves their terms, and keeps a dead channel from being averaged into a live one.
    pub drop_zero_channels: bool,
}

impl Default for HasteConfig {
    fn default() -> Self {
        HasteConfig {
            hyperplanes: 14,
            sparsity: 2.0 / 3.0,
            tile: 4,
            seed: 0,
            kind: HyperplaneKind::Ternary,
            centering: true,
            magnitude_bins: None,
            drop_zero_channels: true,
        }
    }
}

impl HasteConfig {
    /// Checks every knob; [`Error::InvalidArgument`] names the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("HASTE config: {m}")));
        if self.hyperplanes == 0 || self.hyperplanes > 64 {
            return bad(format!(
                "hyperplanes must be in 1..=64, got {}",
                self.hyperplanes
            ));
        }
        if !(self.sparsity >= 0.0 && self.sparsity < 1.0) {
            return bad(format!("sparsity must be in [0, 1), got {}", self.sparsity));
        }
        if self.tile == 0 {
            return bad("tile must be at least 1".to_string());
        }
        if let Some(step) = self.magnitude_bins {
            if !(step.is_finite() && step > 0.0) {
                return bad(format!(
                    "magnitude bin step must be finite and > 0, got {step}"
                ));
            }
        }
        Ok(())
    }
}

/// The seed of layer `layer_index`'s hyperplanes: a SplitMix64 mix of the config seed and the
/// layer index, so layers get independent hyperplanes and runs are reproducible.
pub fn layer_seed(seed: u64, layer_index: usize) -> u64 {
    fn splitmix64(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    splitmix64(seed ^ splitmix64(layer_index as u64 ^ 0x4841_5354_4521))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert!(HasteConfig::default().validate().is_ok());
    }

    #[test]
    fn rejects_bad_knobs() {
        let d = HasteConfig::default();
        let bads = [
            HasteConfig {
                hyperplanes: 0,
                ..d.clone()
            },
            HasteConfig {
                hyperplanes: 65,
                ..d.clone()
            },
            HasteConfig {
                sparsity: 1.0,
                ..d.clone()
            },
            HasteConfig {
                sparsity: -0.1,
                ..d.clone()
            },
            HasteConfig {
                sparsity: f32::NAN,
                ..d.clone()
            },
            HasteConfig {
                tile: 0,
                ..d.clone()
            },
            HasteConfig {
                magnitude_bins: Some(0.0),
                ..d.clone()
            },
            HasteConfig {
                magnitude_bins: Some(-1.0),
                ..d.clone()
            },
            HasteConfig {
                magnitude_bins: Some(f32::INFINITY),
                ..d.clone()
            },
            HasteConfig {
                magnitude_bins: Some(f32::NAN),
                ..d.clone()
            },
        ];
        for cfg in bads {
            assert!(
                matches!(cfg.validate(), Err(Error::InvalidArgument(_))),
                "{cfg:?} should be rejected"
            );
        }
        let ok = [
            HasteConfig {
                hyperplanes: 1,
                ..d.clone()
            },
            HasteConfig {
                hyperplanes: 64,
                sparsity: 0.0,
                ..d.clone()
            },
            HasteConfig {
                tile: 1,
                magnitude_bins: Some(0.5),
                ..d.clone()
            },
        ];
        for cfg in ok {
            assert!(cfg.validate().is_ok(), "{cfg:?}");
        }
    }

    #[test]
    fn layer_seeds_differ() {
        assert_ne!(layer_seed(0, 0), layer_seed(0, 1));
        assert_ne!(layer_seed(0, 0), layer_seed(1, 0));
        assert_eq!(layer_seed(7, 3), layer_seed(7, 3));
    }
}
