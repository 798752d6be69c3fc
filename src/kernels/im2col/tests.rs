//! im2col + GEMM against the reference convolution, in every memory order.

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
        input_scale: false,
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
        input_scale: false,
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
    IoLayout::NHWC,
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
            assert!((p.is_pointwise() && p.groups == 1));
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
        assert!(!(p.is_pointwise() && p.groups == 1), "{p:?}");
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
/// touched), with bias and activation, bit for bit: every output is one chain of fused
/// multiply-adds whatever the range (the `gemm` crate, before haste's own products,
/// rounded a range of few rows about 1 ulp away from the whole image).
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
                        assert_eq!(a.to_bits(), b.to_bits(), "{c_in}->{c_out} {io:?} {r:?}");
                    }
                    assert!(rest.iter().all(|v| v.is_nan()), "{io:?} {r:?}: wrote past");
                } else {
                    let mut part = vec![f32::NAN; c_out * hw];
                    pointwise_pixels(&op, xin, hw, r.clone(), &mut part, io);
                    for (i, (a, b)) in part.iter().zip(&whole).enumerate() {
                        if r.contains(&(i % hw)) {
                            assert_eq!(a.to_bits(), b.to_bits(), "{io:?} {r:?} [{i}]");
                        } else {
                            assert!(a.is_nan(), "{io:?} {r:?}: wrote pixel {}", i % hw);
                        }
                    }
                }
            }
        }
    }
}
