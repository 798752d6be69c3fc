//! # haste
//!
//! A CNN inference engine that makes any pretrained convolutional network cheaper at inference
//! time with HASTE (Hashing for Tractable Efficiency; Meiner, Mehnert, Condurache, 2023): in
//! every small patch, input channels that look alike are found with locality-sensitive hashing
//! and merged, so each convolution runs on fewer channels. No data, no fine-tuning.
//!
//! Data flows one way: model file -> [`graph`] -> [`plan`] -> [`kernels`] -> results.
//!
//! | stage | module |
//! |---|---|
//! | ONNX decode, op registry | [`onnx`] |
//! | IR, constant folding, BatchNorm/activation fusion | [`graph`], [`ops`] |
//! | execution order, buffers, threads | [`plan`] |
//! | dense kernels (the direct pixel-major conv, im2col + GEMM, pooling, layout) | [`kernels`] |
//! | the method: hyperplanes, hashing, buckets, merging, reduced conv, cost | [`haste`] |
//! | CIFAR-10 binary, ImageFolder, preprocessing, model cards | [`datasets`] |
//! | evaluation, reports, plots | [`eval`], [`report`] |
//! | the `haste` command | [`cli`] |
//!
//! ```
//! use haste::{CompressOptions, Model, PlanOptions};
//! use haste::datasets::{open_dataset, ModelCard};
//! use haste::eval::{evaluate, evaluate_haste, EvalOptions};
//! use haste::haste::HasteConfig;
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

pub mod cli;
pub mod datasets;
pub mod error;
pub mod eval;
pub mod graph;
pub mod haste;
pub mod kernels;
pub mod model;
pub mod onnx;
pub mod ops;
pub mod plan;
pub mod report;
pub mod tensor;

pub use error::{Error, Result};
pub use model::Model;
pub use plan::{CompressOptions, Plan, PlanOptions};
pub use tensor::Tensor;
