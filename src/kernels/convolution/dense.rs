//! The dense convolution: the direct kernel where it suits the layer, the depthwise kernel
//! for depthwise layers, im2col + GEMM elsewhere.

use super::{ConvJob, ConvKernel, Scratch, Scratches};
use crate::kernels::depthwise::DepthwiseConv;
use crate::kernels::direct::DirectConv;
use crate::kernels::grouped::GroupedConv;
use crate::kernels::isa::Isa;
use crate::kernels::{grow, im2col, layout};
use crate::ops::{Conv2dParams, ConvOp};
use rayon::prelude::*;
use std::any::Any;

/// A convolution computed exactly: by the direct kernel ([`DirectConv`]) when
/// [`DirectConv::suits`] the layer, by [`DepthwiseConv`] for a depthwise one, else by im2col
/// + GEMM ([`im2col`]).
pub struct DenseConv {
    op: ConvOp,
    direct: Option<DirectConv>,
    depthwise: Option<DepthwiseConv>,
    grouped: Option<GroupedConv>,
}

/// A thread's copy of the direct kernel with its weights scaled for the current image
/// ([`DirectConv::scaled_into`]), kept between images for its buffers.
#[derive(Default)]
struct ScaledWeights(Option<DirectConv>);

impl crate::kernels::ScratchBytes for ScaledWeights {
    fn scratch_bytes(&self) -> u64 {
        self.0.as_ref().map_or(0, DirectConv::weight_bytes)
    }
}

impl DenseConv {
    pub fn new(op: &ConvOp) -> DenseConv {
        let direct = if DirectConv::suits(&op.params) {
            DirectConv::new(op)
        } else {
            None
        };
        let depthwise = DepthwiseConv::new(op);
        let grouped = GroupedConv::new(op);
        // The direct and depthwise kernels keep their own copy of the weights; im2col reads
        // the op's.
        let weights = if direct.is_some() || depthwise.is_some() || grouped.is_some() {
            Vec::new()
        } else {
            op.weights.clone()
        };
        DenseConv {
            op: ConvOp {
                weights,
                ..op.clone()
            },
            direct,
            depthwise,
            grouped,
        }
    }

    /// Whether the dense kernel of `p` reads a pixel-major input: the direct kernel does, and
    /// so does a pointwise convolution of one group (one GEMM with the input's strides).
    /// Every other convolution reads NCHW.
    pub fn reads_pixel_major(p: &Conv2dParams) -> bool {
        DirectConv::suits(p)
            || DepthwiseConv::suits(p)
            || GroupedConv::suits(p)
            || (p.is_pointwise() && p.groups == 1)
    }

    /// The depthwise kernel, if this is a depthwise convolution.
    pub fn depthwise(&self) -> Option<&DepthwiseConv> {
        self.depthwise.as_ref()
    }

    /// The grouped kernel, if this convolution runs on it.
    pub fn grouped(&self) -> Option<&GroupedConv> {
        self.grouped.as_ref()
    }

    /// Whether [`Self::pointwise_rows`] runs this convolution: a 1x1 convolution of one group
    /// without stride, padding or a fused residual, on the direct kernel.
    pub fn has_pointwise_rows(&self) -> bool {
        let p = &self.op.params;
        self.direct.is_some()
            && p.is_pointwise()
            && p.groups == 1
            && p.stride == (1, 1)
            && p.pads == [0; 4]
            && self.op.residual.is_none()
    }

    /// Rows `rows` of the output of a pixel-major image `w` pixels wide (`x` holds those rows
    /// of the input) into `out`, pixel-major, bias and activation included: the rows of
    /// [`ConvKernel::run_image`]'s pixel-major output, with the same bits. Needs
    /// [`Self::has_pointwise_rows`].
    pub fn pointwise_rows(&self, x: &[f32], w: usize, rows: usize, out: &mut [f32]) {
        assert!(
            self.has_pointwise_rows(),
            "pointwise_rows on another convolution"
        );
        if let Some(d) = &self.direct {
            d.pointwise_rows(x, w, rows, out);
        }
    }

    /// Whether the dense kernel of `p` is im2col + GEMM (and so needs a column matrix).
    pub fn uses_im2col(p: &Conv2dParams) -> bool {
        !DirectConv::suits(p)
            && !DepthwiseConv::suits(p)
            && !GroupedConv::suits(p)
            && !p.is_pointwise()
    }
}

impl ConvKernel for DenseConv {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn scales_input(&self) -> bool {
        self.direct.is_some()
    }

    fn run_image(&self, job: &ConvJob, out: &mut [f32], s: &mut Scratch) {
        if let (Some(d), Some(scale)) = (&self.direct, job.in_scale) {
            let mut twin = std::mem::take(&mut s.get::<ScaledWeights>().0);
            d.scaled_into(scale, &mut twin);
            if let Some(t) = &twin {
                t.forward(job.x, job.hw, out, &mut s.direct, job.io, job.residual);
            }
            s.get::<ScaledWeights>().0 = twin;
            return;
        }
        if let Some(d) = &self.depthwise {
            d.forward(job.x, job.hw, out, &mut s.depthwise, job.io, job.residual);
            return;
        }
        if let Some(g) = &self.grouped {
            g.forward(job.x, job.hw, out, &mut s.grouped, job.io, job.residual);
            return;
        }
        match &self.direct {
            Some(d) => d.forward(job.x, job.hw, out, &mut s.direct, job.io, job.residual),
            None => {
                let op = &self.op;
                im2col::conv2d_image_layout(
                    op,
                    job.x,
                    job.hw,
                    out,
                    &mut s.col,
                    &mut s.nchw,
                    job.io,
                );
                crate::kernels::activation::add_residual(op, out, job.residual);
            }
        }
    }

    fn run_image_parallel(
        &self,
        job: &ConvJob,
        out: &mut [f32],
        threads: usize,
        scratches: &dyn Scratches,
    ) {
        let p = &self.op.params;
        let io = job.io;
        if let (Some(d), true) = (&self.depthwise, io.input_nhwc && io.output_nhwc) {
            self.depthwise_parallel(d, job, out, threads);
        } else if let (Some(g), true) = (&self.grouped, io.output_nhwc) {
            self.grouped_parallel(g, job, out, threads, scratches);
        } else if self.depthwise.is_some() || self.grouped.is_some() {
            scratches.with_thread(&mut |s| self.run_image(job, out, s));
        } else if let Some(d) = &self.direct {
            // The direct kernel shares the image's output rows.
            scratches.with_shared(&mut |s| {
                let mut twin = std::mem::take(&mut s.get::<ScaledWeights>().0);
                let d = match job.in_scale {
                    Some(scale) => {
                        d.scaled_into(scale, &mut twin);
                        twin.as_ref().unwrap_or(d)
                    }
                    None => d,
                };
                d.forward_parallel(job.x, job.hw, out, &mut s.direct, io, threads, job.residual);
                s.get::<ScaledWeights>().0 = twin;
            });
        } else if p.is_pointwise() && p.groups == 1 && io.output_nhwc {
            self.pointwise_parallel(job, out, threads);
        } else if p.is_pointwise() && p.groups == 1 && io.input_nhwc {
            // A planar output from a pixel-major input: one thread does the image.
            scratches.with_thread(&mut |s| self.run_image(job, out, s));
        } else {
            self.im2col_parallel(job, out, threads, scratches);
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl DenseConv {
    /// A depthwise convolution, pixel-major in and out: each worker a band of output rows.
    fn depthwise_parallel(
        &self,
        d: &DepthwiseConv,
        job: &ConvJob,
        out: &mut [f32],
        threads: usize,
    ) {
        let p = d.params();
        let (oh, ow) = p.out_hw(job.hw.0, job.hw.1);
        let row = ow * p.c_out;
        let per = oh.div_ceil(threads).max(1);
        let isa = Isa::current();
        out[..oh * row]
            .par_chunks_mut(per * row)
            .enumerate()
            .for_each(|(k, band)| {
                let rows = k * per..k * per + band.len() / row;
                let r = job.residual.map(|r| &r[k * per * row..]);
                d.rows(isa, job.x, job.hw, rows, band, r);
            });
    }

    /// A grouped convolution into a pixel-major output: each worker a share of the output
    /// pixels ([`GroupedConv::pixels_per_part`]), from the input rows they read.
    fn grouped_parallel(
        &self,
        g: &GroupedConv,
        job: &ConvJob,
        out: &mut [f32],
        threads: usize,
        scratches: &dyn Scratches,
    ) {
        let p = g.params();
        let (oh, ow) = p.out_hw(job.hw.0, job.hw.1);
        let isa = Isa::current();
        let per = g.pixels_per_part(isa, job.hw, job.io.input_nhwc, threads);
        out[..oh * ow * p.c_out]
            .par_chunks_mut(per * p.c_out)
            .enumerate()
            .for_each(|(k, part)| {
                let pixels = k * per..k * per + part.len() / p.c_out;
                let r = job.residual.map(|r| &r[k * per * p.c_out..]);
                scratches.with_thread(&mut |s| {
                    let (x, nhwc) = (job.x, job.io.input_nhwc);
                    let pixels = pixels.clone();
                    g.padded_pixels(isa, x, job.hw, nhwc, pixels, part, r, &mut s.grouped);
                });
            });
    }

    /// A pointwise convolution into a pixel-major output: each worker a range of pixels.
    fn pointwise_parallel(&self, job: &ConvJob, out: &mut [f32], threads: usize) {
        let (op, c_out) = (&self.op, self.op.params.c_out);
        let hw = job.hw.0 * job.hw.1;
        let per = hw.div_ceil(threads).max(1);
        out.par_chunks_mut(per * c_out)
            .enumerate()
            .for_each(|(k, oc)| {
                let p0 = k * per;
                let pixels = p0..p0 + oc.len() / c_out;
                im2col::pointwise_pixels(op, job.x, hw, pixels, oc, job.io);
                let r = job.residual.map(|r| &r[p0 * c_out..][..oc.len()]);
                crate::kernels::activation::add_residual(op, oc, r);
            });
    }

    /// im2col split by rows and its GEMM by output channels (NCHW in; a pixel-major output
    /// is transposed afterwards).
    fn im2col_parallel(
        &self,
        job: &ConvJob,
        out: &mut [f32],
        threads: usize,
        scratches: &dyn Scratches,
    ) {
        let op = &self.op;
        let p = &op.params;
        let (h, w) = job.hw;
        let (oh, ow) = p.out_hw(h, w);
        let n_cols = oh * ow;
        let out_len = p.c_out * n_cols;
        // The NCHW result of a pixel-major output, in this thread's reused buffer.
        let mut nchw = Vec::new();
        if job.io.output_nhwc {
            scratches.with_thread(&mut |s| nchw = std::mem::take(&mut s.nchw));
            grow(&mut nchw, out_len);
        }
        scratches.with_shared(&mut |shared| {
            let col: &[f32] = if p.is_pointwise() {
                job.x
            } else {
                let rows = p.c_in * p.kh * p.kw;
                let per = rows.div_ceil(threads);
                grow(&mut shared.col, rows * n_cols);
                let col = &mut shared.col[..rows * n_cols];
                col.par_chunks_mut(per * n_cols)
                    .enumerate()
                    .for_each(|(k, c)| {
                        let r0 = k * per;
                        im2col::im2col_rows(p, job.x, h, w, r0..r0 + c.len() / n_cols, c);
                    });
                col
            };
            let target: &mut [f32] = if job.io.output_nhwc {
                &mut nchw[..out_len]
            } else {
                &mut out[..]
            };
            let per = p.c_out.div_ceil(threads);
            target
                .par_chunks_mut(per * n_cols)
                .enumerate()
                .for_each(|(k, oc)| {
                    let c0 = k * per;
                    im2col::gemm_channels(op, col, n_cols, c0..c0 + oc.len() / n_cols, oc);
                });
        });
        if job.io.output_nhwc {
            layout::nchw_to_nhwc(&nchw, p.c_out, n_cols, out);
            scratches.with_thread(&mut |s| s.nchw = std::mem::take(&mut nchw));
        }
        crate::kernels::activation::add_residual(op, out, job.residual);
    }
}
