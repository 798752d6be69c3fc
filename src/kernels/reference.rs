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
