//! A convolution step: its operands, and how the plan hands a batch's images to the step's
//! kernel (images in parallel, or each image with every thread), scaling the input first
//! for a kernel that does not take a folded channel scale itself.

use super::exec::{lock, thread_workspace};
use super::{Plan, Workspace};
use crate::error::{Error, Result};
use crate::kernels::layout::IoLayout;
use crate::kernels::{scale_image_into, scale_input, ConvBatch, ConvJob, Scratch, Scratches};
use crate::ops::ConvOp;
use rayon::prelude::*;
use std::sync::Mutex;

/// A convolution step's operands: its input, that input's shape, and the residual its output
/// adds (the whole batch's, in the output's shape and order) when one is fused in.
#[derive(Clone, Copy)]
pub(super) struct ConvInput<'a> {
    pub(super) x: &'a [f32],
    pub(super) shape: &'a [usize],
    pub(super) residual: Option<&'a [f32]>,
    /// The input's channel scales (the whole batch's, `c_in` per image), when one is
    /// folded in.
    pub(super) scale: Option<&'a [f32]>,
}

/// `job` as its kernel takes it: as it is when the kernel `takes_scale`, else with the
/// input scaled into `buf` ([`scale_input`]).
fn handed<'a>(job: ConvJob<'a>, takes_scale: bool, buf: &'a mut Vec<f32>) -> ConvJob<'a> {
    if takes_scale {
        job
    } else {
        scale_input(&job, buf)
    }
}

/// A convolution's input with its channel scale applied, for kernels that do not take the
/// scale themselves: kept in a thread's (or the shared) [`Scratch`] between calls, taken
/// out while the kernel borrows the scratch.
#[derive(Default)]
struct ScaledInput(Vec<f32>);

impl crate::kernels::ScratchBytes for ScaledInput {
    fn scratch_bytes(&self) -> u64 {
        crate::kernels::buffer_bytes(&self.0)
    }
}

/// The scaled-input buffer of `scratch`, taken out of it (put it back with [`put_scaled`]).
fn take_scaled(scratch: &mut Scratch) -> Vec<f32> {
    std::mem::take(&mut scratch.get::<ScaledInput>().0)
}

/// Puts `buf` back as `scratch`'s scaled-input buffer.
fn put_scaled(scratch: &mut Scratch, buf: Vec<f32>) {
    scratch.get::<ScaledInput>().0 = buf;
}

/// `images` images `x` with each image's channels multiplied by its `c_in` values of
/// `scales` (image after image), in `buf`.
fn scale_images<'a>(
    x: &[f32],
    (images, c_in): (usize, usize),
    scales: &[f32],
    io: IoLayout,
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    crate::kernels::grow(buf, x.len());
    let in_len = x.len() / images.max(1);
    let out = buf[..x.len()].chunks_exact_mut(in_len.max(1));
    for ((o, x), s) in out
        .zip(x.chunks_exact(in_len.max(1)))
        .zip(scales.chunks(c_in))
    {
        scale_image_into(x, s, io.input_nhwc, o);
    }
    &buf[..x.len()]
}

/// `len` values of `r` from `offset`, if there is an `r`.
fn part(r: Option<&[f32]>, offset: usize, len: usize) -> Option<&[f32]> {
    r.map(|r| &r[offset..][..len])
}

/// The plan's scratch as convolution kernels see it: each pool thread's own, and the one
/// shared by the parts of an image.
struct PlanScratches<'a> {
    workspaces: &'a [Mutex<Workspace>],
    shared: &'a Mutex<Scratch>,
}

impl Scratches for PlanScratches<'_> {
    fn with_thread(&self, f: &mut dyn FnMut(&mut Scratch)) {
        f(&mut thread_workspace(self.workspaces).scratch)
    }

    fn with_shared(&self, f: &mut dyn FnMut(&mut Scratch)) {
        f(&mut lock(self.shared))
    }
}

impl Plan {
    /// The kernel of convolution step `i`.
    fn kernel(&self, i: usize) -> Result<&dyn crate::kernels::ConvKernel> {
        self.conv_kernels[i]
            .as_deref()
            .ok_or_else(|| Error::Internal(format!("step {i} has no convolution kernel")))
    }

    /// A convolution over a batch of `n` images: images in parallel when there are as many
    /// as threads (each thread's share in one call to a kernel that
    /// [`crate::kernels::ConvKernel::batches_images`]), else each image with every thread.
    pub(super) fn conv(
        &self,
        i: usize,
        op: &ConvOp,
        input: ConvInput,
        n: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let kernel = self.kernel(i)?;
        let (h, w) = (input.shape[2], input.shape[3]);
        let p = &op.params;
        let (oh, ow) = p.out_hw(h, w);
        let in_len = p.c_in * h * w;
        let out_len = p.c_out * oh * ow;
        let io = self.io_layout(i);
        let job = |k: usize, x| ConvJob {
            x,
            hw: (h, w),
            io,
            residual: part(input.residual, k * out_len, out_len),
            in_scale: part(input.scale, k * p.c_in, p.c_in),
        };
        let takes_scale = kernel.scales_input();
        let whole = n >= self.threads || self.threads == 1;
        if whole && kernel.batches_images() && (input.scale.is_none() || !takes_scale) {
            // Each thread its share of the images, in one call (scaled first if the step
            // has a channel scale the kernel does not take).
            let per = n.div_ceil(self.threads);
            let shares = out.par_chunks_mut(per * out_len);
            let shares = shares.zip(input.x.par_chunks(per * in_len));
            shares.enumerate().for_each(|(k, (o, x))| {
                let images = o.len() / out_len;
                let mut ws = thread_workspace(&self.workspaces);
                let mut scaled = take_scaled(&mut ws.scratch);
                let x = match input.scale {
                    Some(s) => {
                        let s = &s[k * per * p.c_in..];
                        scale_images(x, (images, p.c_in), s, io, &mut scaled)
                    }
                    None => x,
                };
                let batch = ConvBatch {
                    x,
                    images,
                    hw: (h, w),
                    io,
                    residual: part(input.residual, k * per * out_len, o.len()),
                };
                kernel.run_images(&batch, o, &mut ws.scratch);
                put_scaled(&mut ws.scratch, scaled);
            });
        } else if whole {
            let images = out.par_chunks_mut(out_len).zip(input.x.par_chunks(in_len));
            images.enumerate().for_each(|(k, (o, x))| {
                // The next image's operands, while this one computes (see `prefetch_to_l2`).
                let next = [(Some(input.x), in_len), (input.residual, out_len)];
                for (v, len) in next {
                    if let Some(v) = v.and_then(|v| v.get((k + 1) * len..(k + 2) * len)) {
                        crate::kernels::prefetch_to_l2(v);
                    }
                }
                let mut ws = thread_workspace(&self.workspaces);
                let mut scaled = take_scaled(&mut ws.scratch);
                let job = handed(job(k, x), takes_scale, &mut scaled);
                kernel.run_image(&job, o, &mut ws.scratch);
                put_scaled(&mut ws.scratch, scaled);
            });
        } else {
            let scratches = PlanScratches {
                workspaces: &self.workspaces,
                shared: &self.shared,
            };
            let images = out.chunks_mut(out_len).zip(input.x.chunks(in_len));
            // The shared scratch's buffer, taken out: the kernel locks that scratch itself.
            let mut scaled = take_scaled(&mut lock(&self.shared));
            for (k, (o, x)) in images.enumerate() {
                let job = handed(job(k, x), takes_scale, &mut scaled);
                kernel.run_image_parallel(&job, o, self.threads, &scratches);
            }
            put_scaled(&mut lock(&self.shared), scaled);
        }
        Ok(())
    }

    /// A convolution of one image on the calling thread, with its scratch.
    pub(super) fn conv_image(
        &self,
        i: usize,
        input: ConvInput,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<()> {
        let job = ConvJob {
            x: input.x,
            hw: (input.shape[2], input.shape[3]),
            io: self.io_layout(i),
            residual: input.residual,
            in_scale: input.scale,
        };
        let kernel = self.kernel(i)?;
        let mut scaled = take_scaled(scratch);
        let job = handed(job, kernel.scales_input(), &mut scaled);
        kernel.run_image(&job, out, scratch);
        put_scaled(scratch, scaled);
        Ok(())
    }
}
