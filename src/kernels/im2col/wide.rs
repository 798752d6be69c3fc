//! The stride-1 "wide" im2col: each column-matrix row is one contiguous span of a padded
//! input, copied with one `memcpy`.

use super::gemm_groups;
use crate::ops::{Activation, Conv2dParams, ConvOp};

/// Geometry of the stride-1 "wide" path: the input is copied once into a zero-padded
/// `hp x wp` plane per channel, and the convolution is computed on `oh` rows of `wp` columns
/// (the last `wp - ow` columns of each row are discarded). Each row of the column matrix is
/// then one contiguous span of the padded input, copied with a single `memcpy`.
struct Wide {
    wp: usize,
    plane: usize,
    /// Length of a column-matrix row: `oh * wp`.
    nw: usize,
    /// Padded input length, including the read overrun of the last channel's last taps.
    padded: usize,
}

impl Wide {
    fn of(p: &Conv2dParams, h: usize, w: usize) -> Wide {
        let wp = w + p.pads[1] + p.pads[3];
        let plane = (h + p.pads[0] + p.pads[2]) * wp;
        let (oh, _) = p.out_hw(h, w);
        let slack = (p.kw - 1) * p.dilation.1;
        Wide {
            wp,
            plane,
            nw: oh * wp,
            padded: p.c_in * plane + slack,
        }
    }
}

/// Copies `x` (`c x h x w`) into zero-padded planes of `hp x wp`, followed by zeros.
fn pad_input(p: &Conv2dParams, x: &[f32], (h, w): (usize, usize), g: &Wide, dst: &mut [f32]) {
    let (top, left) = (p.pads[0], p.pads[1]);
    let (planes, tail) = dst.split_at_mut(p.c_in * g.plane);
    tail.fill(0.0);
    for (src, plane) in x.chunks_exact(h * w).zip(planes.chunks_exact_mut(g.plane)) {
        let (head, rest) = plane.split_at_mut(top * g.wp);
        head.fill(0.0);
        let (body, bottom) = rest.split_at_mut(h * g.wp);
        bottom.fill(0.0);
        for (s, d) in src.chunks_exact(w).zip(body.chunks_exact_mut(g.wp)) {
            d[..left].fill(0.0);
            d[left..left + w].copy_from_slice(s);
            d[left + w..].fill(0.0);
        }
    }
}

/// A stride-1 convolution of one image through the wide layout (see [`Wide`]).
pub(super) fn conv_wide(
    op: &ConvOp,
    activation: Activation,
    x: &[f32],
    (h, w): (usize, usize),
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let p = &op.params;
    let g = Wide::of(p, h, w);
    let (oh, ow) = p.out_hw(h, w);
    let rows = p.c_in * p.kh * p.kw;
    let need = g.padded + rows * g.nw + p.c_out * g.nw;
    if scratch.len() < need {
        scratch.resize(need, 0.0);
    }
    let (padded, rest) = scratch.split_at_mut(g.padded);
    let (col, wide) = rest.split_at_mut(rows * g.nw);
    let wide = &mut wide[..p.c_out * g.nw];
    pad_input(p, x, (h, w), &g, padded);
    for (r, dst) in col.chunks_exact_mut(g.nw).enumerate() {
        let (c, ky, kx) = (r / (p.kh * p.kw), (r / p.kw) % p.kh, r % p.kw);
        let start = c * g.plane + ky * p.dilation.0 * g.wp + kx * p.dilation.1;
        dst.copy_from_slice(&padded[start..start + g.nw]);
    }
    gemm_groups(op, col, g.nw, 0..p.c_out, wide);
    for (co, (o, wrow)) in out
        .chunks_exact_mut(oh * ow)
        .zip(wide.chunks_exact(g.nw))
        .enumerate()
    {
        let bias = op.bias.as_ref().map_or(0.0, |b| b[co]);
        for (orow, src) in o.chunks_exact_mut(ow).zip(wrow.chunks_exact(g.wp)) {
            for (d, &v) in orow.iter_mut().zip(&src[..ow]) {
                *d = v + bias;
            }
            crate::kernels::activation::apply(activation, orow);
        }
    }
}
