//! # haste
//!
//! A CNN inference engine that makes any pretrained convolutional network cheaper at inference
//! time with HASTE (Hashing for Tractable Efficiency; Meiner, Mehnert, Condurache, 2023): in
//! every small patch, input channels that look alike are found with locality-sensitive hashing
//! and merged, so each convolution runs on fewer channels. No data, no fine-tuning.
//!
//! Data flows one way: model file -> [`graph`] -> [`plan`] -> kernels -> results, with the
//! method ([`mod@haste`]) beside the kernels and [`compress`] putting it on a plan.
//!
//! | stage | module |
//! |---|---|
//! | ONNX decode, op registry | `onnx` (internal; [`Model::load`]) |
//! | IR, constant folding, BatchNorm/activation fusion | [`graph`], [`ops`] |
//! | execution order, buffers, memory layouts, threads | [`plan`] |
//! | dense kernels and the convolution-kernel interface | `kernels` (internal) |
//! | the method: hyperplanes, hashing, buckets, merging, reduced conv, cost | [`mod@haste`] |
//! | which layers get HASTE, first-batch choices, reports | [`compress`] |
//! | CIFAR-10 binary, ImageFolder, preprocessing, model cards | [`datasets`] |
//! | evaluation, reports | [`eval`], [`report`] |
//! | the `haste` command (cargo feature `cli`, on by default) | `cli` |
//!
//! The crate root re-exports what a program needs: load a [`Model`], build a [`Plan`], run it,
//! [`compress`](Compression::apply) it, [`evaluate`] it on a [`Dataset`], and the
//! [`ConvKernel`] interface a convolution variant implements (HASTE's is [`HasteKernel`]). Without the `cli`
//! feature (`default-features = false`) the library builds without clap, indicatif and
//! plotters.
//!
//! ```
//! use haste::{evaluate, evaluate_haste, open_dataset, CompressOptions, EvalOptions};
//! use haste::{HasteConfig, Model, ModelCard, PlanOptions};
//!
//! let path = std::path::Path::new("../shared/models/resnet20-cifar10.onnx");
//! let model = Model::load(path)?;
//! let card = ModelCard::beside_model(path)?.expect("the model card beside the model");
//! let data = open_dataset("../shared/data/cifar10/test_first20_lossless.bin".as_ref(), &card.preprocess, None)?;
//! let mut plan = model.plan(PlanOptions { threads: 0, max_batch: 20 })?;
//! let options = EvalOptions { limit: None, batch: 20, skip_bad: false };
//!
//! let dense = evaluate(&mut plan, data.as_ref(), options, &mut |_| {})?;
//! let compress = CompressOptions {
//!     config: HasteConfig { hyperplanes: 12, ..HasteConfig::default() },
//!     // Every eligible layer: by default ResNet-20's layers are too small for HASTE to be
//!     // faster than dense, so they would all stay dense.
//!     cost_aware: false,
//!     ..CompressOptions::default()
//! };
//! let h = evaluate_haste(&mut plan, data.as_ref(), options, &compress, &mut |_| {})?;
//! assert_eq!(dense.images, 20);
//! assert!(h.flops.flops < h.flops.dense_flops);
//! println!("top-1 {:.1} % -> {:.1} %, {:.1} % fewer FLOPs", dense.top1, h.eval.top1, h.flops.reduction());
//! # Ok::<(), haste::Error>(())
//! ```

pub mod calibration;
#[cfg(feature = "cli")]
pub mod cli;
pub mod compress;
pub mod datasets;
mod error;
pub mod eval;
pub mod files;
pub mod graph;
pub mod haste;
// The kernels and the ONNX reader are internals; they are public, but hidden, for the
// benchmarks and examples of this repository only.
#[doc(hidden)]
pub mod kernels;
mod model;
#[doc(hidden)]
pub mod onnx;
pub mod ops;
pub mod plan;
pub mod report;

pub use calibration::{calibrate, CalibrateOptions, Objective, Target};
pub use compress::{
    compress_on, CalibrationSummary, CompressOptions, Compression, ConvLayerReport, FlopsSummary,
    LayerChoice, LayerPolicy, MagnitudeMode, Policy,
};
pub use datasets::{open_dataset, open_dataset_with, Dataset, ModelCard, Preprocess};
pub use error::{Error, Result};
pub use eval::{evaluate, evaluate_haste, EvalOptions, EvalReport, HasteReport};
pub use haste::{HasteConfig, HasteKernel, HyperplaneKind, LayerStats};
/// The interface a plan runs every convolution through, for writing a variant of one's own.
pub use kernels::{
    layout::IoLayout, scale_input, ConvJob, ConvKernel, DenseConv, Scratch, Scratches,
};
pub use model::Model;
pub use plan::{Plan, PlanOptions};
