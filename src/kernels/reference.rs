//! Naive reference kernels: obviously correct, slow, used to test the fast ones.

use crate::ops::Conv2dParams;

/// The output of `op` on one image (`x`: `[c_in, h, w]`) as the plain loops compute it:
/// [`conv2d_direct`] with the op's bias, then its fused `residual` (same layout as the
/// output) and the activation after it, or else its own activation. What the fast kernels'
/// tests compare against.
pub fn conv_op_finished(
    op: &crate::ops::ConvOp,
    x: &[f32],
    (h, w): (usize, usize),
    residual: &[f32],
) -> Vec<f32> {
    let mut out = conv2d_direct(&op.params, x, h, w, &op.weights, op.bias.as_deref());
    match op.residual {
        Some(after) => after.add_then_apply(&mut out, residual),
        None => op.activation.apply(&mut out),
    }
    out
}

/// One case of a fast kernel's test: the op, the expected NCHW output, and the input and
/// residual pixel-major (what the kernels' pixel-major paths read).
pub struct FinishedCase {
    pub op: crate::ops::ConvOp,
    pub want: Vec<f32>,
    pub x_hwc: Vec<f32>,
    pub r_hwc: Vec<f32>,
}

/// The [`FinishedCase`] of a convolution `p` with `weights` and `bias`, finished by
/// `activation` or by a fused residual addition then `fused`, on the NCHW image `x` (`hw`)
/// with the NCHW `residual` (used only with `fused`).
pub fn finished_case(
    p: Conv2dParams,
    (weights, bias): (&[f32], Option<&[f32]>),
    (activation, fused): (crate::ops::Activation, Option<crate::ops::Activation>),
    x: &[f32],
    (h, w): (usize, usize),
    residual: &[f32],
) -> FinishedCase {
    use crate::kernels::layout::nchw_to_nhwc;
    let op = crate::ops::ConvOp {
        input_scale: false,
        params: p,
        weights: weights.to_vec(),
        bias: bias.map(<[f32]>::to_vec),
        activation,
        residual: fused,
    };
    let want = conv_op_finished(&op, x, (h, w), residual);
    let mut x_hwc = vec![0.0; x.len()];
    nchw_to_nhwc(x, p.c_in, h * w, &mut x_hwc);
    let (oh, ow) = p.out_hw(h, w);
    let mut r_hwc = vec![0.0; residual.len()];
    nchw_to_nhwc(residual, p.c_out, oh * ow, &mut r_hwc);
    FinishedCase {
        op,
        want,
        x_hwc,
        r_hwc,
    }
}

/// Asserts that `got` is the reference output `want` within float rounding.
pub fn assert_near_reference(got: &[f32], want: &[f32], what: &dyn std::fmt::Debug) {
    assert_eq!(got.len(), want.len(), "{what:?}: output length");
    for (a, b) in got.iter().zip(want) {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{what:?}: {a} vs {b}"
        );
    }
}

/// Direct convolution of one image (`x`: `[c_in, h, w]`) into `[c_out, oh, ow]`.
/// `weights` is OIHW, `bias` optional. Handles stride, padding, dilation and groups.
pub fn conv2d_direct(
    p: &Conv2dParams,
    x: &[f32],
    h: usize,
    w: usize,
    weights: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (oh, ow) = p.out_hw(h, w);
    let cig = p.c_in_per_group();
    let cog = p.c_out / p.groups;
    let mut out = vec![0.0f32; p.c_out * oh * ow];
    for co in 0..p.c_out {
        let g = co / cog;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias.map_or(0.0, |b| b[co]) as f64;
                for ci in 0..cig {
                    let c = g * cig + ci;
                    for ky in 0..p.kh {
                        let iy =
                            (oy * p.stride.0 + ky * p.dilation.0) as isize - p.pads[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..p.kw {
                            let ix =
                                (ox * p.stride.1 + kx * p.dilation.1) as isize - p.pads[1] as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let wv = weights[((co * cig + ci) * p.kh + ky) * p.kw + kx];
                            let xv = x[(c * h + iy as usize) * w + ix as usize];
                            acc += (wv * xv) as f64;
                        }
                    }
                }
                out[(co * oh + oy) * ow + ox] = acc as f32;
            }
        }
    }
    out
}
