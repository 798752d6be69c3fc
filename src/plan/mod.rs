//! The execution plan: the simplified graph in dependency order, with shapes inferred for the
//! largest batch, every activation in a reusable buffer slot (freed after its last reader), and
//! a thread pool with per-thread scratch. Building a plan allocates; running one does not.
//!
//! The plan schedules and runs steps; each convolution step runs through a
//! [`ConvKernel`] (the dense one unless a caller sets another, for example HASTE through
//! [`crate::compress`]), which the plan knows only through that interface.

mod build;
mod conv_step;
mod exec;
mod fuse;
mod hybrid;
pub mod layout;
mod memory;
mod placement;
mod resume;
mod shapes;
mod threads;

pub use memory::{
    available_memory, check_threads, format_bytes, graph_weight_bytes, max_threads, MemoryPlan,
    MAX_THREADS,
};

pub use layout::Layout;
pub use resume::Checkpoint;

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::kernels::{ConvKernel, Scratch};
use crate::ops::{ConvOp, Op};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Where a step reads an operand from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    Input,
    Slot(usize),
    Const(usize),
}

/// One node of the plan.
pub(crate) struct Step {
    pub node: usize,
    pub inputs: Vec<Src>,
    pub output: usize,
}

/// What one thread keeps between images in image-at-a-time execution: its own buffer slots
/// (sized for one image), its kernels' scratch, and its step timings (merged into the plan's
/// after a run).
#[derive(Default)]
pub(crate) struct Workspace {
    pub slots: Vec<Vec<f32>>,
    pub scratch: Scratch,
    pub seconds: Vec<f64>,
}

/// Options for building a [`Plan`].
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Largest batch the plan will run.
    pub max_batch: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            threads: 0,
            max_batch: 1,
        }
    }
}

/// A model ready to run on batches of images.
pub struct Plan {
    graph: Graph,
    steps: Vec<Step>,
    slots: Vec<Vec<f32>>,
    /// Where each slot's value starts in it (floats), as its last writer put it.
    slot_offsets: Vec<usize>,
    /// Per step: where its output starts in its slot in a run of one image on several
    /// threads ([`placement`]).
    centered: Vec<usize>,
    consts: Vec<(Vec<usize>, Vec<f32>)>,
    image_shape: Vec<usize>,
    output: Src,
    /// Shapes of every step's inputs and output for the batch size `shapes_batch`.
    shapes_batch: usize,
    in_shapes: Vec<Vec<Vec<usize>>>,
    out_shapes: Vec<Vec<usize>>,
    /// Shapes of every step's inputs and output for one image.
    img_in_shapes: Vec<Vec<Vec<usize>>>,
    img_out_shapes: Vec<Vec<usize>>,
    /// The last step writing the output slot.
    output_step: usize,
    /// Whether every step can run image by image (see [`Plan::image_mode_ok`]).
    image_mode: bool,
    /// The first step a batch run in image mode runs layer by layer, or the step count
    /// ([`hybrid`]).
    layer_from: usize,
    /// Per step, whether it and the next may run as a pair (`fuse`).
    expand_pairs: Vec<bool>,
    /// Whether those pairs run as pairs ([`Plan::set_fused_pairs`]).
    fuse_pairs: bool,
    /// Bytes of a pair's band (`fuse`): a quarter of the L2 cache.
    band_bytes: usize,
    pool: Arc<rayon::ThreadPool>,
    /// Whether `pool` counts the thread that built the plan as one of its workers (see
    /// [`threads`]); runs from other threads then use `foreign_pool`.
    pool_has_caller: bool,
    foreign_pool: std::sync::OnceLock<Arc<rayon::ThreadPool>>,
    /// One per thread.
    workspaces: Vec<Mutex<Workspace>>,
    /// Scratch shared by the parts of one image run on several threads.
    shared: Mutex<Scratch>,
    /// Per step: the kernel its convolution runs on (`None` for other ops).
    conv_kernels: Vec<Option<Arc<dyn ConvKernel>>>,
    /// Per step: the dense kernel of its convolution, built once with the plan.
    dense_kernels: Vec<Option<Arc<dyn ConvKernel>>>,
    /// Per step: the memory order of its output, and of each of its inputs (see [`layout`]).
    layouts: Vec<Layout>,
    in_layouts: Vec<Vec<Layout>>,
    max_batch: usize,
    threads: usize,
    /// Seconds spent in each step, accumulated while profiling is on.
    step_seconds: Option<Vec<f64>>,
}

impl Plan {
    /// Plans `graph` for images of `image_shape` (`[c, h, w]`).
    pub fn new(graph: Graph, image_shape: &[usize], options: PlanOptions) -> Result<Plan> {
        Self::build(graph, image_shape, options)
    }

    /// The memory order of step `step`'s output (see [`layout`]).
    pub fn output_layout(&self, step: usize) -> Layout {
        self.layouts.get(step).copied().unwrap_or_default()
    }

    /// Per step and input: the step that wrote the slot it reads (`None` for the network's
    /// input and constants).
    pub(crate) fn producers(&self) -> Vec<Vec<Option<usize>>> {
        let mut writer: Vec<Option<usize>> = vec![None; self.slots.len()];
        let mut out = Vec::with_capacity(self.steps.len());
        for (i, s) in self.steps.iter().enumerate() {
            out.push(
                s.inputs
                    .iter()
                    .map(|src| match *src {
                        Src::Slot(k) => writer[k],
                        _ => None,
                    })
                    .collect(),
            );
            writer[s.output] = Some(i);
        }
        out
    }

    /// Grows every batch slot to what the steps' current shapes (`out_shapes`) need.
    pub(crate) fn grow_slots(&mut self) {
        self.grow_slots_from(0)
    }

    /// [`Self::grow_slots`] for the outputs of the steps from `first` on.
    pub(super) fn grow_slots_from(&mut self, first: usize) {
        let steps = self.steps.iter().zip(&self.out_shapes).skip(first);
        for (i, (s, shape)) in steps.enumerate() {
            let len =
                self.out_offset(first + i, self.shapes_batch) + shape.iter().product::<usize>();
            let slot = &mut self.slots[s.output];
            if slot.len() < len {
                slot.resize(len, 0.0);
            }
        }
    }

    /// Where step `i`'s output starts in its slot in a run of `n` images: centred at batch 1
    /// ([`placement`]), else at the start.
    pub(crate) fn out_offset(&self, i: usize, n: usize) -> usize {
        if n == 1 {
            self.centered.get(i).copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// A thread's workspace: every slot sized for one image.
    pub(crate) fn new_workspace(&self) -> Workspace {
        let mut sizes = vec![0usize; self.slots.len()];
        for (s, shape) in self.steps.iter().zip(&self.img_out_shapes) {
            sizes[s.output] = sizes[s.output].max(shape.iter().product());
        }
        Workspace {
            slots: sizes.into_iter().map(|n| vec![0.0; n]).collect(),
            ..Workspace::default()
        }
    }

    /// Shape of one image the plan expects (`[c, h, w]`).
    pub fn image_shape(&self) -> &[usize] {
        &self.image_shape
    }

    /// The graph being run.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Largest batch [`Plan::run`] accepts.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Multiply-accumulates per image of every Conv, Gemm and MatMul (dense).
    pub fn dense_macs(&self) -> u64 {
        self.per_conv_macs().iter().map(|(_, m)| m).sum::<u64>() + self.linear_macs()
    }

    /// (step index, MACs per image) of every convolution, in execution order.
    pub fn per_conv_macs(&self) -> Vec<(usize, u64)> {
        // Conv MACs are per image already (see `Op::macs`).
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(self.graph.nodes[s.node].op, Op::Conv(_)))
            .map(|(i, s)| (i, self.graph.nodes[s.node].op.macs(&self.in_shapes[i])))
            .collect()
    }

    fn linear_macs(&self) -> u64 {
        let b = self.shapes_batch.max(1) as u64;
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(self.graph.nodes[s.node].op, Op::Linear(_)))
            .map(|(i, s)| self.graph.nodes[s.node].op.macs(&self.in_shapes[i]) / b)
            .sum()
    }

    /// The convolution of step `step`, with its input height and width.
    pub fn conv_at(&self, step: usize) -> Option<(&ConvOp, usize, usize)> {
        match &self.graph.nodes[self.steps.get(step)?.node].op {
            Op::Conv(c) => {
                let s = &self.in_shapes[step][0];
                Some((c, s[2], s[3]))
            }
            _ => None,
        }
    }

    /// Name of the node of step `step`.
    pub fn step_name(&self, step: usize) -> &str {
        self.steps
            .get(step)
            .map_or("?", |s| self.graph.nodes[s.node].name.as_str())
    }

    /// The graph node step `step` runs.
    pub(crate) fn step_node(&self, step: usize) -> usize {
        self.steps[step].node
    }

    /// Number of convolutions.
    pub fn num_convs(&self) -> usize {
        self.conv_kernels.iter().flatten().count()
    }

    /// Number of steps.
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Runs the convolution of `step` on `kernel` from now on (see [`ConvKernel`] for what it
    /// must do).
    pub fn set_conv_kernel(&mut self, step: usize, kernel: Arc<dyn ConvKernel>) -> Result<()> {
        match self.conv_kernels.get_mut(step) {
            Some(Some(k)) => {
                *k = kernel;
                Ok(())
            }
            _ => Err(Error::InvalidArgument(format!(
                "step {step} is not a convolution"
            ))),
        }
    }

    /// The kernel the convolution of `step` runs on (`None` when it is not a convolution).
    pub fn conv_kernel(&self, step: usize) -> Option<&Arc<dyn ConvKernel>> {
        self.conv_kernels.get(step)?.as_ref()
    }

    /// Whether the convolution of `step` runs on its dense kernel.
    pub fn runs_dense(&self, step: usize) -> bool {
        match (self.conv_kernels.get(step), self.dense_kernels.get(step)) {
            (Some(Some(k)), Some(Some(d))) => Arc::ptr_eq(k, d),
            _ => false,
        }
    }

    /// Puts the convolution of `step` back on its dense kernel.
    pub fn use_dense(&mut self, step: usize) {
        if let (Some(k), Some(d)) = (
            self.conv_kernels.get_mut(step),
            self.dense_kernels.get(step),
        ) {
            k.clone_from(d);
        }
    }

    /// Sets every convolution back to its dense kernel.
    pub fn reset_conv_kernels(&mut self) {
        self.conv_kernels.clone_from(&self.dense_kernels);
    }

    /// Runs a batch of `n` images (`input` = `n * c * h * w` values, NCHW) and returns the
    /// output tensor's shape and data.
    pub fn run(&mut self, input: &[f32], n: usize) -> Result<(Vec<usize>, &[f32])> {
        self.prepare_batch(input, n)?;
        match self.output {
            Src::Slot(_) if self.image_mode && n >= self.threads => self.run_by_images(input, n)?,
            _ => {
                self.grow_slots();
                self.run_layer_range(input, n, 0..self.steps.len())?
            }
        }
        self.output_of_run()
    }

    /// Checks a batch of `n` images against the plan and infers its shapes.
    fn prepare_batch(&mut self, input: &[f32], n: usize) -> Result<()> {
        let per_image: usize = self.image_shape.iter().product();
        if n == 0 || n > self.max_batch {
            return Err(Error::InvalidArgument(format!(
                "batch of {n} images; this plan takes 1 to {}",
                self.max_batch
            )));
        }
        if input.len() != n * per_image {
            return Err(Error::Shape(format!(
                "input holds {} values; {n} images of {:?} need {}",
                input.len(),
                self.image_shape,
                n * per_image
            )));
        }
        self.infer_shapes(n)
    }

    /// The output tensor of the last run: its shape and data.
    fn output_of_run(&self) -> Result<(Vec<usize>, &[f32])> {
        let shape = match self.output {
            Src::Slot(s) => self
                .steps
                .iter()
                .zip(&self.out_shapes)
                .rev()
                .find(|(st, _)| st.output == s)
                .map(|(_, sh)| sh.clone()),
            _ => None,
        }
        .ok_or_else(|| Error::Internal("output shape unknown".into()))?;
        let len: usize = shape.iter().product();
        match self.output {
            Src::Slot(s) => {
                let at = self.slot_offsets[s];
                Ok((shape, &self.slots[s][at..at + len]))
            }
            _ => Err(Error::Internal("output is not computed".into())),
        }
    }
}

/// A helper of a layer-at-a-time run: takes the run's parallel work as it appears until
/// `done`. Without it, a worker that found no work for some tens of microseconds (a step
/// that runs on one thread, such as a pooling or a small addition) falls asleep, and waking
/// it costs more than many steps take at batch 1 (tens of microseconds on a VM): the step's
/// other half then ran on the thread that split it, one after the other.
fn keep_polling(done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

impl Plan {
    /// The pool a run on the calling thread uses: the plan's own, unless that pool counts
    /// the thread that built the plan among its workers and this is another thread (the
    /// builder would not take a share of the work); such runs get a pool of their own,
    /// started on first use (or, if it cannot start, the plan's own).
    fn pool_here(&self) -> &Arc<rayon::ThreadPool> {
        if !self.pool_has_caller || self.pool.current_thread_index().is_some() {
            return &self.pool;
        }
        if let Some(p) = self.foreign_pool.get() {
            return p;
        }
        match threads::plain_pool(self.threads) {
            Ok(p) => self.foreign_pool.get_or_init(|| p),
            Err(_) => &self.pool,
        }
    }

    /// [`Self::pool_here`], shared.
    pub(crate) fn run_pool(&self) -> Arc<rayon::ThreadPool> {
        Arc::clone(self.pool_here())
    }

    /// Runs the batch's `steps` one after the other (see [`exec`]).
    fn run_layer_range(
        &mut self,
        input: &[f32],
        n: usize,
        steps: std::ops::Range<usize>,
    ) -> Result<()> {
        // All steps inside one `install`: the loop runs on a pool thread, so each step's
        // parallel work starts without a hand-off from the caller's thread (at batch 1 that
        // hand-off cost more than a CIFAR convolution).
        let pool = self.run_pool();
        let helpers = pool.current_num_threads().saturating_sub(1);
        pool.install(|| {
            let done = AtomicBool::new(false);
            rayon::scope(|s| {
                for _ in 0..helpers {
                    s.spawn(|_| keep_polling(&done));
                }
                let mut result = Ok(());
                let mut i = steps.start;
                while i < steps.end && result.is_ok() {
                    let t = self.step_seconds.is_some().then(std::time::Instant::now);
                    // A pair (`fuse`) runs as one, its time counted at its second step.
                    let pair = i + 1 < steps.end && self.expand_pair(i).is_some();
                    result = if pair {
                        self.execute_pair(i, input, n)
                    } else {
                        self.execute(i, input, n)
                    };
                    i += 1 + usize::from(pair);
                    if let (Some(t), Some(acc)) = (t, self.step_seconds.as_mut()) {
                        acc[i - 1] += t.elapsed().as_secs_f64();
                    }
                }
                done.store(true, Ordering::Release);
                result
            })
        })
    }

    /// Turns per-step timing on (and clears it) or off.
    pub fn set_profiling(&mut self, on: bool) {
        self.step_seconds = on.then(|| vec![0.0; self.steps.len()]);
    }

    /// Puts back the profiling state [`Self::step_seconds`] returned before a measurement.
    pub(crate) fn restore_profiling(&mut self, seconds: Option<Vec<f64>>) {
        self.step_seconds = seconds;
    }

    /// Seconds spent in each step since profiling was turned on, by step index.
    pub fn step_seconds(&self) -> Option<&[f64]> {
        self.step_seconds.as_deref()
    }

    /// Op kind of step `step`.
    pub fn step_kind(&self, step: usize) -> &'static str {
        self.steps
            .get(step)
            .map_or("?", |s| self.graph.nodes[s.node].op.kind())
    }

    /// The plan's worker threads as seen from the calling thread (use it to parallelize work
    /// around runs, e.g. image loading). On the thread that built the plan this is a pool the
    /// thread itself works in, so work handed to it starts right away.
    pub fn thread_pool(&self) -> &rayon::ThreadPool {
        self.pool_here()
    }
}
