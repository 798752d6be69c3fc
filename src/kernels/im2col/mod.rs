//! Dense convolution: im2col + SGEMM, with a copy-free path for 1x1 stride-1 convolutions.
//!
//! The work of one image splits two ways so that a batch of one still uses every core:
//! [`im2col_rows`] fills any range of rows of the column matrix, and [`gemm_channels`]
//! computes any range of output channels from a finished column matrix.

mod wide;

use super::gemm::sgemm_strided;
use super::layout::{self, IoLayout};
use crate::ops::{Activation, Conv2dParams, ConvOp};
use wide::conv_wide;

/// Rows of the column matrix: `c_in * kh * kw`; columns: `oh * ow`.
pub fn col_len(p: &Conv2dParams, h: usize, w: usize) -> usize {
    let (oh, ow) = p.out_hw(h, w);
    p.c_in * p.kh * p.kw * oh * ow
}

/// Fills rows `rows` of the im2col matrix of one image into `col` (which holds exactly those
/// rows, each `oh * ow` long). Padding reads as zero.
pub fn im2col_rows(
    p: &Conv2dParams,
    x: &[f32],
    h: usize,
    w: usize,
    rows: std::ops::Range<usize>,
    col: &mut [f32],
) {
    let (oh, ow) = p.out_hw(h, w);
    let n = oh * ow;
    let kk = p.kh * p.kw;
    for (r, dst) in rows.zip(col.chunks_exact_mut(n)) {
        let (c, ky, kx) = (r / kk, (r % kk) / p.kw, r % p.kw);
        let plane = &x[c * h * w..(c + 1) * h * w];
        let dx = (kx * p.dilation.1) as isize - p.pads[1] as isize;
        // Output columns whose input column is inside the image: ox in [lo, hi).
        let sw = p.stride.1 as isize;
        let lo = if dx >= 0 {
            0
        } else {
            ((-dx + sw - 1) / sw) as usize
        }
        .min(ow);
        let hi = if (w as isize) > dx {
            (((w as isize - dx) + sw - 1) / sw) as usize
        } else {
            0
        }
        .clamp(lo, ow);
        for oy in 0..oh {
            let out_row = &mut dst[oy * ow..(oy + 1) * ow];
            let iy = (oy * p.stride.0 + ky * p.dilation.0) as isize - p.pads[0] as isize;
            if iy < 0 || iy >= h as isize {
                out_row.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * w..(iy as usize + 1) * w];
            out_row[..lo].fill(0.0);
            out_row[hi..].fill(0.0);
            let start = (lo as isize * sw + dx) as usize;
            if sw == 1 {
                out_row[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
            } else {
                for (j, o) in out_row[lo..hi].iter_mut().enumerate() {
                    *o = src[start + j * p.stride.1];
                }
            }
        }
    }
}

/// Output channels `channels` of one image from its column matrix `col` (all rows), written to
/// `out` (which holds exactly those channels), with bias and activation applied.
pub fn gemm_channels(
    op: &ConvOp,
    col: &[f32],
    n: usize,
    channels: std::ops::Range<usize>,
    out: &mut [f32],
) {
    gemm_channels_with(op, op.activation, col, n, channels, out)
}

/// [`gemm_channels`] with another activation than the op's own.
pub fn gemm_channels_with(
    op: &ConvOp,
    activation: Activation,
    col: &[f32],
    n: usize,
    channels: std::ops::Range<usize>,
    out: &mut [f32],
) {
    gemm_groups(op, col, n, channels.clone(), out);
    epilogue(op, activation, channels, n, out);
}

/// The GEMMs of [`gemm_channels`] without bias and activation.
pub(super) fn gemm_groups(
    op: &ConvOp,
    col: &[f32],
    n: usize,
    channels: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let p = &op.params;
    let cog = p.c_out / p.groups;
    let k = p.c_in_per_group() * p.kh * p.kw;
    let mut co = channels.start;
    while co < channels.end {
        // One GEMM per group touched by the range.
        let g = co / cog;
        let end = channels.end.min((g + 1) * cog);
        let m = end - co;
        let a = &op.weights[co * k..end * k];
        let b = &col[g * k * n..(g + 1) * k * n];
        let c = &mut out[(co - channels.start) * n..(end - channels.start) * n];
        super::gemm::sgemm(m, n, k, a, k, b, n, c, n, false);
        co = end;
    }
}

/// Bias and activation over output channels `channels` (rows of `n` values in `out`).
pub fn epilogue(
    op: &ConvOp,
    activation: Activation,
    channels: std::ops::Range<usize>,
    n: usize,
    out: &mut [f32],
) {
    for (co, row) in channels.zip(out.chunks_exact_mut(n)) {
        if let Some(b) = &op.bias {
            let bv = b[co];
            row.iter_mut().for_each(|v| *v += bv);
        }
        crate::kernels::activation::apply(activation, row);
    }
}

/// The whole convolution of one image, single-threaded. `col` is scratch, grown as needed.
pub fn conv2d_image(
    op: &ConvOp,
    x: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
    col: &mut Vec<f32>,
) {
    conv2d_image_with(op, op.activation, x, h, w, out, col)
}

/// [`conv2d_image`] with another activation than the op's own (e.g. none, to compare raw
/// convolution outputs).
pub fn conv2d_image_with(
    op: &ConvOp,
    activation: Activation,
    x: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
    col: &mut Vec<f32>,
) {
    let p = &op.params;
    let (oh, ow) = p.out_hw(h, w);
    let n = oh * ow;
    if p.is_pointwise() {
        gemm_channels_with(op, activation, x, n, 0..p.c_out, out);
        return;
    }
    if p.stride == (1, 1) {
        conv_wide(op, activation, x, (h, w), out, col);
        return;
    }
    let len = col_len(p, h, w);
    if col.len() < len {
        col.resize(len, 0.0);
    }
    im2col_rows(p, x, h, w, 0..p.c_in * p.kh * p.kw, &mut col[..len]);
    gemm_channels_with(op, activation, &col[..len], n, 0..p.c_out, out);
}

/// [`conv2d_image`] for the memory orders `io` gives. A plain 1x1 convolution
/// (pointwise, one group) reads and writes either order through GEMM
/// strides; any other convolution here reads NCHW (the plan never hands it a pixel-major
/// input) and, for a pixel-major output, is computed into `tmp` and transposed once.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_image_layout(
    op: &ConvOp,
    x: &[f32],
    (h, w): (usize, usize),
    out: &mut [f32],
    col: &mut Vec<f32>,
    tmp: &mut Vec<f32>,
    io: IoLayout,
) {
    let p = &op.params;
    let (oh, ow) = p.out_hw(h, w);
    let n = oh * ow;
    if p.is_pointwise() && p.groups == 1 {
        pointwise_pixels(op, x, n, 0..n, out, io);
        return;
    }
    assert!(
        !io.input_nhwc,
        "im2col convolution given a pixel-major input"
    );
    if !io.output_nhwc {
        conv2d_image(op, x, h, w, out, col);
        return;
    }
    if tmp.len() < p.c_out * n {
        tmp.resize(p.c_out * n, 0.0);
    }
    conv2d_image(op, x, h, w, &mut tmp[..p.c_out * n], col);
    layout::nchw_to_nhwc(tmp, p.c_out, n, out);
}

/// Output pixels `pixels` of a plain 1x1 convolution over an image of `hw` pixels, as one GEMM
/// whose strides follow the memory orders: `x` is the whole image; `out` is the whole output
/// when NCHW, or only the rows of `pixels` when pixel-major. Bias and activation included.
pub fn pointwise_pixels(
    op: &ConvOp,
    x: &[f32],
    hw: usize,
    pixels: std::ops::Range<usize>,
    out: &mut [f32],
    io: IoLayout,
) {
    let p = &op.params;
    let (c_in, c_out, m) = (p.c_in, p.c_out, pixels.len());
    let a = if io.input_nhwc {
        (&x[pixels.start * c_in..], c_in, 1)
    } else {
        (&x[pixels.start..], 1, hw)
    };
    let b = (&op.weights[..], 1, c_in);
    if io.output_nhwc {
        let out = &mut out[..m * c_out];
        sgemm_strided((m, c_out, c_in), a, b, (out, c_out, 1), false);
        if let Some(bias) = &op.bias {
            layout::add_bias_hwc(out, bias);
        }
        crate::kernels::activation::apply(op.activation, out);
    } else {
        let out = &mut out[pixels.start..];
        sgemm_strided((m, c_out, c_in), a, b, (out, 1, hw), false);
        for co in 0..c_out {
            let row = &mut out[co * hw..][..m];
            if let Some(bias) = &op.bias {
                row.iter_mut().for_each(|v| *v += bias[co]);
            }
            crate::kernels::activation::apply(op.activation, row);
        }
    }
}

#[cfg(test)]
mod tests;
