use super::*;
use crate::kernels::isa::assert_tier_result;
use crate::kernels::reference::{assert_near_reference, finished_case, FinishedCase};
use crate::ops::Activation;

fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + salt) * 37 % 101) as f32 - 50.0) / 40.0)
        .collect()
}

/// Every tier against the reference convolution (NCHW in and out), and the other memory
/// orders against that, over kernel sizes, strides, asymmetric pads, channel counts
/// around the block width, with and without bias, residual and activation.
#[test]
fn every_tier_and_memory_order_matches_the_reference() {
    for (case, &(c, k, s, pads, (h, w))) in [
        (8, 3, 1, [1, 1, 1, 1], (7, 6)),
        (32, 3, 2, [0, 0, 1, 1], (9, 9)),
        (45, 5, 1, [2, 2, 2, 2], (6, 8)),
        (70, 5, 2, [1, 2, 2, 1], (11, 10)),
        (96, 3, 1, [1, 1, 1, 1], (1, 1)),
        (3, 7, 3, [3, 3, 3, 3], (8, 5)),
        // Several runs of four pixels per row, and a block of one vector after two.
        (48, 3, 1, [1, 1, 1, 1], (5, 13)),
        (24, 5, 2, [2, 2, 2, 2], (6, 21)),
        // 7 wide (the widest block), both strides; rows of 8-pixel blocks ending in 6, 5
        // or 4 pixels; a width without a block (one pixel at a time), asymmetric pads.
        (20, 7, 1, [3, 3, 3, 3], (9, 19)),
        (17, 7, 2, [3, 3, 2, 2], (10, 23)),
        (40, 3, 1, [1, 1, 1, 1], (4, 30)),
        (16, 3, 2, [1, 1, 1, 1], (3, 40)),
        (19, 4, 1, [1, 2, 2, 1], (6, 9)),
        // Small images of many channels, every block at an edge: read packed (a partial
        // last vector; no padding on the left).
        (400, 3, 1, [1, 1, 1, 1], (8, 8)),
        (330, 5, 1, [2, 2, 2, 2], (7, 9)),
        (320, 3, 1, [1, 0, 1, 2], (6, 9)),
    ]
    .iter()
    .enumerate()
    {
        let p = Conv2dParams::new(c, c, k, k)
            .with_stride(s, s)
            .with_pads(pads)
            .with_groups(c);
        let (oh, ow) = p.out_hw(h, w);
        let x = values(c * h * w, case);
        let weights = values(c * k * k, case + 3);
        let bias = (case % 2 == 0).then(|| values(c, case + 5));
        let residual = values(c * oh * ow, case + 7);
        for (activation, fused) in [
            (Activation::None, None),
            (Activation::Clip(0.0, 6.0), None),
            (Activation::Silu, None),
            (Activation::None, Some(Activation::Relu)),
        ] {
            let filters = (&weights[..], bias.as_deref());
            let case = finished_case(p, filters, (activation, fused), &x, (h, w), &residual);
            let FinishedCase {
                op,
                want,
                x_hwc,
                r_hwc,
            } = case;
            let d = DepthwiseConv::new(&op).expect("depthwise");
            let r = fused.map(|_| &residual[..]);
            let mut s = DepthwiseScratch::default();
            let mut got = vec![f32::NAN; want.len()];
            d.forward(&x, (h, w), &mut got, &mut s, IoLayout::NCHW, r);
            assert_near_reference(&got, &want, &p);
            // Every tier and memory order gives the portable tier's bits.
            let mut portable = vec![f32::NAN; want.len()];
            d.rows(
                Isa::Portable,
                &x_hwc,
                (h, w),
                0..oh,
                &mut portable,
                fused.map(|_| &r_hwc[..]),
            );
            let mut as_nchw = vec![0.0; want.len()];
            nhwc_to_nchw(&portable, c, oh * ow, &mut as_nchw);
            let what = format!("{p:?}: NCHW vs pixel-major");
            assert_tier_result(Isa::current(), &got, &as_nchw, &what);
            for isa in Isa::available() {
                let mut o = vec![f32::NAN; want.len()];
                // Two parts, as two threads would run them.
                let split = oh / 2;
                let (top, bottom) = o.split_at_mut(split * ow * c);
                let rr = fused.map(|_| &r_hwc[..]);
                d.rows(isa, &x_hwc, (h, w), 0..split, top, rr);
                let rb = fused.map(|_| &r_hwc[split * ow * c..]);
                d.rows(isa, &x_hwc, (h, w), split..oh, bottom, rb);
                assert_tier_result(isa, &o, &portable, &format_args!("{p:?}"));
                // Two output rows at a time, each from a copy of only the input rows it
                // reads, as a fused expansion hands them over.
                let mut o = vec![f32::NAN; want.len()];
                for r0 in (0..oh).step_by(2) {
                    let rows = r0..(r0 + 2).min(oh);
                    let band = d.input_rows(h, rows.clone());
                    let copy = x_hwc[band.start * w * c..band.end * w * c].to_vec();
                    let out = &mut o[r0 * ow * c..rows.end * ow * c];
                    let rr = fused.map(|_| &r_hwc[r0 * ow * c..]);
                    d.band_rows(isa, (&copy, band.start), (h, w), rows, out, rr);
                }
                assert_tier_result(isa, &o, &portable, &format_args!("{p:?} in bands"));
            }
        }
    }
}
