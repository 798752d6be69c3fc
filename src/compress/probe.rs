//! Measuring a compressed layer's error: a kernel that runs the compressed kernel and the
//! dense one on the same image and accumulates how far apart their outputs are.

use super::variants::Build;
use crate::error::Result;
use crate::haste::HasteConfig;
use crate::kernels::{ConvJob, ConvKernel, DenseConv, Scratch};
use crate::ops::{Activation, ConvOp};
use std::any::Any;
use std::sync::{Arc, Mutex};

/// A compressed kernel and the dense kernel of the same layer, both stopping at the bias,
/// compared on every image: the sums of the squared differences and of the squared dense
/// outputs. The probe then applies the layer's activation and residual itself, so the
/// network's output is the compressed kernel's.
pub(super) struct ErrorProbe {
    inner: Arc<dyn ConvKernel>,
    dense: DenseConv,
    /// The layer's activation and fused residual (no weights).
    epilogue: ConvOp,
    sums: Mutex<(f64, f64)>,
}

/// The probe's per-thread buffer for the dense output.
#[derive(Default)]
struct DenseOutput(Vec<f32>);

impl crate::kernels::ScratchBytes for DenseOutput {
    fn scratch_bytes(&self) -> u64 {
        crate::kernels::buffer_bytes(&self.0)
    }
}

impl ErrorProbe {
    /// The `build` variant of `op` (the `layer_index`-th convolution) inside a probe.
    pub(super) fn build(
        op: &ConvOp,
        config: &HasteConfig,
        layer_index: usize,
        build: Build,
    ) -> Result<Arc<dyn ConvKernel>> {
        let raw = ConvOp {
            activation: Activation::None,
            residual: None,
            ..op.clone()
        };
        Ok(Arc::new(ErrorProbe {
            inner: build(&raw, config, layer_index)?,
            dense: DenseConv::new(&raw),
            epilogue: ConvOp {
                input_scale: false,
                params: op.params,
                weights: Vec::new(),
                bias: None,
                activation: op.activation,
                residual: op.residual,
            },
            sums: Mutex::new((0.0, 0.0)),
        }))
    }

    /// `||compressed - dense|| / ||dense||` over the images since the last call (and resets
    /// the sums); `None` before any image or when every dense output was zero.
    pub(super) fn take_relative_error(&self) -> Option<f64> {
        let (num, den) = std::mem::take(&mut *self.sums.lock().unwrap_or_else(|e| e.into_inner()));
        (den > 0.0).then(|| (num / den).sqrt())
    }
}

impl ConvKernel for ErrorProbe {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn run_image(&self, job: &ConvJob, out: &mut [f32], scratch: &mut Scratch) {
        let raw = ConvJob {
            residual: None,
            ..*job
        };
        self.inner.run_image(&raw, out, scratch);
        let mut dense = std::mem::take(&mut scratch.get::<DenseOutput>().0);
        dense.resize(out.len(), 0.0);
        self.dense.run_image(&raw, &mut dense, scratch);
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (&a, &b) in out.iter().zip(&dense) {
            num += ((a - b) as f64).powi(2);
            den += (b as f64).powi(2);
        }
        scratch.get::<DenseOutput>().0 = dense;
        let mut sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        sums.0 += num;
        sums.1 += den;
        drop(sums);
        crate::kernels::activation::finish(&self.epilogue, out, job.residual);
    }

    fn inner(&self) -> Option<&dyn ConvKernel> {
        Some(self.inner.as_ref())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
