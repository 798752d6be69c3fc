//! Running a plan. Two modes:
//! - image at a time (when every step works image by image and the batch has at least one image
//!   per thread): each thread runs the whole network on one image with its own [`Workspace`], so
//!   activations stay in the core's cache and no step waits for the others;
//! - layer at a time (otherwise, e.g. a batch of one on two threads): each step runs over the
//!   whole batch, parallel over images or over parts of one image.
//!
//! A batch that runs image at a time switches to layer at a time at the step where the
//! filter banks start to outweigh the activations ([`super::hybrid`]).

use super::conv_step::ConvInput;
use super::layout::{to_nhwc_order, to_rank4, Layout, FROM_PIXELS, NHWC_POSITION, TO_PIXELS};
use super::{Plan, Src, Workspace};
use crate::error::{Error, Result};
use crate::kernels::layout::IoLayout;
use crate::kernels::{affine, layout, pool, reduce, shuffle, Scratch};
use crate::ops::shape::{normalize_axis, reduces_image_plane, resolve_slice};
use crate::ops::{Activation, Op};
use rayon::prelude::*;
use std::sync::Mutex;

/// Elements per parallel chunk for elementwise ops.
const CHUNK: usize = 1 << 14;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn thread_workspace(ws: &[Mutex<Workspace>]) -> std::sync::MutexGuard<'_, Workspace> {
    let i = rayon::current_thread_index().unwrap_or(0) % ws.len();
    lock(&ws[i])
}

/// `out = act(f(x, y))` with broadcasting; `f` is a closure type of its own so that each
/// operation compiles to its own vector loop. `min_len` as in [`Frame`].
fn binary<F: Fn(f32, f32) -> f32 + Sync + Copy>(
    x: &[f32],
    y: &[f32],
    (xs, ys, os): (&[usize], &[usize], &[usize]),
    out: &mut [f32],
    min_len: usize,
    act: Activation,
    f: F,
) {
    if xs != ys {
        layout::broadcast_binary_parallel((x, xs), (y, ys), out, os, min_len, f);
        crate::kernels::activation::apply(act, out);
        return;
    }
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
        .with_min_len(min_len)
        .for_each(|(o, (a, b))| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
            crate::kernels::activation::apply(act, o);
        });
}

/// The operands of one step: where slots live and the shapes they have.
pub(super) struct Frame<'a> {
    pub(super) slots: &'a [Vec<f32>],
    /// Where each slot's value starts in it (see `placement`); empty for a thread's
    /// workspace, whose values start at 0.
    pub(super) offsets: &'a [usize],
    pub(super) input: &'a [f32],
    pub(super) in_shapes: &'a [Vec<usize>],
    pub(super) out_shape: &'a [usize],
    /// Smallest chunk count rayon may split elementwise work into pieces of: 1 in layer mode,
    /// `usize::MAX` in image mode (the caller is already one task of a parallel loop, so the
    /// op runs inline on its thread).
    pub(super) min_len: usize,
}

/// How a convolution step runs: over a batch of `n` images, or on one image with the
/// calling thread's scratch.
enum Mode<'a> {
    Batch(usize),
    Image(&'a mut Scratch),
}

impl Plan {
    pub(crate) fn execute(&mut self, i: usize, input: &[f32], n: usize) -> Result<()> {
        let out_slot = self.steps[i].output;
        let out_len: usize = self.out_shapes[i].iter().product();
        let at = self.out_offset(i, n);
        self.slot_offsets[out_slot] = at;
        let mut out_buf = std::mem::take(&mut self.slots[out_slot]);
        let frame = Frame {
            slots: &self.slots,
            offsets: &self.slot_offsets,
            input,
            in_shapes: &self.in_shapes[i],
            out_shape: &self.out_shapes[i],
            min_len: 1,
        };
        // Called from `run_layer_range` on a pool thread.
        let out = &mut out_buf[at..at + out_len];
        let result = self.compute(i, &frame, &mut Mode::Batch(n), out);
        self.slots[out_slot] = out_buf;
        result
    }

    /// Runs steps `0..until` image by image (see the module doc), then leaves each value the
    /// later steps read (the network's output when `until` is the last step) in its batch
    /// slot, image after image, as a layer-at-a-time run would have.
    pub(crate) fn run_images(&mut self, input: &[f32], n: usize, until: usize) -> Result<()> {
        let per_in: usize = self.image_shape.iter().product();
        // (slot, floats per image) of every value handed on.
        let handed: Vec<(usize, usize)> = self
            .handed_on(until)
            .into_iter()
            .map(|(slot, writer)| (slot, self.img_out_shapes[writer].iter().product()))
            .collect();
        let mut bufs: Vec<Vec<f32>> = handed
            .iter()
            .map(|&(slot, len)| {
                let mut buf = std::mem::take(&mut self.slots[slot]);
                if buf.len() < n * len {
                    buf.resize(n * len, 0.0);
                }
                buf
            })
            .collect();
        // Per image, its part of every handed-on value.
        let mut parts: Vec<Vec<&mut [f32]>> = (0..n).map(|_| Vec::new()).collect();
        for (buf, &(_, len)) in bufs.iter_mut().zip(&handed) {
            for (part, chunk) in parts.iter_mut().zip(buf.chunks_mut(len.max(1))) {
                part.push(chunk);
            }
        }
        let image = |(outs, x): (Vec<&mut [f32]>, &[f32])| {
            let mut ws = thread_workspace(&self.workspaces);
            if ws.slots.len() != self.slots.len() {
                ws.slots = self.new_workspace().slots;
            }
            self.run_image(&mut ws, x, until)?;
            for (o, &(slot, _)) in outs.into_iter().zip(&handed) {
                o.copy_from_slice(&ws.slots[slot][..o.len()]);
            }
            Ok(())
        };
        let result = if self.threads == 1 {
            // On the calling thread: handing the batch to the pool's thread and waiting for it
            // costs 17-25 us per run on this VM (over 100 us once the thread has gone to
            // sleep), 2-10 % of a CIFAR ResNet at batch 1. Image mode runs every op inline,
            // so nothing below needs the pool.
            parts
                .into_iter()
                .zip(input.chunks(per_in))
                .try_for_each(image)
        } else {
            self.run_pool().install(|| {
                parts
                    .into_par_iter()
                    .zip(input.par_chunks(per_in))
                    .try_for_each(image)
            })
        };
        for (buf, &(slot, _)) in bufs.into_iter().zip(&handed) {
            self.slots[slot] = buf;
            self.slot_offsets[slot] = 0;
        }
        if let Some(acc) = self.step_seconds.as_mut() {
            // Thread seconds to wall seconds: the threads worked side by side.
            let share = 1.0 / self.threads.min(n) as f64;
            for ws in &mut self.workspaces {
                let ws = ws.get_mut().unwrap_or_else(|e| e.into_inner());
                for (a, s) in acc.iter_mut().zip(ws.seconds.iter_mut()) {
                    *a += std::mem::take(s) * share;
                }
            }
        }
        result
    }

    /// The values steps from `until` on read that steps before it wrote, each with its
    /// writer, and the network's output when a step before `until` computes it.
    fn handed_on(&self, until: usize) -> Vec<(usize, usize)> {
        let mut values = if until < self.steps.len() {
            self.live_slots_at(until)
        } else {
            Vec::new()
        };
        let output = self.steps[self.output_step].output;
        if self.output_step < until && values.iter().all(|&(slot, _)| slot != output) {
            values.push((output, self.output_step));
        }
        values
    }

    /// Steps `0..until` on one image `x`, in the thread's workspace.
    fn run_image(&self, ws: &mut Workspace, x: &[f32], until: usize) -> Result<()> {
        let profiling = self.step_seconds.is_some();
        ws.seconds.resize(self.steps.len(), 0.0);
        let mut i = 0;
        while i < until {
            let t = profiling.then(std::time::Instant::now);
            if i + 1 < until && self.expand_pair(i).is_some() {
                self.run_pair_image(ws, x, i)?;
                if let Some(t) = t {
                    ws.seconds[i + 1] += t.elapsed().as_secs_f64();
                }
                i += 2;
                continue;
            }
            let slot = self.steps[i].output;
            let len: usize = self.img_out_shapes[i].iter().product();
            let mut buf = std::mem::take(&mut ws.slots[slot]);
            let frame = Frame {
                slots: &ws.slots,
                offsets: &[],
                input: x,
                in_shapes: &self.img_in_shapes[i],
                out_shape: &self.img_out_shapes[i],
                min_len: usize::MAX,
            };
            let mode = &mut Mode::Image(&mut ws.scratch);
            let result = self.compute(i, &frame, mode, &mut buf[..len]);
            ws.slots[slot] = buf;
            result?;
            if let Some(t) = t {
                ws.seconds[i] += t.elapsed().as_secs_f64();
            }
            i += 1;
        }
        Ok(())
    }

    pub(super) fn operand<'a>(&'a self, frame: &Frame<'a>, src: Src, shape: &[usize]) -> &'a [f32] {
        let len: usize = shape.iter().product();
        match src {
            Src::Input => &frame.input[..len],
            Src::Slot(s) => {
                let at = frame.offsets.get(s).copied().unwrap_or(0);
                &frame.slots[s][at..at + len]
            }
            Src::Const(c) => &self.consts[c].1,
        }
    }

    /// The fused residual convolution step `i` adds (its second input), if it has one.
    pub(super) fn fused_residual<'a>(
        &'a self,
        i: usize,
        frame: &Frame<'a>,
    ) -> Result<Option<&'a [f32]>> {
        let step = &self.steps[i];
        let node = &self.graph.nodes[step.node];
        let fused = matches!(&node.op, Op::Conv(c) if c.residual.is_some());
        match (fused, step.inputs.get(1)) {
            (false, _) => Ok(None),
            (true, Some(&r)) => Ok(Some(self.operand(frame, r, &frame.in_shapes[1]))),
            (true, None) => Err(Error::Internal(format!(
                "node '{}': fused residual without its input",
                node.name
            ))),
        }
    }

    fn compute(&self, i: usize, frame: &Frame, mode: &mut Mode, out: &mut [f32]) -> Result<()> {
        let step = &self.steps[i];
        let node = &self.graph.nodes[step.node];
        self.check_layouts(i)?;
        let ins = frame.in_shapes;
        let out_shape = frame.out_shape;
        let min = frame.min_len;
        let x = self.operand(frame, step.inputs[0], &ins[0]);
        match &node.op {
            Op::Conv(c) => {
                let residual = self.fused_residual(i, frame)?;
                // A folded channel scale is the step's last input.
                let last = step.inputs.len() - 1;
                let scale = (c.input_scale && last > 0)
                    .then(|| self.operand(frame, step.inputs[last], &ins[last]));
                let x = ConvInput {
                    x,
                    shape: &ins[0],
                    residual,
                    scale,
                };
                match mode {
                    Mode::Batch(n) => self.conv(i, c, x, *n, out)?,
                    Mode::Image(scratch) => self.conv_image(i, x, out, scratch)?,
                }
            }
            Op::BatchNorm(b) if self.layouts[i].is_pixel_major() => {
                let c = b.scale.len().max(1);
                let rows = (CHUNK / c).max(1) * c;
                out.par_chunks_mut(rows)
                    .zip(x.par_chunks(rows))
                    .with_min_len(min)
                    .for_each(|(o, xi)| affine::pixels(b, xi, o));
            }
            Op::BatchNorm(b) => {
                let plane: usize = ins[0][2..].iter().product();
                out.par_chunks_mut(plane.max(1))
                    .zip(x.par_chunks(plane.max(1)))
                    .with_min_len(min)
                    .enumerate()
                    .for_each(|(k, (o, xi))| affine::planes(b, xi, plane, k, o));
            }
            Op::Relu | Op::LeakyRelu { .. } | Op::Clip { .. } | Op::Activation(_) => {
                let act = crate::ops::Activation::of(&node.op).unwrap_or_default();
                out.copy_from_slice(x);
                out.par_chunks_mut(CHUNK)
                    .with_min_len(min)
                    .for_each(|o| crate::kernels::activation::apply(act, o));
            }
            Op::Add | Op::AddActivation(_) | Op::Sub | Op::Mul | Op::Div => {
                let y = self.operand(frame, step.inputs[1], &ins[1]);
                let act = match node.op {
                    Op::AddActivation(a) => a,
                    _ => Activation::None,
                };
                // A pixel-major value broadcasts on its physical `[n, h, w, c]` shape.
                let physical: [Vec<usize>; 3];
                let shapes = if self.layouts[i].is_pixel_major() && ins[0] != ins[1] {
                    physical =
                        [&ins[0][..], &ins[1][..], out_shape].map(|s| to_nhwc_order(&to_rank4(s)));
                    (&physical[0][..], &physical[1][..], &physical[2][..])
                } else {
                    (&ins[0][..], &ins[1][..], out_shape)
                };
                match node.op {
                    Op::Add | Op::AddActivation(_) => {
                        binary(x, y, shapes, out, min, act, |a, b| a + b)
                    }
                    Op::Sub => binary(x, y, shapes, out, min, act, |a, b| a - b),
                    Op::Mul => binary(x, y, shapes, out, min, act, |a, b| a * b),
                    _ => binary(x, y, shapes, out, min, act, |a, b| a / b),
                }
            }
            Op::MaxPool(p) | Op::AveragePool(p) => {
                let max = matches!(node.op, Op::MaxPool(_));
                let (h, w) = (ins[0][2], ins[0][3]);
                let (oh, ow) = (out_shape[2], out_shape[3]);
                if self.layouts[i].is_pixel_major() && ins[0][0] < self.threads && min == 1 {
                    // A batch smaller than the thread count: rows of each image in parallel.
                    let c = ins[0][1];
                    let per = oh.div_ceil(self.threads).max(1);
                    for (o, xi) in out.chunks_mut(oh * ow * c).zip(x.chunks(h * w * c)) {
                        o.par_chunks_mut(per * ow * c)
                            .enumerate()
                            .for_each(|(k, band)| {
                                let rows = k * per..k * per + band.len() / (ow * c);
                                pool::pool_hwc_rows(p, max, xi, (h, w, c), rows, band)
                            });
                    }
                } else if self.layouts[i].is_pixel_major() {
                    let c = ins[0][1];
                    out.par_chunks_mut(oh * ow * c)
                        .zip(x.par_chunks(h * w * c))
                        .with_min_len(min)
                        .for_each(|(o, xi)| pool::pool_hwc(p, max, xi, (h, w, c), o));
                } else {
                    out.par_chunks_mut(oh * ow)
                        .zip(x.par_chunks(h * w))
                        .with_min_len(min)
                        .for_each(|(o, xi)| pool::pool_plane(p, max, xi, h, w, o));
                }
            }
            Op::GlobalAveragePool => self.image_means(i, x, &ins[0], out, min),
            Op::ReduceMean { axes, .. } if reduces_image_plane(axes, ins[0].len()) => {
                self.image_means(i, x, &ins[0], out, min)
            }
            Op::Unary(u) => out
                .par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .with_min_len(min)
                .for_each(|(o, xi)| o.iter_mut().zip(xi).for_each(|(o, &v)| *o = u.at(v))),
            Op::LayerNorm(l) => {
                let d = l.scale.len();
                let rows = (CHUNK / d).max(1) * d;
                out.par_chunks_mut(rows)
                    .zip(x.par_chunks(rows))
                    .with_min_len(min)
                    .for_each(|(o, xi)| crate::kernels::normalize::rows(l, xi, o));
            }
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Identity => out.copy_from_slice(x),
            Op::ReduceMean { axes, .. } => {
                let reduced = crate::ops::shape::reduced_axes(axes, ins[0].len())
                    .ok_or_else(|| Error::Shape(format!("node '{}': axes", node.name)))?;
                reduce::reduce_mean(x, &ins[0], &reduced, out);
            }
            Op::Softmax { axis } => {
                let a = normalize_axis(*axis, ins[0].len())
                    .ok_or_else(|| Error::Shape(format!("node '{}': axis", node.name)))?;
                reduce::softmax(x, &ins[0], a, out);
            }
            Op::Linear(l) => {
                // In parallel where the plan runs this step over the batch, layer by layer
                // (at batch 8 AlexNet's classifier ran on one core while the other waited).
                let parallel = min == 1 && self.threads > 1;
                let isa = crate::kernels::isa::Isa::current();
                crate::kernels::linear::linear(isa, l, x, out, parallel);
            }
            // Pixel-major values run on their physical `[n, h, w, c]` shape.
            Op::Pad { pads, value } if self.layouts[i].is_pixel_major() => {
                let (begin, end) = pads.split_at(4);
                let pads = [to_nhwc_order(begin), to_nhwc_order(end)].concat();
                let (shape, out_phys) = (to_nhwc_order(&ins[0]), to_nhwc_order(out_shape));
                layout::pad(x, &shape, &pads, *value, out, &out_phys)
            }
            Op::Pad { pads, value } => layout::pad(x, &ins[0], pads, *value, out, out_shape),
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            } => {
                let r = resolve_slice(&ins[0], starts, ends, axes, steps)
                    .ok_or_else(|| Error::Shape(format!("node '{}': bad slice", node.name)))?;
                if self.layouts[i].is_pixel_major() {
                    layout::slice(x, &to_nhwc_order(&ins[0]), &to_nhwc_order(&r), out);
                } else {
                    layout::slice(x, &ins[0], &r, out);
                }
            }
            Op::SplitPart { .. } => {
                let r = node
                    .op
                    .split_range(&ins[0])
                    .ok_or_else(|| Error::Shape(format!("node '{}': split parts", node.name)))?;
                if self.layouts[i].is_pixel_major() {
                    layout::slice(x, &to_nhwc_order(&ins[0]), &to_nhwc_order(&r), out);
                } else {
                    layout::slice(x, &ins[0], &r, out);
                }
            }
            Op::Concat { axis } => {
                let a = normalize_axis(*axis, out_shape.len())
                    .ok_or_else(|| Error::Shape("concat axis".into()))?;
                let shapes: Vec<Vec<usize>> = if self.layouts[i].is_pixel_major() {
                    ins.iter().map(|s| to_nhwc_order(s)).collect()
                } else {
                    ins.to_vec()
                };
                let a = if self.layouts[i].is_pixel_major() {
                    NHWC_POSITION[a]
                } else {
                    a
                };
                let parts: Vec<(&[f32], &[usize])> = step
                    .inputs
                    .iter()
                    .zip(ins)
                    .zip(&shapes)
                    .map(|((&s, sh), phys)| (self.operand(frame, s, sh), phys.as_slice()))
                    .collect();
                layout::concat(&parts, a, out, min);
            }
            // Between an NCHW image kept pixel-major and `[n, h, w, c]`: the same memory.
            Op::Transpose { perm } if self.in_layouts[i][0].is_pixel_major() => {
                debug_assert_eq!(perm[..], TO_PIXELS);
                out.copy_from_slice(x);
            }
            Op::Transpose { perm } if self.layouts[i].is_pixel_major() => {
                debug_assert_eq!(perm[..], FROM_PIXELS);
                out.copy_from_slice(x);
            }
            Op::Transpose { perm } => {
                let perm: Vec<usize> = if perm.is_empty() {
                    (0..ins[0].len()).rev().collect()
                } else {
                    perm.clone()
                };
                layout::transpose(x, &ins[0], &perm, out);
            }
            Op::ChannelShuffle { groups } => {
                let c = ins[0][1];
                // A pixel's channels, or an image's planes, at a time.
                let (inner, block) = if self.layouts[i].is_pixel_major() {
                    (1, (CHUNK / c.max(1)).max(1) * c)
                } else {
                    let plane: usize = ins[0][2..].iter().product();
                    (plane, c * plane)
                };
                out.par_chunks_mut(block.max(1))
                    .zip(x.par_chunks(block.max(1)))
                    .with_min_len(min)
                    .for_each(|(o, xi)| shuffle::shuffle_channels(xi, c, *groups, inner, o));
            }
            other => {
                return Err(Error::Internal(format!(
                    "node '{}': {} cannot run at run time",
                    node.name,
                    other.kind()
                )))
            }
        }
        Ok(())
    }

    /// The mean of every channel of each image of `x` (`shape` `[n, c, h, w]`, held in step
    /// `i`'s input order) into `out` (`[n, c]`): a global average pooling. Both memory orders
    /// sum each channel in pixel order, so they give the same bits.
    fn image_means(&self, i: usize, x: &[f32], shape: &[usize], out: &mut [f32], min: usize) {
        let plane: usize = shape[2..].iter().product();
        if self.in_layouts[i][0].is_pixel_major() {
            let c = shape[1];
            // In layer mode (one image on every core) the parts of each image's pixels run
            // in parallel too.
            out.par_chunks_mut(c)
                .zip(x.par_chunks(plane * c))
                .with_min_len(min)
                .for_each(|(o, xi)| pool::mean_hwc_parts(xi, plane, c, o, min == 1));
        } else {
            out.par_iter_mut()
                .zip(x.par_chunks(plane))
                .with_min_len(min)
                .for_each(|(o, xi)| *o = pool::mean(xi));
        }
    }

    /// Errors unless step `i`'s op reads the memory order of each of its operands: only the
    /// ops [`super::layout`] lets keep a pixel-major value may be handed one.
    fn check_layouts(&self, i: usize) -> Result<()> {
        let node = &self.graph.nodes[self.steps[i].node];
        let reads_pixel_major = super::layout::keeps_layout(&node.op)
            || matches!(node.op, Op::Conv(_) | Op::GlobalAveragePool)
            || matches!(&node.op, Op::Transpose { perm } if perm[..] == TO_PIXELS)
            || matches!(&node.op, Op::ReduceMean { axes, .. }
                if reduces_image_plane(axes, self.img_in_shapes[i][0].len()));
        if reads_pixel_major || self.in_layouts[i].iter().all(|l| *l == Layout::Nchw) {
            return Ok(());
        }
        Err(Error::Internal(format!(
            "node '{}': {} given a pixel-major operand",
            node.name,
            node.op.kind()
        )))
    }

    /// The memory orders of step `i`'s input and output (see [`super::layout`]).
    pub(super) fn io_layout(&self, i: usize) -> IoLayout {
        Layout::io(self.in_layouts[i][0], self.layouts[i])
    }
}
