//! Running one step of a plan: operand lookup and dispatch to the kernels, parallel over images
//! (or, for a batch smaller than the thread count, over parts of one image).

use super::{ConvKernel, Plan, Scratch, Src};
use crate::error::{Error, Result};
use crate::kernels::{conv, layout, pool};
use crate::ops::shape::{normalize_axis, resolve_slice};
use crate::ops::{Activation, ConvOp, Op};
use rayon::prelude::*;
use std::sync::Mutex;

/// Elements per parallel chunk for elementwise ops.
const CHUNK: usize = 1 << 14;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn thread_scratch(scratch: &[Mutex<Scratch>]) -> std::sync::MutexGuard<'_, Scratch> {
    let i = rayon::current_thread_index().unwrap_or(0) % scratch.len();
    lock(&scratch[i])
}

impl Plan {
    pub(crate) fn execute(&mut self, i: usize, input: &[f32], n: usize) -> Result<()> {
        let out_slot = self.steps[i].output;
        let out_len: usize = self.out_shapes[i].iter().product();
        let mut out_buf = std::mem::take(&mut self.slots[out_slot]);
        let result = self
            .pool
            .install(|| self.compute(i, input, n, &mut out_buf[..out_len]));
        self.slots[out_slot] = out_buf;
        result
    }

    fn operand<'a>(&'a self, src: Src, input: &'a [f32], shape: &[usize]) -> &'a [f32] {
        let len: usize = shape.iter().product();
        match src {
            Src::Input => &input[..len],
            Src::Slot(s) => &self.slots[s][..len],
            Src::Const(c) => &self.consts[c].1,
        }
    }

    fn compute(&self, i: usize, input: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        let step = &self.steps[i];
        let node = &self.graph.nodes[step.node];
        let ins = &self.in_shapes[i];
        let out_shape = &self.out_shapes[i];
        let x = self.operand(step.inputs[0], input, &ins[0]);
        match &node.op {
            Op::Conv(c) => self.conv(i, c, x, &ins[0], n, out),
            Op::BatchNorm(b) => {
                let plane: usize = ins[0][2..].iter().product();
                let c = b.scale.len();
                out.par_chunks_mut(plane)
                    .zip(x.par_chunks(plane))
                    .enumerate()
                    .for_each(|(k, (o, xi))| {
                        let ch = k % c;
                        for (o, &v) in o.iter_mut().zip(xi) {
                            *o = v * b.scale[ch] + b.shift[ch];
                        }
                    });
            }
            Op::Relu | Op::LeakyRelu { .. } | Op::Clip { .. } => {
                let act = crate::ops::Activation::of(&node.op).unwrap_or_default();
                out.copy_from_slice(x);
                out.par_chunks_mut(CHUNK).for_each(|o| act.apply(o));
            }
            Op::Add | Op::Sub | Op::Mul | Op::Div => {
                let y = self.operand(step.inputs[1], input, &ins[1]);
                let f = match node.op {
                    Op::Add => |a: f32, b: f32| a + b,
                    Op::Sub => |a: f32, b: f32| a - b,
                    Op::Mul => |a: f32, b: f32| a * b,
                    _ => |a: f32, b: f32| a / b,
                };
                if ins[0] == ins[1] {
                    out.par_chunks_mut(CHUNK)
                        .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
                        .for_each(|(o, (a, b))| {
                            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                                *o = f(a, b);
                            }
                        });
                } else {
                    layout::broadcast_binary(x, &ins[0], y, &ins[1], out, out_shape, f);
                }
            }
            Op::MaxPool(p) | Op::AveragePool(p) => {
                let max = matches!(node.op, Op::MaxPool(_));
                let (h, w) = (ins[0][2], ins[0][3]);
                let (oh, ow) = (out_shape[2], out_shape[3]);
                out.par_chunks_mut(oh * ow)
                    .zip(x.par_chunks(h * w))
                    .for_each(|(o, xi)| pool::pool_plane(p, max, xi, h, w, o));
            }
            Op::GlobalAveragePool => {
                let plane: usize = ins[0][2..].iter().product();
                out.par_iter_mut()
                    .zip(x.par_chunks(plane))
                    .for_each(|(o, xi)| *o = pool::mean(xi));
            }
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Identity => out.copy_from_slice(x),
            Op::Linear(l) => {
                let rows = out.len() / l.n;
                crate::kernels::gemm::sgemm(
                    rows, l.n, l.k, x, l.k, &l.weight, l.n, out, l.n, false,
                );
                for row in out.chunks_exact_mut(l.n) {
                    if l.alpha != 1.0 {
                        row.iter_mut().for_each(|v| *v *= l.alpha);
                    }
                    if let Some(b) = &l.bias {
                        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                    }
                }
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
                layout::slice(x, &ins[0], &r, out);
            }
            Op::Concat { axis } => {
                let a = normalize_axis(*axis, out_shape.len())
                    .ok_or_else(|| Error::Shape("concat axis".into()))?;
                let parts: Vec<(&[f32], &[usize])> = step
                    .inputs
                    .iter()
                    .zip(ins)
                    .map(|(&s, sh)| (self.operand(s, input, sh), sh.as_slice()))
                    .collect();
                layout::concat(&parts, a, out);
            }
            Op::Transpose { perm } => {
                let perm: Vec<usize> = if perm.is_empty() {
                    (0..ins[0].len()).rev().collect()
                } else {
                    perm.clone()
                };
                layout::transpose(x, &ins[0], &perm, out);
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

    fn conv(
        &self,
        i: usize,
        op: &ConvOp,
        x: &[f32],
        in_shape: &[usize],
        n: usize,
        out: &mut [f32],
    ) {
        let (h, w) = (in_shape[2], in_shape[3]);
        let p = &op.params;
        let (oh, ow) = p.out_hw(h, w);
        let in_len = p.c_in * h * w;
        let out_len = p.c_out * oh * ow;
        match &self.conv_kernels[i] {
            Some(ConvKernel::Haste(hc)) => {
                let stats = &self.haste_stats[i];
                out.par_chunks_mut(out_len)
                    .zip(x.par_chunks(in_len))
                    .for_each(|(o, xi)| {
                        let mut s = thread_scratch(&self.scratch);
                        let mut local = crate::haste::LayerStats::default();
                        hc.forward(xi, h, w, o, &mut s.haste, &mut local);
                        if let Some(errors) = &self.layer_error {
                            let s = &mut *s;
                            s.dense.resize(o.len(), 0.0);
                            conv::conv2d_image_with(
                                op,
                                Activation::None,
                                xi,
                                h,
                                w,
                                &mut s.dense,
                                &mut s.col,
                            );
                            let (mut num, mut den) = (0.0f64, 0.0f64);
                            for (&a, &b) in o.iter().zip(&s.dense) {
                                num += ((a - b) as f64).powi(2);
                                den += (b as f64).powi(2);
                            }
                            let mut e = lock(&errors[i]);
                            e.0 += num;
                            e.1 += den;
                        }
                        op.activation.apply(o);
                        lock(stats).add(&local);
                    });
            }
            _ if n >= self.threads || self.threads == 1 => {
                out.par_chunks_mut(out_len)
                    .zip(x.par_chunks(in_len))
                    .for_each(|(o, xi)| {
                        let mut s = thread_scratch(&self.scratch);
                        conv::conv2d_image(op, xi, h, w, o, &mut s.col);
                    });
            }
            _ => {
                // Fewer images than threads: split each image's im2col by rows and its GEMM by
                // output channels.
                let n_cols = oh * ow;
                let parts = self.threads;
                let mut shared = lock(&self.shared_col);
                for (o, xi) in out.chunks_mut(out_len).zip(x.chunks(in_len)) {
                    let col: &[f32] = if conv::is_pointwise(p) {
                        xi
                    } else {
                        let rows = p.c_in * p.kh * p.kw;
                        let per = rows.div_ceil(parts);
                        let col = &mut shared[..rows * n_cols];
                        col.par_chunks_mut(per * n_cols)
                            .enumerate()
                            .for_each(|(k, c)| {
                                let r0 = k * per;
                                conv::im2col_rows(p, xi, h, w, r0..r0 + c.len() / n_cols, c);
                            });
                        col
                    };
                    let per = p.c_out.div_ceil(parts);
                    o.par_chunks_mut(per * n_cols)
                        .enumerate()
                        .for_each(|(k, oc)| {
                            let c0 = k * per;
                            conv::gemm_channels(op, col, n_cols, c0..c0 + oc.len() / n_cols, oc);
                        });
                }
            }
        }
    }
}
