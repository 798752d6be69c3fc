//! The execution plan: the simplified graph in dependency order, with shapes inferred for the
//! largest batch, every activation in a reusable buffer slot (freed after its last reader), and
//! a thread pool with per-thread scratch. Building a plan allocates; running one does not.

mod compress;
mod exec;
pub mod layout;
mod threads;

pub use compress::{CompressOptions, ConvLayerReport, FlopsSummary, LayerChoice, MagnitudeMode};

use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::kernels::direct::DirectConv;
use crate::ops::{ConvOp, Op};
use std::collections::HashMap;
use std::sync::Mutex;

/// Where a step reads an operand from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    Input,
    Slot(usize),
    Const(usize),
}

/// How a convolution step is computed. The HASTE module replaces `Dense` per node. `Dense` runs
/// the direct kernel where the plan prepared one ([`Plan`]'s `direct`), im2col + GEMM
/// elsewhere.
pub enum ConvKernel {
    Dense,
    Haste(Box<crate::haste::HasteConv>),
}

/// One node of the plan.
pub(crate) struct Step {
    pub node: usize,
    pub inputs: Vec<Src>,
    pub output: usize,
}

/// Per-thread scratch buffers, grown on first use and then reused.
#[derive(Default)]
pub(crate) struct Scratch {
    pub col: Vec<f32>,
    pub direct: crate::kernels::direct::DirectScratch,
    pub haste: crate::haste::HasteScratch,
    /// Dense output of a HASTE layer, when measuring its error.
    pub dense: Vec<f32>,
    /// NCHW output of an im2col convolution whose output is pixel-major.
    pub nchw: Vec<f32>,
}

/// What one thread keeps between images in image-at-a-time execution: its own buffer slots
/// (sized for one image) and state.
#[derive(Default)]
pub(crate) struct Workspace {
    pub slots: Vec<Vec<f32>>,
    pub state: WorkspaceState,
}

/// A thread's scratch, HASTE statistics and step timings (merged into the plan's after a run).
#[derive(Default)]
pub(crate) struct WorkspaceState {
    pub scratch: Scratch,
    pub stats: Vec<crate::haste::LayerStats>,
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
    pub(crate) graph: Graph,
    pub(crate) steps: Vec<Step>,
    pub(crate) slots: Vec<Vec<f32>>,
    pub(crate) consts: Vec<(Vec<usize>, Vec<f32>)>,
    pub(crate) image_shape: Vec<usize>,
    pub(crate) output: Src,
    /// Shapes of every step's inputs and output for the batch size `shapes_batch`.
    pub(crate) shapes_batch: usize,
    pub(crate) in_shapes: Vec<Vec<Vec<usize>>>,
    pub(crate) out_shapes: Vec<Vec<usize>>,
    /// Shapes of every step's inputs and output for one image.
    pub(crate) img_in_shapes: Vec<Vec<Vec<usize>>>,
    pub(crate) img_out_shapes: Vec<Vec<usize>>,
    /// The last step writing the output slot.
    pub(crate) output_step: usize,
    /// Whether every step can run image by image (see [`Plan::image_mode_ok`]).
    pub(crate) image_mode: bool,
    pub(crate) pool: std::sync::Arc<rayon::ThreadPool>,
    /// Whether `pool` counts the thread that built the plan as one of its workers (see
    /// [`threads`]); runs from other threads then use `foreign_pool`.
    pub(crate) pool_has_caller: bool,
    pub(crate) foreign_pool: std::sync::OnceLock<std::sync::Arc<rayon::ThreadPool>>,
    /// One per thread.
    pub(crate) workspaces: Vec<Mutex<Workspace>>,
    pub(crate) shared_col: Mutex<Vec<f32>>,
    pub(crate) conv_kernels: Vec<Option<ConvKernel>>,
    /// Per step, the direct-kernel form of a dense convolution that suits it.
    pub(crate) direct: Vec<Option<crate::kernels::direct::DirectConv>>,
    pub(crate) shared_direct: Mutex<crate::kernels::direct::DirectScratch>,
    pub(crate) haste_stats: Vec<Mutex<crate::haste::LayerStats>>,
    /// Per step: whether its output is pixel-major (NHWC), and for each of its inputs whether
    /// that is (see [`layout`]).
    pub(crate) nhwc: Vec<bool>,
    pub(crate) in_nhwc: Vec<Vec<bool>>,
    pub(crate) max_batch: usize,
    pub(crate) threads: usize,
    /// Seconds spent in each step, accumulated while profiling is on.
    pub(crate) step_seconds: Option<Vec<f64>>,
    /// Per step: (sum of squared differences HASTE - dense, sum of squared dense outputs),
    /// accumulated while error measurement is on.
    pub(crate) layer_error: Option<Vec<Mutex<(f64, f64)>>>,
    /// Per step: (HASTE, dense) seconds from [`Plan::keep_dense_where_faster`].
    pub(crate) timing: Vec<Option<(f64, f64)>>,
    /// Per step: HASTE's predicted time over dense from a calibration batch.
    pub(crate) predicted: Vec<Option<f64>>,
}

impl Plan {
    /// Plans `graph` for images of `image_shape` (`[c, h, w]`).
    pub fn new(graph: Graph, image_shape: &[usize], options: PlanOptions) -> Result<Plan> {
        if options.max_batch == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        crate::kernels::isa::Isa::check_environment()?;
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let (pool, pool_has_caller) = threads::pool_for_this_thread(threads)?;
        let order = graph.topological_order()?;
        let input_id = *graph
            .inputs
            .first()
            .ok_or_else(|| Error::model(&graph.source, "no input"))?;

        // Constants read at run time become f32 operands.
        let mut consts = Vec::new();
        let mut const_index: HashMap<ValueId, usize> = HashMap::new();
        // Last step reading each value, to free its slot afterwards.
        let mut last_use: HashMap<ValueId, usize> = HashMap::new();
        for (pos, &ni) in order.iter().enumerate() {
            for &v in &graph.nodes[ni].inputs {
                last_use.insert(v, pos);
            }
        }
        for &o in &graph.outputs {
            last_use.insert(o, usize::MAX);
        }
        let mut slot_of: HashMap<ValueId, usize> = HashMap::new();
        let mut free: Vec<usize> = Vec::new();
        let mut n_slots = 0;
        let mut steps = Vec::with_capacity(order.len());
        for (pos, &ni) in order.iter().enumerate() {
            let node = &graph.nodes[ni];
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for &v in &node.inputs {
                inputs.push(if v == input_id {
                    Src::Input
                } else if let Some(&s) = slot_of.get(&v) {
                    Src::Slot(s)
                } else if let Some(c) = graph.constants.get(&v) {
                    let idx = *const_index.entry(v).or_insert_with(|| {
                        consts.push((c.shape.clone(), c.to_f32()));
                        consts.len() - 1
                    });
                    Src::Const(idx)
                } else {
                    return Err(Error::Internal(format!(
                        "value '{}' has no source",
                        graph.value_name(v)
                    )));
                });
            }
            let output = free.pop().unwrap_or_else(|| {
                n_slots += 1;
                n_slots - 1
            });
            let out_v = *node
                .outputs
                .first()
                .ok_or_else(|| Error::Internal(format!("node '{}' has no output", node.name)))?;
            slot_of.insert(out_v, output);
            for &v in &node.inputs {
                if last_use.get(&v) == Some(&pos) {
                    if let Some(&s) = slot_of.get(&v) {
                        if !free.contains(&s) {
                            free.push(s);
                        }
                    }
                }
            }
            steps.push(Step {
                node: ni,
                inputs,
                output,
            });
        }
        let out_v = *graph
            .outputs
            .first()
            .ok_or_else(|| Error::model(&graph.source, "no output"))?;
        let output = match slot_of.get(&out_v) {
            Some(&s) => Src::Slot(s),
            None => {
                return Err(Error::model(
                    &graph.source,
                    "the output is not computed by any node",
                ))
            }
        };
        let conv_kernels = steps
            .iter()
            .map(|s| matches!(graph.nodes[s.node].op, Op::Conv(_)).then_some(ConvKernel::Dense))
            .collect();
        let direct = steps
            .iter()
            .map(|s| match &graph.nodes[s.node].op {
                Op::Conv(c) if DirectConv::suits(&c.params) => DirectConv::new(c),
                _ => None,
            })
            .collect();
        let haste_stats = steps
            .iter()
            .map(|_| Mutex::new(Default::default()))
            .collect();
        let mut plan = Plan {
            graph,
            steps,
            slots: vec![Vec::new(); n_slots],
            consts,
            image_shape: image_shape.to_vec(),
            output,
            shapes_batch: 0,
            in_shapes: vec![],
            out_shapes: vec![],
            img_in_shapes: vec![],
            img_out_shapes: vec![],
            output_step: 0,
            image_mode: false,
            pool,
            pool_has_caller,
            foreign_pool: std::sync::OnceLock::new(),
            workspaces: vec![],
            shared_col: Mutex::new(Vec::new()),
            conv_kernels,
            direct,
            shared_direct: Mutex::new(Default::default()),
            haste_stats,
            nhwc: vec![],
            in_nhwc: vec![],
            max_batch: options.max_batch,
            threads,
            step_seconds: None,
            layer_error: None,
            timing: vec![],
            predicted: vec![],
        };
        (plan.img_in_shapes, plan.img_out_shapes) = plan.shapes_for(1)?;
        plan.output_step = match plan.output {
            Src::Slot(s) => plan.steps.iter().rposition(|st| st.output == s),
            _ => None,
        }
        .ok_or_else(|| Error::Internal("output step unknown".into()))?;
        plan.image_mode = plan.image_mode_ok();
        let producers = plan.producers();
        plan.nhwc = plan.choose_layouts(&producers);
        plan.in_nhwc = producers
            .iter()
            .map(|ps| ps.iter().map(|p| p.is_some_and(|p| plan.nhwc[p])).collect())
            .collect();
        plan.workspaces = (0..threads)
            .map(|_| Mutex::new(plan.new_workspace()))
            .collect();
        plan.infer_shapes(options.max_batch)?;
        plan.timing = vec![None; plan.steps.len()];
        plan.predicted = vec![None; plan.steps.len()];
        // Size every slot for the largest batch.
        let mut sizes = vec![0usize; n_slots];
        for (s, shape) in plan.steps.iter().zip(&plan.out_shapes) {
            sizes[s.output] = sizes[s.output].max(shape.iter().product());
        }
        for (slot, size) in plan.slots.iter_mut().zip(sizes) {
            *slot = vec![0.0; size];
        }
        let col = plan
            .steps
            .iter()
            .zip(&plan.in_shapes)
            .filter_map(|(s, ins)| match &plan.graph.nodes[s.node].op {
                Op::Conv(c) => Some(crate::kernels::conv::col_len(
                    &c.params, ins[0][2], ins[0][3],
                )),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        plan.shared_col = Mutex::new(vec![0.0; col]);
        Ok(plan)
    }

    /// Computes every step's shapes for a batch of `n` (cached until `n` changes).
    pub(crate) fn infer_shapes(&mut self, n: usize) -> Result<()> {
        if self.shapes_batch == n {
            return Ok(());
        }
        (self.in_shapes, self.out_shapes) = self.shapes_for(n)?;
        self.shapes_batch = n;
        Ok(())
    }

    /// Every step's input shapes and output shape for a batch of `n`.
    #[allow(clippy::type_complexity)]
    fn shapes_for(&self, n: usize) -> Result<(Vec<Vec<Vec<usize>>>, Vec<Vec<usize>>)> {
        let mut input_shape = vec![n];
        input_shape.extend(&self.image_shape);
        // Every tensor the plan will allocate is checked before anything is allocated.
        let limit = crate::onnx::tensor::MAX_TENSOR_ELEMENTS;
        let too_large = |what: String, shape: &[usize]| {
            let fits = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .is_some_and(|e| e <= limit);
            if fits {
                Ok(())
            } else {
                Err(Error::Limits {
                    path: self.graph.source.clone(),
                    message: format!(
                        "{what} of shape {shape:?} (batch {n}) exceeds the limit of {limit} elements"
                    ),
                })
            }
        };
        too_large("the input".into(), &input_shape)?;
        let mut slot_shape: Vec<Vec<usize>> = vec![vec![]; self.slots.len()];
        let mut in_shapes = Vec::with_capacity(self.steps.len());
        let mut out_shapes = Vec::with_capacity(self.steps.len());
        for s in &self.steps {
            let ins: Vec<Vec<usize>> = s
                .inputs
                .iter()
                .map(|src| match *src {
                    Src::Input => input_shape.clone(),
                    Src::Slot(i) => slot_shape[i].clone(),
                    Src::Const(i) => self.consts[i].0.clone(),
                })
                .collect();
            let node = &self.graph.nodes[s.node];
            let refs: Vec<&[usize]> = ins.iter().map(Vec::as_slice).collect();
            let out = node.op.output_shape(&refs).map_err(|e| {
                Error::model(
                    &self.graph.source,
                    format!("node '{}': {e} (input shapes {ins:?})", node.name),
                )
            })?;
            too_large(format!("the output of node '{}'", node.name), &out)?;
            slot_shape[s.output] = out.clone();
            in_shapes.push(ins);
            out_shapes.push(out);
        }
        Ok((in_shapes, out_shapes))
    }

    /// True when every step computes each image from that image alone, so that running the
    /// network image by image gives the batch's result: every runtime operand and output has the
    /// batch as its first axis (checked on batches of 1 and 2), and no op works along it.
    fn image_mode_ok(&self) -> bool {
        let Ok((in2, out2)) = self.shapes_for(2) else {
            return false;
        };
        let batched = |one: &[usize], two: &[usize]| {
            one.len() == two.len() && one.first() == Some(&1) && two[0] == 2 && one[1..] == two[1..]
        };
        self.steps.iter().enumerate().all(|(i, s)| {
            let along_batch = match &self.graph.nodes[s.node].op {
                Op::Slice { axes, .. } => {
                    axes.is_empty() || axes.iter().any(|&a| a == 0 || a == -(out2[i].len() as i64))
                }
                Op::Concat { axis } => *axis == 0 || *axis == -(out2[i].len() as i64),
                Op::Transpose { perm } => perm.first() != Some(&0),
                Op::Flatten { axis } => *axis == 0,
                _ => false,
            };
            let operands_ok = s
                .inputs
                .iter()
                .zip(&self.img_in_shapes[i])
                .zip(&in2[i])
                .all(|((src, one), two)| matches!(src, Src::Const(_)) || batched(one, two));
            !along_batch && operands_ok && batched(&self.img_out_shapes[i], &out2[i])
        })
    }

    /// Whether step `step` keeps its output pixel-major (NHWC; see [`layout`]).
    pub fn output_is_pixel_major(&self, step: usize) -> bool {
        self.nhwc.get(step).copied().unwrap_or(false)
    }

    /// Per step and input: the step that wrote the slot it reads (`None` for the network's
    /// input and constants).
    fn producers(&self) -> Vec<Vec<Option<usize>>> {
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

    /// A thread's workspace: every slot sized for one image.
    fn new_workspace(&self) -> Workspace {
        let mut sizes = vec![0usize; self.slots.len()];
        for (s, shape) in self.steps.iter().zip(&self.img_out_shapes) {
            sizes[s.output] = sizes[s.output].max(shape.iter().product());
        }
        Workspace {
            slots: sizes.into_iter().map(|n| vec![0.0; n]).collect(),
            state: WorkspaceState::default(),
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

    /// Number of steps.
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Replaces how the convolution of `step` is computed.
    pub fn set_conv_kernel(&mut self, step: usize, kernel: ConvKernel) -> Result<()> {
        match self.conv_kernels.get_mut(step) {
            Some(Some(k)) => {
                *k = kernel;
                Ok(())
            }
            _ => Err(Error::Internal(format!("step {step} is not a convolution"))),
        }
    }

    /// Sets every convolution back to the dense kernel.
    pub fn reset_conv_kernels(&mut self) {
        for k in self.conv_kernels.iter_mut().flatten() {
            *k = ConvKernel::Dense;
        }
    }

    /// Takes the accumulated HASTE statistics of every step (and resets them).
    pub fn take_haste_stats(&mut self) -> Vec<crate::haste::LayerStats> {
        let mut all: Vec<crate::haste::LayerStats> = self
            .haste_stats
            .iter_mut()
            .map(|m| std::mem::take(m.get_mut().unwrap_or_else(|e| e.into_inner())))
            .collect();
        for ws in &mut self.workspaces {
            let ws = ws.get_mut().unwrap_or_else(|e| e.into_inner());
            for (a, s) in all.iter_mut().zip(&mut ws.state.stats) {
                a.add(&std::mem::take(s));
            }
        }
        all
    }

    /// Runs a batch of `n` images (`input` = `n * c * h * w` values, NCHW) and returns the
    /// output tensor's shape and data.
    pub fn run(&mut self, input: &[f32], n: usize) -> Result<(Vec<usize>, &[f32])> {
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
        self.infer_shapes(n)?;
        match self.output {
            Src::Slot(s) if self.image_mode && n >= self.threads => self.run_images(input, n, s)?,
            _ => self.run_layers(input, n)?,
        }
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
        let len = shape.iter().product();
        match self.output {
            Src::Slot(s) => Ok((shape, &self.slots[s][..len])),
            _ => Err(Error::Internal("output is not computed".into())),
        }
    }
}

impl Plan {
    /// The pool a run on the calling thread uses: the plan's own, unless that pool counts
    /// the thread that built the plan among its workers and this is another thread (the
    /// builder would not take a share of the work); such runs get a pool of their own,
    /// started on first use (or, if it cannot start, the plan's own).
    fn pool_here(&self) -> &std::sync::Arc<rayon::ThreadPool> {
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
    pub(crate) fn run_pool(&self) -> std::sync::Arc<rayon::ThreadPool> {
        std::sync::Arc::clone(self.pool_here())
    }

    /// Runs the batch step by step (see [`exec`]).
    fn run_layers(&mut self, input: &[f32], n: usize) -> Result<()> {
        // All steps inside one `install`: the loop runs on a pool thread, so each step's
        // parallel work starts without a hand-off from the caller's thread (at batch 1 that
        // hand-off cost more than a CIFAR convolution).
        let pool = self.run_pool();
        pool.install(|| {
            for i in 0..self.steps.len() {
                let t = self.step_seconds.is_some().then(std::time::Instant::now);
                self.execute(i, input, n)?;
                if let (Some(t), Some(acc)) = (t, self.step_seconds.as_mut()) {
                    acc[i] += t.elapsed().as_secs_f64();
                }
            }
            Ok(())
        })
    }

    /// Turns per-step timing on (and clears it) or off.
    pub fn set_profiling(&mut self, on: bool) {
        self.step_seconds = on.then(|| vec![0.0; self.steps.len()]);
    }

    /// Seconds spent in each step since profiling was turned on, by step index.
    pub fn step_seconds(&self) -> Option<&[f64]> {
        self.step_seconds.as_deref()
    }

    /// Turns on (and clears) or off the measurement of each HASTE layer's output error against
    /// the dense convolution of the same input (costs a dense convolution per HASTE layer).
    pub fn set_error_measurement(&mut self, on: bool) {
        self.layer_error = on.then(|| self.steps.iter().map(|_| Mutex::new((0.0, 0.0))).collect());
    }

    /// Relative L2 error `||haste - dense|| / ||dense||` of each step's output (None for steps
    /// without HASTE or when measurement is off), pre-activation.
    pub fn layer_relative_errors(&self) -> Vec<Option<f64>> {
        match &self.layer_error {
            None => vec![None; self.steps.len()],
            Some(v) => v
                .iter()
                .map(|m| {
                    let (num, den) = *m.lock().unwrap_or_else(|e| e.into_inner());
                    (den > 0.0).then(|| (num / den).sqrt())
                })
                .collect(),
        }
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
