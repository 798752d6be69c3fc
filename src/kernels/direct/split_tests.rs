//! The direct layer in every memory order (planar or pixel-major input and output) and split
//! among any number of parts (by rows, pixels or output channels): the bits of one part in
//! planar order, and the reference convolution's values.

use super::*;
use crate::kernels::layout::{self, IoLayout};
use crate::ops::{Activation, Conv2dParams, ConvOp};

/// Every memory order, sequential and split into 1, 2, 3 or more parts than output rows,
/// over geometries that reach each block shape of the AVX-512 kernel (fewer than 16
/// output channels, exactly 32 and 64, 64 plus a remainder, several groups of 64), input
/// channel counts that do and do not fill the transposes' 8-channel blocks, strides,
/// asymmetric padding, non-square and 1x1 kernels, each activation, with and without bias.
/// The direct kernel does the same arithmetic in the same order whatever the memory order
/// or the split, so every result is expected bit for bit equal to the sequential NCHW one
/// (itself checked against the naive reference). One scratch serves every case, so stale
/// data left by a larger case would show.
#[test]
fn every_memory_order_and_split_gives_the_nchw_bits_over_geometries() {
    use crate::kernels::reference::conv2d_direct;
    let io_all = [(false, false), (true, false), (false, true), (true, true)].map(
        |(input_nhwc, output_nhwc)| IoLayout {
            input_nhwc,
            output_nhwc,
        },
    );
    let mut s = DirectScratch::default();
    let cases = [
        (1, 5, (3, 3), (1, 1), [1; 4], (5, 6), Activation::Relu, true),
        (
            3,
            16,
            (3, 3),
            (2, 2),
            [1, 0, 2, 1],
            (9, 8),
            Activation::None,
            false,
        ),
        // An RGB stem of stride 2 and 32 channels (MobileNet's, RegNet's): row blocks of
        // inputs 6 floats apart, two vectors of channels.
        (
            3,
            32,
            (3, 3),
            (2, 2),
            [1; 4],
            (13, 12),
            Activation::Clip(0.0, 6.0),
            true,
        ),
        (
            8,
            32,
            (3, 3),
            (1, 1),
            [0; 4],
            (6, 7),
            Activation::LeakyRelu(0.1),
            true,
        ),
        (
            13,
            64,
            (3, 3),
            (1, 2),
            [1, 1, 0, 2],
            (7, 9),
            Activation::Relu,
            true,
        ),
        (
            10,
            70,
            (3, 3),
            (2, 1),
            [2, 1, 1, 0],
            (8, 6),
            Activation::LeakyRelu(0.1),
            true,
        ),
        (
            16,
            130,
            (1, 1),
            (1, 1),
            [0; 4],
            (5, 7),
            Activation::Relu,
            true,
        ),
        // A narrow 1x1 projection (MobileNet's 144 -> 24), lanes of one vector masked.
        (
            40,
            24,
            (1, 1),
            (1, 1),
            [0; 4],
            (6, 9),
            Activation::None,
            true,
        ),
        (
            64,
            64,
            (1, 1),
            (2, 2),
            [0; 4],
            (9, 9),
            Activation::None,
            true,
        ),
        (
            5,
            33,
            (5, 3),
            (1, 1),
            [2, 1, 2, 1],
            (6, 5),
            Activation::Clip(0.0, 0.5),
            true,
        ),
        (
            17,
            192,
            (7, 7),
            (2, 2),
            [3; 4],
            (11, 11),
            Activation::Relu,
            false,
        ),
        // Larger images, asymmetric padding, a 7x7 RGB layer, rows that leave row
        // blocks a rest.
        (
            16,
            16,
            (3, 3),
            (1, 1),
            [1; 4],
            (12, 16),
            Activation::Relu,
            true,
        ),
        (
            24,
            64,
            (3, 3),
            (2, 2),
            [1, 0, 2, 1],
            (20, 19),
            Activation::None,
            true,
        ),
        (
            3,
            64,
            (7, 7),
            (2, 2),
            [3; 4],
            (23, 22),
            Activation::Relu,
            true,
        ),
        (
            32,
            70,
            (5, 3),
            (1, 1),
            [2, 1, 2, 1],
            (10, 9),
            Activation::Clip(-0.5, 0.5),
            false,
        ),
        // Split by output channels on 2 parts (7 rows).
        (
            32,
            128,
            (3, 3),
            (1, 1),
            [1; 4],
            (7, 7),
            Activation::Relu,
            true,
        ),
        // By channels into parts that are not whole multiples of 64 (64 + 80 on 2 parts, a
        // 16-channel panel last; on 3 parts by rows, 3 + 3 + 1, since 64 + 64 + 16 channels
        // would be no more even).
        (
            24,
            144,
            (3, 3),
            (1, 1),
            [1; 4],
            (7, 5),
            Activation::None,
            true,
        ),
        // A pointwise layer: its parts split pixels, inside rows.
        (
            24,
            40,
            (1, 1),
            (1, 1),
            [0; 4],
            (5, 7),
            Activation::Relu,
            true,
        ),
        // One pixel (squeeze-excitation) and a few: the parts split output channels.
        (
            40,
            200,
            (1, 1),
            (1, 1),
            [0; 4],
            (1, 1),
            Activation::None,
            true,
        ),
        (
            24,
            136,
            (1, 1),
            (1, 1),
            [0; 4],
            (2, 3),
            Activation::Relu,
            true,
        ),
    ];
    for (case, &(c_in, c_out, (kh, kw), (sh, sw), pads, (h, w), activation, bias)) in
        cases.iter().enumerate()
    {
        let p = Conv2dParams::new(c_in, c_out, kh, kw)
            .with_stride(sh, sw)
            .with_pads(pads);
        let op = ConvOp {
            input_scale: false,
            params: p,
            weights: (0..c_out * c_in * kh * kw)
                .map(|i| (((i + case) * 37 % 101) as f32 - 50.0) / 50.0)
                .collect(),
            bias: bias.then(|| (0..c_out).map(|i| (i % 13) as f32 * 0.05 - 0.3).collect()),
            activation,
            residual: None,
        };
        let d = DirectConv::new(&op).expect("one group, no dilation");
        let x: Vec<f32> = (0..c_in * h * w)
            .map(|i| (((i + 7 * case) * 53 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let mut x_hwc = vec![0.0; x.len()];
        layout::nchw_to_nhwc(&x, c_in, h * w, &mut x_hwc);
        let (oh, ow) = p.out_hw(h, w);
        let n = c_out * oh * ow;
        let mut want = vec![f32::NAN; n];
        d.forward(&x, (h, w), &mut want, &mut s, IoLayout::NCHW, None);
        let mut reference = conv2d_direct(&p, &x, h, w, &op.weights, op.bias.as_deref());
        activation.apply(&mut reference);
        for (a, b) in want.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{p:?}: {a} vs {b}");
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for io in io_all {
            let xin = if io.input_nhwc { &x_hwc } else { &x };
            for parts in [0, 1, 2, 3, oh + 3] {
                let mut out = vec![f32::NAN; n];
                if parts == 0 {
                    d.forward(xin, (h, w), &mut out, &mut s, io, None);
                } else {
                    d.forward_parallel(xin, (h, w), &mut out, &mut s, io, parts, None);
                }
                let mut got = out.clone();
                if io.output_nhwc {
                    layout::nhwc_to_nchw(&out, c_out, oh * ow, &mut got);
                }
                assert_eq!(bits(&got), bits(&want), "{p:?} {io:?} parts={parts}");
            }
        }
        // With a fused residual addition (in the output's memory order): every split adds
        // it as the whole-image call does.
        let fused = DirectConv::new(&ConvOp {
            residual: Some(Activation::Relu),
            ..op.clone()
        })
        .expect("one group, no dilation");
        let r: Vec<f32> = (0..n)
            .map(|i| ((i * 29 % 23) as f32 - 11.0) / 8.0)
            .collect();
        for io in io_all {
            let xin = if io.input_nhwc { &x_hwc } else { &x };
            let mut whole = vec![f32::NAN; n];
            fused.forward(xin, (h, w), &mut whole, &mut s, io, Some(&r));
            for parts in [2, 3] {
                let mut out = vec![f32::NAN; n];
                fused.forward_parallel(xin, (h, w), &mut out, &mut s, io, parts, Some(&r));
                assert_eq!(
                    bits(&out),
                    bits(&whole),
                    "{p:?} {io:?} parts={parts} residual"
                );
            }
        }
    }
}
