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
pub mod model;
pub mod onnx;
pub mod plan;

pub use model::Model;
pub use plan::{CompressOptions, Plan, PlanOptions};
pub mod cli;
pub mod eval;
pub mod report;
