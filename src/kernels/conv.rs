//! Dense convolution: im2col + SGEMM, with a copy-free path for 1x1 stride-1 convolutions.
//!
//! The work of one image splits two ways so that a batch of one still uses every core:
//! [`im2col_rows`] fills any range of rows of the column matrix, and [`gemm_channels`]
//! computes any range of output channels from a finished column matrix.

use super::gemm::sgemm_strided;
use super::layout::{self, IoLayout};
use crate::ops::{Activation, Conv2dParams, ConvOp};

/// True when the convolution reads its input directly as the column matrix.
pub fn is_pointwise(p: &Conv2dParams) -> bool {
    p.kh == 1 && p.kw == 1 && p.stride == (1, 1) && p.pads == [0; 4]
}

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
fn gemm_groups(
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
        activation.apply(row);
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
    if is_pointwise(p) {
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
/// ([`crate::plan::layout::is_plain_pointwise`]) reads and writes either order through GEMM
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
    if crate::plan::layout::is_plain_pointwise(p) {
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
        op.activation.apply(out);
    } else {
        let out = &mut out[pixels.start..];
        sgemm_strided((m, c_out, c_in), a, b, (out, 1, hw), false);
        for co in 0..c_out {
            let row = &mut out[co * hw..][..m];
            if let Some(bias) = &op.bias {
                row.iter_mut().for_each(|v| *v += bias[co]);
            }
            op.activation.apply(row);
        }
    }
}

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
fn conv_wide(
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
            activation.apply(orow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::conv2d_direct;

    fn check(p: Conv2dParams, h: usize, w: usize) {
        let nw = p.c_out * p.c_in_per_group() * p.kh * p.kw;
        let weights: Vec<f32> = (0..nw)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let bias: Vec<f32> = (0..p.c_out).map(|i| i as f32 * 0.1).collect();
        let x: Vec<f32> = (0..p.c_in * h * w)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let want = conv2d_direct(&p, &x, h, w, &weights, Some(&bias));
        let op = ConvOp {
            params: p,
            weights,
            bias: Some(bias),
            activation: Activation::None,
            residual: None,
        };
        let mut out = vec![0.0; want.len()];
        conv2d_image(&op, &x, h, w, &mut out, &mut Vec::new());
        for (a, b) in out.iter().zip(&want) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "{p:?} {h}x{w}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn matches_reference_over_shapes() {
        for &(k, s, pad, d, groups) in &[
            (3, 1, 1, 1, 1),
            (3, 2, 1, 1, 1),
            (1, 1, 0, 1, 1),
            (1, 2, 0, 1, 1),
            (5, 1, 2, 1, 1),
            (3, 1, 2, 2, 1),
            (3, 1, 1, 1, 2),
            (3, 2, 1, 1, 4),
            (7, 2, 3, 1, 1),
        ] {
            let p = Conv2dParams::new(4, 8, k, k)
                .with_stride(s, s)
                .with_pads([pad; 4])
                .with_dilation(d, d)
                .with_groups(groups);
            check(p, 9, 7);
            check(p, 8, 8);
        }
        check(Conv2dParams::new(3, 5, 3, 3).with_pads([0, 1, 2, 0]), 6, 5);
    }

    /// Deterministic values in [-1, 1) (xorshift, no test dependency).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) % 1001) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    fn conv_op(p: Conv2dParams, bias: bool, activation: Activation, seed: u64) -> ConvOp {
        ConvOp {
            params: p,
            weights: values(p.c_out * p.c_in_per_group() * p.kh * p.kw, seed),
            bias: bias.then(|| values(p.c_out, seed + 1)),
            activation,
            residual: None,
        }
    }

    fn to_nhwc(x: &[f32], c: usize, hw: usize) -> Vec<f32> {
        let mut t = vec![f32::NAN; c * hw];
        layout::nchw_to_nhwc(x, c, hw, &mut t);
        t
    }

    fn to_nchw(x: &[f32], c: usize, hw: usize) -> Vec<f32> {
        let mut t = vec![f32::NAN; c * hw];
        layout::nhwc_to_nchw(x, c, hw, &mut t);
        t
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// Equal up to the rounding of two summation orders (values and weights in [-1, 1]).
    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-5 * (1.0 + b.abs())
    }

    const ALL_LAYOUTS: [IoLayout; 4] = [
        IoLayout::NCHW,
        IoLayout {
            input_nhwc: true,
            output_nhwc: false,
        },
        IoLayout {
            input_nhwc: false,
            output_nhwc: true,
        },
        IoLayout {
            input_nhwc: true,
            output_nhwc: true,
        },
    ];

    /// A plain 1x1 convolution in each of the four memory-order combinations (one strided GEMM
    /// per image) gives [`conv2d_image`]'s NCHW result, transposed as needed, over channel
    /// counts from 1 to 70, with and without bias, under three activations. The two are
    /// different GEMMs (`c_out x hw` against `hw x c_out`), so they agree to rounding only.
    #[test]
    fn plain_pointwise_convolutions_in_every_memory_order() {
        let (mut col, mut tmp) = (Vec::new(), Vec::new());
        for (c_in, c_out, h, w) in [
            (1, 1, 1, 1),
            (3, 5, 4, 7),
            (12, 7, 6, 5),
            (16, 70, 5, 5),
            (33, 8, 3, 11),
        ] {
            let hw = h * w;
            for (bias, act) in [
                (true, Activation::Relu),
                (false, Activation::LeakyRelu(0.1)),
                (true, Activation::None),
            ] {
                let p = Conv2dParams::new(c_in, c_out, 1, 1);
                assert!(crate::plan::layout::is_plain_pointwise(&p));
                let op = conv_op(p, bias, act, (c_in * c_out) as u64);
                let x = values(c_in * hw, hw as u64);
                let x_hwc = to_nhwc(&x, c_in, hw);
                let mut want = vec![f32::NAN; c_out * hw];
                conv2d_image(&op, &x, h, w, &mut want, &mut Vec::new());
                for io in ALL_LAYOUTS {
                    let xin = if io.input_nhwc { &x_hwc } else { &x };
                    let mut out = vec![f32::NAN; c_out * hw];
                    conv2d_image_layout(&op, xin, (h, w), &mut out, &mut col, &mut tmp, io);
                    let got = if io.output_nhwc {
                        to_nchw(&out, c_out, hw)
                    } else {
                        out
                    };
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            close(*a, *b),
                            "{c_in}->{c_out} {h}x{w} {act:?} {io:?} [{i}]: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// Every other convolution (im2col or the stride-1 wide path; strided, padded, grouped,
    /// dilated or non-square, 1x1 ones that are not one plain GEMM included) reads NCHW and,
    /// asked for a pixel-major output, writes exactly the transpose of its NCHW output. The
    /// scratch buffers are shared by all cases, so stale data from a larger case would show.
    #[test]
    fn other_convolutions_write_pixel_major_as_the_transposed_nchw_bits() {
        let (mut col, mut tmp) = (Vec::new(), Vec::new());
        let cases = [
            (Conv2dParams::new(6, 10, 3, 3).with_pads([1; 4]), 7, 9),
            (
                Conv2dParams::new(5, 9, 3, 3)
                    .with_stride(2, 2)
                    .with_pads([1, 0, 2, 1]),
                11,
                10,
            ),
            (
                Conv2dParams::new(8, 6, 3, 3)
                    .with_pads([1; 4])
                    .with_groups(2),
                6,
                6,
            ),
            (
                Conv2dParams::new(4, 7, 3, 3)
                    .with_pads([2; 4])
                    .with_dilation(2, 2),
                8,
                5,
            ),
            (
                Conv2dParams::new(3, 16, 5, 3)
                    .with_stride(1, 2)
                    .with_pads([2, 1, 2, 1]),
                9,
                9,
            ),
            (Conv2dParams::new(16, 70, 1, 1).with_stride(2, 2), 7, 8),
            (Conv2dParams::new(9, 6, 1, 1).with_groups(3), 5, 4),
            (Conv2dParams::new(4, 5, 1, 1).with_pads([1, 0, 0, 1]), 3, 4),
        ];
        for (k, &(p, h, w)) in cases.iter().enumerate() {
            assert!(!crate::plan::layout::is_plain_pointwise(&p), "{p:?}");
            let op = conv_op(p, true, Activation::Relu, k as u64 + 10);
            let x = values(p.c_in * h * w, k as u64 + 20);
            let (oh, ow) = p.out_hw(h, w);
            let n = p.c_out * oh * ow;
            let mut want = vec![f32::NAN; n];
            conv2d_image(&op, &x, h, w, &mut want, &mut Vec::new());
            // The NCHW result itself against the naive reference.
            let mut reference = conv2d_direct(&p, &x, h, w, &op.weights, op.bias.as_deref());
            Activation::Relu.apply(&mut reference);
            for (a, b) in want.iter().zip(&reference) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{p:?}: {a} vs {b}");
            }
            for io in ALL_LAYOUTS.into_iter().filter(|io| !io.input_nhwc) {
                let mut out = vec![f32::NAN; n];
                conv2d_image_layout(&op, &x, (h, w), &mut out, &mut col, &mut tmp, io);
                let got = if io.output_nhwc {
                    to_nchw(&out, p.c_out, oh * ow)
                } else {
                    out
                };
                assert_eq!(bits(&got), bits(&want), "{p:?} {io:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "pixel-major input")]
    fn im2col_convolutions_refuse_a_pixel_major_input() {
        let p = Conv2dParams::new(2, 3, 3, 3).with_pads([1; 4]);
        let op = conv_op(p, false, Activation::None, 1);
        let io = IoLayout {
            input_nhwc: true,
            output_nhwc: false,
        };
        let mut out = vec![0.0; 3 * 16];
        let x = values(2 * 16, 2);
        conv2d_image_layout(
            &op,
            &x,
            (4, 4),
            &mut out,
            &mut Vec::new(),
            &mut Vec::new(),
            io,
        );
    }

    /// [`pointwise_pixels`] over a range of pixels, in every memory order: a pixel-major output
    /// holds exactly the range's rows of the whole image's output (nothing written past
    /// them), an NCHW output gets exactly the range's columns of every channel (nothing else
    /// touched), with bias and activation. Not bit for bit: with a pixel-major input the
    /// `gemm` crate computes a GEMM of few rows another way than a large one, so a range of
    /// up to 16 pixels (33 -> 16 channels) or 3 (3 -> 70) rounds about 1 ulp away from the
    /// whole image.
    #[test]
    fn pointwise_pixel_ranges_write_exactly_their_pixels() {
        for (c_in, c_out, h, w) in [(12, 7, 6, 5), (3, 70, 4, 4), (33, 16, 9, 9)] {
            let hw = h * w;
            let p = Conv2dParams::new(c_in, c_out, 1, 1);
            let op = conv_op(p, true, Activation::LeakyRelu(0.1), c_out as u64);
            let x = values(c_in * hw, 5);
            let x_hwc = to_nhwc(&x, c_in, hw);
            let ranges = [0..hw, 0..1, 11..14, 5..5, hw - 1..hw, 3..hw - 2, hw / 2..hw];
            for io in ALL_LAYOUTS {
                let xin = if io.input_nhwc { &x_hwc } else { &x };
                let mut whole = vec![f32::NAN; c_out * hw];
                pointwise_pixels(&op, xin, hw, 0..hw, &mut whole, io);
                assert!(whole.iter().all(|v| v.is_finite()), "{io:?}");
                for r in ranges.clone() {
                    if io.output_nhwc {
                        let mut part = vec![f32::NAN; (r.len() + 2) * c_out];
                        pointwise_pixels(&op, xin, hw, r.clone(), &mut part, io);
                        let (rows, rest) = part.split_at(r.len() * c_out);
                        let want = &whole[r.start * c_out..r.end * c_out];
                        for (a, b) in rows.iter().zip(want) {
                            assert!(close(*a, *b), "{c_in}->{c_out} {io:?} {r:?}: {a} vs {b}");
                        }
                        assert!(rest.iter().all(|v| v.is_nan()), "{io:?} {r:?}: wrote past");
                    } else {
                        let mut part = vec![f32::NAN; c_out * hw];
                        pointwise_pixels(&op, xin, hw, r.clone(), &mut part, io);
                        for (i, (a, b)) in part.iter().zip(&whole).enumerate() {
                            if r.contains(&(i % hw)) {
                                assert!(close(*a, *b), "{io:?} {r:?} [{i}]: {a} vs {b}");
                            } else {
                                assert!(a.is_nan(), "{io:?} {r:?}: wrote pixel {}", i % hw);
                            }
                        }
                    }
                }
            }
        }
    }
}
