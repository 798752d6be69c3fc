//! What a plan holds in memory, predicted from its shapes before anything large is allocated,
//! and the bounds on the resources a user can ask for: threads, and buffers for a batch.
//!
//! A plan's memory is its weights (the graph's constants, the run-time operands made from
//! them, and each convolution kernel's re-laid copy), its activation buffers for the largest
//! batch (one slot per live value, reused once the value is dead), one image's buffers per
//! worker thread, and the im2col scratch. [`Plan::memory`] adds them up; `haste bench` prints
//! the total beside the measured peak.

use super::Plan;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::kernels::ScratchBytes;
use crate::ops::{ConstData, Op};
use serde::Serialize;

/// Most worker threads a plan takes, whatever the machine.
pub const MAX_THREADS: usize = 1024;

/// Most worker threads per core a plan takes: more only adds switching.
pub const THREADS_PER_CORE: usize = 4;

/// The most threads a plan takes on this machine: `THREADS_PER_CORE` per core, at most
/// [`MAX_THREADS`].
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * THREADS_PER_CORE).min(MAX_THREADS)
}

/// Refuses a thread count beyond [`max_threads`] (a pool of 100,000 threads would take
/// minutes to start and gain nothing).
pub fn check_threads(threads: usize) -> Result<()> {
    let max = max_threads();
    if threads > max {
        return Err(Error::InvalidArgument(format!(
            "{threads} threads is more than this machine's maximum of {max} \
             ({THREADS_PER_CORE} per core, at most {MAX_THREADS})"
        )));
    }
    Ok(())
}

/// Bytes of memory this process can still use: the least of the system's `MemAvailable`,
/// the room left under the control group's limit, and the room left under the process's
/// address-space limit (`ulimit -v`, past which an allocation aborts the process). `None`
/// where none of them can be read.
pub fn available_memory() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let field = |text: &str, name: &str, index: usize| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .split_whitespace()
            .nth(index)?
            .parse()
            .ok()
    };
    let system = read("/proc/meminfo")
        .and_then(|m| field(&m, "MemAvailable:", 0))
        .map(|kb| kb * 1024);
    let number = |p: &str| read(p)?.trim().parse::<u64>().ok();
    let cgroup = number("/sys/fs/cgroup/memory.max")
        .zip(number("/sys/fs/cgroup/memory.current"))
        .map(|(max, used)| max.saturating_sub(used));
    let address_space = read("/proc/self/limits")
        .and_then(|l| field(&l, "Max address space", 0))
        .zip(read("/proc/self/status").and_then(|s| field(&s, "VmSize:", 0)))
        .map(|(limit, used_kb)| limit.saturating_sub(used_kb * 1024));
    [system, cgroup, address_space].into_iter().flatten().min()
}

/// A plan's memory, in bytes, by what it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryPlan {
    /// The graph's constants, their run-time copies, and the kernels' re-laid weights.
    pub weights: u64,
    /// The activation buffers for the plan's largest batch.
    pub activations: u64,
    /// One image's activation buffers per worker thread.
    pub workspaces: u64,
    /// The kernels' scratch buffers: each worker thread's and the shared one.
    pub scratch: u64,
}

impl MemoryPlan {
    pub fn total(&self) -> u64 {
        self.weights + self.activations + self.workspaces + self.scratch
    }

    /// The larger of each part of two plans' memory (a plan before and after compression).
    pub fn max(self, o: MemoryPlan) -> MemoryPlan {
        MemoryPlan {
            weights: self.weights.max(o.weights),
            activations: self.activations.max(o.activations),
            workspaces: self.workspaces.max(o.workspaces),
            scratch: self.scratch.max(o.scratch),
        }
    }
}

/// Bytes of `n` f32 values, saturating.
fn f32_bytes(n: usize) -> u64 {
    (n as u64).saturating_mul(4)
}

/// Human-readable bytes (MiB or GiB).
pub fn format_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// Bytes of the weights a graph holds: its constants and the weights inside its ops.
pub fn graph_weight_bytes(g: &Graph) -> u64 {
    let constants: u64 = g
        .constants
        .values()
        .map(|c| match &c.data {
            ConstData::F32(v) => f32_bytes(v.len()),
            ConstData::I64(v) => (v.len() as u64).saturating_mul(8),
        })
        .sum();
    let in_ops: u64 = g
        .nodes
        .iter()
        .map(|n| match &n.op {
            Op::Conv(c) => f32_bytes(c.weights.len() + c.bias.as_ref().map_or(0, Vec::len)),
            Op::Linear(l) => f32_bytes(l.weight.len() + l.bias.as_ref().map_or(0, Vec::len)),
            Op::BatchNorm(b) => f32_bytes(b.scale.len() + b.shift.len()),
            _ => 0,
        })
        .sum();
    constants + in_ops
}

impl Plan {
    /// Bytes of the activation slots for per-step output shapes `out_shapes` of `n` images
    /// (`None`: a thread's workspace, whose values start at its slots' starts).
    pub(super) fn slot_bytes(&self, out_shapes: &[Vec<usize>], n: Option<usize>) -> u64 {
        let mut sizes = vec![0usize; self.slots.len()];
        for (i, (s, shape)) in self.steps.iter().zip(out_shapes).enumerate() {
            let at = n.map_or(0, |n| self.out_offset(i, n));
            sizes[s.output] = sizes[s.output].max(at + shape.iter().product::<usize>());
        }
        sizes.into_iter().map(f32_bytes).sum()
    }

    /// Refuses a plan whose buffers for one image per thread and for its largest batch
    /// (`batch_shapes`) would not fit in the memory available, before they are allocated.
    pub(super) fn check_buffers_fit(&self, batch_shapes: &[Vec<usize>]) -> Result<()> {
        let Some(available) = available_memory() else {
            return Ok(());
        };
        let per_image = self.slot_bytes(&self.img_out_shapes, None);
        let workspaces = per_image.saturating_mul(self.threads as u64);
        let batch = self.slot_bytes(batch_shapes, Some(self.max_batch));
        let source = &self.graph.source;
        let fmt = format_bytes;
        if workspaces > available {
            return Err(Error::Limits {
                path: source.clone(),
                message: format!(
                    "one image needs {} of activation buffers, {} for {} threads, and {} of \
                     memory are available",
                    fmt(per_image),
                    fmt(workspaces),
                    self.threads,
                    fmt(available)
                ),
            });
        }
        if workspaces.saturating_add(batch) > available {
            return Err(Error::Limits {
                path: source.clone(),
                message: format!(
                    "a batch of {} needs {} of activation buffers and {} of memory are \
                     available: use a smaller batch",
                    self.max_batch,
                    fmt(batch),
                    fmt(available.saturating_sub(workspaces))
                ),
            });
        }
        Ok(())
    }

    /// What the plan holds in memory now (see the module documentation); HASTE kernels put
    /// on it count their weights too.
    pub fn memory(&self) -> MemoryPlan {
        // The ops' weights, and the convolution kernels' re-laid copies (the dense kernel's,
        // and a HASTE kernel's when one replaces it).
        let copies: u64 = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| match &self.graph.nodes[s.node].op {
                Op::Conv(c) => {
                    let copies = 1 + u64::from(!self.conv_kernel_is_dense(i));
                    f32_bytes(c.weights.len()) * copies
                }
                _ => 0,
            })
            .sum();
        let operands: u64 = self.consts.iter().map(|(_, v)| f32_bytes(v.len())).sum();
        let workers: Vec<_> = self
            .workspaces
            .iter()
            .filter_map(|w| w.lock().ok())
            .collect();
        let workspaces = workers
            .iter()
            .map(|w| w.slots.iter().map(|s| f32_bytes(s.capacity())).sum::<u64>())
            .sum();
        // Each worker's kernel scratch and the shared one, as large as the runs so far made
        // them (before the first run, nothing): HASTE's windows and merged filter rows, the
        // padded images of the dense kernels.
        let shared = self.shared.lock().map_or(0, |s| s.scratch_bytes());
        let scratch = shared
            + workers
                .iter()
                .map(|w| w.scratch.scratch_bytes())
                .sum::<u64>();
        MemoryPlan {
            weights: graph_weight_bytes(&self.graph) + operands + copies,
            activations: self.slots.iter().map(|s| f32_bytes(s.capacity())).sum(),
            workspaces,
            scratch,
        }
    }

    /// Whether step `i` runs its convolution on the dense kernel built with the plan.
    fn conv_kernel_is_dense(&self, i: usize) -> bool {
        match (&self.conv_kernels[i], &self.dense_kernels[i]) {
            (Some(k), Some(d)) => std::sync::Arc::ptr_eq(k, d),
            _ => true,
        }
    }
}
