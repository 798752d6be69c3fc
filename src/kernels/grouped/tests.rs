//! The grouped kernel against the reference convolution, on every tier and memory order.
use super::*;
use crate::kernels::isa::assert_tier_result;
use crate::kernels::reference::{assert_near_reference, finished_case, FinishedCase};
use crate::ops::Activation;

fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + salt) * 37 % 101) as f32 - 50.0) / 40.0)
        .collect()
}

/// Every tier and memory order against the reference, over group widths, strides, pads,
/// widths no block divides, with and without bias, residual and activation.
#[test]
fn every_tier_and_memory_order_matches_the_reference() {
    for (case, &(c_in, c_out, groups, k, s, pads, (h, w))) in [
        (32, 32, 2, 3, 1, [1, 1, 1, 1], (7, 6)),
        (48, 48, 3, 3, 2, [0, 0, 1, 1], (9, 9)),
        (16, 64, 2, 3, 1, [1, 1, 1, 1], (5, 7)),
        (24, 24, 3, 1, 1, [0, 0, 0, 0], (4, 5)),
        (64, 96, 4, 5, 2, [2, 1, 1, 2], (10, 11)),
        (96, 96, 2, 3, 1, [1, 1, 1, 1], (7, 7)),
        (128, 128, 2, 3, 2, [1, 1, 1, 1], (9, 8)),
        // Row blocks (AVX-512, stride 1 or 2, 3 x 3, 8 or 16 channels a group): of 8
        // pixels and a block left over per row; of 7 (rows of 14 and 7); pairs of groups
        // and an odd last group.
        (64, 64, 4, 3, 1, [1, 1, 1, 1], (6, 17)),
        (48, 48, 6, 3, 1, [1, 1, 1, 1], (5, 14)),
        (80, 80, 5, 3, 1, [1, 1, 1, 1], (9, 7)),
        (64, 64, 4, 3, 2, [1, 1, 1, 1], (6, 34)),
        (80, 80, 5, 3, 2, [0, 0, 1, 1], (14, 14)),
        // Groups of 4 and of 2 output channels, run two and four at a time as groups of 8
        // (ResNeXt-50's first stage: 32 groups of 4), at stride 1 and 2.
        (64, 64, 16, 3, 1, [1, 1, 1, 1], (6, 9)),
        (128, 128, 32, 3, 2, [1, 1, 1, 1], (9, 8)),
        (32, 16, 8, 3, 1, [1, 1, 1, 1], (5, 7)),
        // Odd counts of 8-channel groups: pairs in one vector (AVX-512 row blocks) and one
        // group left over, at stride 1 and 2.
        (56, 56, 7, 3, 1, [1, 1, 1, 1], (5, 14)),
        (40, 40, 5, 3, 2, [1, 1, 1, 1], (9, 16)),
        // Row blocks from the unpadded image (AVX-512): an odd width whose last block's
        // last input lies past the edge, no padding at all, padding on one side only.
        (32, 32, 2, 3, 2, [1, 1, 1, 1], (13, 13)),
        (32, 32, 2, 3, 1, [0, 0, 0, 0], (9, 9)),
        (24, 24, 3, 3, 1, [0, 1, 2, 1], (6, 8)),
    ]
    .iter()
    .enumerate()
    {
        let p = Conv2dParams::new(c_in, c_out, k, k)
            .with_stride(s, s)
            .with_pads(pads)
            .with_groups(groups);
        assert!(GroupedConv::suits(&p), "{p:?}");
        let (oh, ow) = p.out_hw(h, w);
        let x = values(c_in * h * w, case);
        let weights = values(c_out * (c_in / groups) * k * k, case + 3);
        let bias = (case % 2 == 0).then(|| values(c_out, case + 5));
        let residual = values(c_out * oh * ow, case + 7);
        for (activation, fused) in [
            (Activation::None, None),
            (Activation::Relu, None),
            (Activation::None, Some(Activation::Relu)),
            // Applied in the store (piecewise linear) or over a run of pixels after it.
            (Activation::Clip(0.0, 0.5), None),
            (Activation::HardSwish, Some(Activation::Silu)),
        ] {
            let filters = (&weights[..], bias.as_deref());
            let case = finished_case(p, filters, (activation, fused), &x, (h, w), &residual);
            let FinishedCase {
                op,
                want,
                x_hwc,
                r_hwc,
            } = case;
            let gconv = GroupedConv::new(&op).expect("grouped");
            let r = fused.map(|_| &residual[..]);
            let mut s = GroupedScratch::default();
            let mut nchw = vec![f32::NAN; want.len()];
            gconv.forward(&x, (h, w), &mut nchw, &mut s, IoLayout::NCHW, r);
            assert_near_reference(&nchw, &want, &p);
            let io = IoLayout::NHWC;
            let mut hwc = vec![f32::NAN; want.len()];
            let rr = fused.map(|_| &r_hwc[..]);
            gconv.forward(&x_hwc, (h, w), &mut hwc, &mut s, io, rr);
            let mut back = vec![0.0; want.len()];
            nhwc_to_nchw(&hwc, c_out, oh * ow, &mut back);
            let what = format!("{p:?}: memory orders");
            assert_tier_result(Isa::current(), &back, &nchw, &what);
            // As the parallel layer runs it from the pixel-major image: in two parts split at
            // a row (which AVX-512's row blocks read unpadded) and inside one.
            for split in [(oh / 2) * ow, (oh * ow / 2 + 1).min(oh * ow)] {
                let mut o = vec![f32::NAN; want.len()];
                let (first, second) = o.split_at_mut(split * c_out);
                for (pixels, part) in [(0..split, first), (split..oh * ow, second)] {
                    let rr = fused.map(|_| &r_hwc[pixels.start * c_out..]);
                    let (isa, x) = (Isa::current(), &x_hwc);
                    gconv.padded_pixels(isa, x, (h, w), true, pixels, part, rr, &mut s);
                }
                let what = format!("{p:?}: parts split at pixel {split}");
                assert_tier_result(Isa::current(), &o, &hwc, &what);
            }
            // Every tier, in two parts as two threads would run them.
            let (hp, wp) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
            let mut padded = vec![0.0; hp * wp * c_in];
            to_hwc_padded(&x, c_in, (h, w), (pads[0], pads[1]), (hp, wp), &mut padded);
            for isa in Isa::available() {
                let mut o = vec![f32::NAN; want.len()];
                let split = oh / 2;
                let (top, bottom) = o.split_at_mut(split * ow * c_out);
                gconv.rows(isa, &padded, (hp, wp), 0..split, top, rr);
                let rb = fused.map(|_| &r_hwc[split * ow * c_out..]);
                gconv.rows(isa, &padded, (hp, wp), split..oh, bottom, rb);
                assert_tier_result(isa, &o, &hwc, &format_args!("{p:?}"));
                // In two parts split inside an output row, each from only the padded
                // rows it reads, as the parallel layer runs them.
                let mut o = vec![f32::NAN; want.len()];
                let mid = (oh * ow / 2 + 1).min(oh * ow);
                let (first, second) = o.split_at_mut(mid * c_out);
                for (pixels, part) in [(0..mid, first), (mid..oh * ow, second)] {
                    let rows = gconv.padded_rows((h, w), &pixels);
                    let band = &padded[rows.start * wp * c_in..rows.end * wp * c_in];
                    let rr = fused.map(|_| &r_hwc[pixels.start * c_out..]);
                    gconv.pixels(isa, (band, rows.start), (h, w), pixels, part, rr);
                }
                let what = format_args!("{p:?}: parts inside rows");
                assert_tier_result(isa, &o, &hwc, &what);
            }
        }
    }
}
