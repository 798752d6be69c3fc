//! A loaded model: the ONNX file decoded and simplified, ready to be planned.

use crate::error::{Error, Result};
use crate::graph::{passes, Graph};
use crate::plan::{Plan, PlanOptions};
use std::path::{Path, PathBuf};

/// A CNN loaded from ONNX and simplified (constants folded, BatchNorm, activations and residual
/// additions fused).
///
/// ```
/// use haste::{Model, PlanOptions};
/// let model = Model::load("../shared/models/resnet20-cifar10.onnx".as_ref())?;
/// let mut plan = model.plan(PlanOptions { threads: 1, max_batch: 1 })?;
/// let image = vec![0.0f32; 3 * 32 * 32];
/// let (shape, logits) = plan.run(&image, 1)?;
/// assert_eq!(shape, vec![1, 10]);
/// # Ok::<(), haste::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Model {
    pub path: PathBuf,
    pub graph: Graph,
    /// Per-image input shape `[c, h, w]` as the model declares it.
    pub image_shape: Vec<usize>,
}

impl Model {
    /// Loads and simplifies an ONNX file.
    pub fn load(path: &Path) -> Result<Model> {
        Model::from_graph(path, crate::onnx::load_graph(path)?)
    }

    /// Decodes and simplifies the bytes of an ONNX file; `path` names it in messages and
    /// locates external data.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Model> {
        Model::from_graph(path, crate::onnx::graph_from_bytes(path, bytes)?)
    }

    fn from_graph(path: &Path, mut raw: Graph) -> Result<Model> {
        let declared = raw.input_shapes.first().cloned().unwrap_or_default();
        let image_shape: Vec<usize> = match declared.as_slice() {
            [Some(c), Some(h), Some(w)] => vec![*c, *h, *w],
            _ => {
                return Err(Error::model(
                    path,
                    format!("the input must be a fixed-size image batch [N, C, H, W]; declared {declared:?}"),
                ))
            }
        };
        passes::fold_runtime_shapes(&mut raw, &image_shape)?;
        let mut graph = passes::simplify(raw)?;
        passes::fuse_residual_adds(&mut graph, &image_shape);
        passes::fold_channel_scales(&mut graph, &image_shape);
        passes::fold_channel_shuffles(&mut graph, &image_shape);
        Ok(Model {
            path: path.to_path_buf(),
            graph,
            image_shape,
        })
    }

    /// Bytes of the weights the loaded model holds (each plan holds its own copy, see
    /// [`Plan::memory`]).
    pub fn weight_bytes(&self) -> u64 {
        crate::plan::graph_weight_bytes(&self.graph)
    }

    /// Plans the model for execution. A `Model` is `Send + Sync`: threads may share one (in
    /// an `Arc`) and each build and run plans of their own, with identical results.
    ///
    /// Threads: with `options.threads` of 2 or more, the first plan a thread builds makes
    /// that thread worker 0 of the plan's pool for the rest of the thread's life (rayon's
    /// `use_current_thread`), so that batch-1 runs start on the caller instead of waking a
    /// pool thread; later plans built there with the same thread count share that pool, and
    /// rayon work the thread starts outside any pool (a bare `par_iter`) runs in it rather
    /// than in rayon's global pool. A thread already working for a rayon pool (rayon's
    /// global pool, or one of the caller's), and plans of another thread count, get a plain
    /// pool instead. A plan run from a thread other than its builder's uses a pool of its own.
    /// `options.threads` is at most [`crate::plan::max_threads`] (4 per core, at most 1024),
    /// and the plan's buffers must fit in the memory available
    /// ([`crate::plan::available_memory`]): both are checked before anything large is
    /// allocated.
    pub fn plan(&self, options: PlanOptions) -> Result<Plan> {
        Plan::new(self.graph.clone(), &self.image_shape, options)
    }
}
