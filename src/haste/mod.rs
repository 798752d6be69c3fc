//! HASTE (Meiner et al., 2023, "Data-free acceleration of CNNs with hashing"): make a
//! pretrained convolution cheaper, with no data and no fine-tuning, by merging input channels
//! that look alike.
//!
//! Inside a small spatial patch, many feature-map channels are (nearly) the same up to noise.
//! HASTE finds them with locality-sensitive hashing and convolves the merged input with merged
//! filters. Per convolution and per `P x P` output patch, in file order:
//!
//! 0. [`config`]: the knobs (`L` hyperplanes, sparsity `s`, tile `P`, seed, ...).
//! 1. [`hyperplanes`]: `L` sparse ternary random hyperplanes per layer, over the input window
//!    of a patch, drawn once from a seed derived from the config seed and the layer index.
//! 2. [`hash`]: center the window (subtract the channel mean at each pixel), project every
//!    channel on the hyperplanes, keep the signs: an `L`-bit code per channel. (Centering is
//!    done on the projections, by linearity, so the window is read once.)
//! 3. [`buckets`]: channels with the same code form a bucket.
//! 4. [`merge`]: average the input channels of each bucket; sum the matching filter slices.
//! 5. [`conv`]: [`HasteConv`] runs steps 2-4 per patch and the dense engine's direct kernel
//!    ([`crate::kernels::direct`]) on the `B` merged channels instead of `c_in`; it equals the
//!    dense convolution when every bucket is a singleton, and when the channels of each
//!    bucket are equal.
//! 6. [`cost`]: FLOP accounting of the reduced convolution and of the overhead, and the time
//!    model that decides which layers get HASTE by default (a data-free gate on the fixed
//!    per-patch work, then the time predicted from the channels merged on the first batch).
//! 7. [`stats`]: per-layer diagnostics (buckets per patch, bucket sizes, FLOPs, NaNs seen).
//!    [`steps`]: where a layer's time goes, step by step (`haste bench --layers --steps`).
//! 8. [`kernel`]: [`HasteKernel`], HASTE as a plan's convolution kernel
//!    ([`crate::kernels::ConvKernel`]), which [`crate::compress`] puts on the layers it picks.
//!
//! ```
//! use haste::haste::{HasteConfig, HasteConv, HasteScratch, LayerStats};
//! use haste::ops::Conv2dParams;
//! let p = Conv2dParams::new(2, 1, 3, 3).with_pads([1; 4]);
//! let w = vec![1.0; 18];
//! let conv = HasteConv::new(p, &w, None, &HasteConfig::default(), 0).unwrap();
//! // Two identical channels: they merge, and the result is still exact.
//! let x = vec![1.0; 2 * 4 * 4];
//! let mut out = vec![0.0; 16];
//! let mut stats = LayerStats::default();
//! conv.forward(&x, 4, 4, &mut out, &mut HasteScratch::default(), &mut stats);
//! assert_eq!(out[5], 18.0);
//! assert!(stats.mean_buckets() < 2.0);
//! ```

pub mod buckets;
pub mod config;
pub mod conv;
pub mod cost;
pub mod cost_file;
mod cost_model;
pub mod hash;
pub mod hyperplanes;
pub mod kernel;
pub mod merge;
mod patch;
mod shares;
pub mod stats;
pub mod steps;
pub mod window;

pub use config::{HasteConfig, HyperplaneKind};
pub use conv::{HasteConv, HasteScratch};
pub use cost::{dense_macs, FlopCount};
pub use kernel::HasteKernel;
pub use stats::LayerStats;
pub use steps::StepCycles;
