//! haste: a CNN inference engine that makes pretrained ONNX CNNs cheaper with HASTE.

pub mod datasets;
pub mod error;
pub mod haste;
pub mod kernels;
pub mod ops;
pub mod tensor;

pub use error::{Error, Result};
pub use tensor::Tensor;
pub mod graph;
pub mod onnx;
pub mod plan;
pub mod model;

pub use model::Model;
pub use plan::{CompressOptions, Plan, PlanOptions};
pub mod eval;
pub mod cli;
pub mod report;
