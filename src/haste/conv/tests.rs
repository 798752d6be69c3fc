//! HASTE's convolution: every tier, band and memory order gives the same bits; singletons give the dense kernel's.

use super::*;
use crate::kernels::isa::assert_tier_result;

#[test]
fn window_geometry() {
    let p = Conv2dParams::new(1, 1, 3, 3)
        .with_pads([1, 2, 0, 0])
        .with_stride(2, 1);
    // Output rows 0..2, columns 0..4 of a 9 x 9 image.
    let win = Window::of_patch(&p, (9, 9), (0, 2), (0, 4));
    assert_eq!((win.iy, win.ix, win.h, win.w), (-1, -2, 5, 6));
    assert_eq!((win.r0, win.r1, win.c0, win.c1), (1, 5, 2, 6));
    assert_eq!(win.present(), 16);
    assert!(win.has(1, 2) && !win.has(0, 2) && !win.has(1, 1));
    // A window entirely in the padding has no pixels.
    let p = Conv2dParams::new(1, 1, 1, 1).with_pads([2; 4]);
    let win = Window::of_patch(&p, (3, 3), (0, 1), (0, 1));
    assert_eq!(win.present(), 0);
}

#[test]
fn all_instruction_set_paths_agree_bitwise() {
    // One filter panel (10 outputs) and two (128).
    for c_out in [10, 128] {
        paths_agree_bitwise(c_out);
    }
}

fn paths_agree_bitwise(c_out: usize) {
    let p = Conv2dParams::new(24, c_out, 3, 3).with_pads([1; 4]);
    let n = 24 * c_out * 9;
    let wts: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
        .collect();
    let x: Vec<f32> = (0..24 * 121)
        .map(|i| ((i * 13 % 97) as f32 - 40.0) / 30.0)
        .collect();
    for magnitude_bins in [None, Some(0.5)] {
        let cfg = HasteConfig {
            hyperplanes: 5,
            tile: 3,
            magnitude_bins,
            ..HasteConfig::default()
        };
        let conv = HasteConv::new(p, &wts, None, &cfg, 0).unwrap();
        let run = |f: &dyn Fn(&mut [f32], &mut LayerStats)| {
            let mut out = vec![0.0; c_out * 121];
            let mut stats = LayerStats::default();
            f(&mut out, &mut stats);
            (out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), stats)
        };
        let s = HasteScratch::default();
        let on = |isa: Isa| {
            run(&|o, st| {
                let mut s = s.clone();
                let all = Part::whole(&conv);
                conv.forward_on(isa, &x, (11, 11), None, o, &mut s, st, IoLayout::NCHW, all)
            })
        };
        let generic = on(Isa::Portable);
        let dispatched = run(&|o, st| conv.forward(&x, 11, 11, o, &mut s.clone(), st));
        assert_eq!(generic.1, dispatched.1);
        let floats = |b: &[u32]| b.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>();
        let what = "HASTE forward on the running tier";
        assert_tier_result(
            Isa::current(),
            &floats(&dispatched.0),
            &floats(&generic.0),
            &what,
        );
        for isa in Isa::available() {
            let (bits, stats) = on(isa);
            // The same buckets on every tier: the ternary projections' products are exact,
            // fused or not.
            assert_eq!(generic.1, stats, "{isa}");
            assert_tier_result(isa, &floats(&bits), &floats(&generic.0), &"HASTE forward");
        }
        assert!(generic.1.mean_buckets() < 24.0);
        // Timing the steps changes nothing but the step counts.
        let mut profiled = conv.clone();
        profiled.set_profile_steps(true);
        let (bits, mut stats) = run(&|o, st| profiled.forward(&x, 11, 11, o, &mut s.clone(), st));
        assert_eq!(bits, dispatched.0);
        let steps = std::mem::take(&mut stats.steps);
        assert_eq!(stats, generic.1);
        assert!(steps.kernel > 0 && steps.project > 0, "{steps:?}");
        // Per patch, 24 channels times the window's pixels in the image: window rows (and
        // columns) 4, 5, 5 and 3 for the tiles from 0, 3, 6 and 9 with padding 1.
        assert_eq!(steps.channel_pixels, 24 * 17 * 17);
    }
}

/// A 3x3 HASTE convolution with L = 6 at `tile`, a pixel-major `h x w` input whose channels
/// repeat (so buckets merge), and the whole image's output and statistics.
fn merging_layer(
    (c_in, c_out, h, w): (usize, usize, usize, usize),
    tile: usize,
) -> (HasteConv, Vec<f32>, Vec<f32>, LayerStats) {
    let p = Conv2dParams::new(c_in, c_out, 3, 3).with_pads([1; 4]);
    let wts: Vec<f32> = (0..c_in * c_out * 9)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
        .collect();
    let bias: Vec<f32> = (0..c_out).map(|i| i as f32 * 0.01).collect();
    let x: Vec<f32> = (0..h * w * c_in)
        .map(|i| {
            let (px, c) = (i / c_in, i % c_in);
            ((px * 13 + (c % 7) * 29) % 97) as f32 / 30.0
        })
        .collect();
    let cfg = HasteConfig {
        hyperplanes: 6,
        tile,
        ..HasteConfig::default()
    };
    let conv = HasteConv::new(p, &wts, Some(&bias), &cfg, 1).unwrap();
    let io = IoLayout::NHWC;
    let (oh, ow) = p.out_hw(h, w);
    let mut whole = vec![0.0; oh * ow * c_out];
    let mut whole_stats = LayerStats::default();
    let mut s = HasteScratch::default();
    conv.forward_layout(&x, h, w, &mut whole, &mut s, &mut whole_stats, io);
    assert!(whole_stats.mean_buckets() < c_in as f64);
    (conv, x, whole, whole_stats)
}

#[test]
fn bands_of_rows_add_up_to_the_whole_image() {
    let (c_in, c_out, h, w) = (20, 40, 13, 11);
    let (conv, x, whole, whole_stats) = merging_layer((c_in, c_out, h, w), 4);
    let (oh, ow) = conv.params().out_hw(h, w);
    let mut s = HasteScratch::default();
    let mut banded = vec![0.0; oh * ow * c_out];
    let mut band_stats = LayerStats::default();
    let (top, bottom) = banded.split_at_mut(8 * ow * c_out);
    conv.forward_band(&x, (h, w), 0..8, top, &mut s, &mut band_stats);
    let mut other = HasteScratch::default();
    conv.forward_band(&x, (h, w), 8..oh, bottom, &mut other, &mut band_stats);
    band_stats.images += 1;
    assert_eq!(
        whole.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        banded.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(whole_stats, band_stats);
}

/// The bias, a fused residual and the activation applied in the patch kernel's epilogue
/// (`forward_finished`, whole and in bands, from a pixel-major and a channel-major input)
/// give the bits of the bias-only output finished in separate passes, as the plan finished
/// it before.
#[test]
fn outputs_finished_in_the_kernel_are_those_finished_after_it() {
    use crate::kernels::activation::{add_then_apply, apply};
    use crate::kernels::layout::nhwc_to_nchw;
    use crate::ops::Activation;
    let (c_in, c_out, h, w) = (20, 80, 13, 11);
    let (conv, x, whole, _) = merging_layer((c_in, c_out, h, w), 4);
    let (oh, ow) = conv.params().out_hw(h, w);
    let residual: Vec<f32> = (0..whole.len())
        .map(|i| (i % 23) as f32 * 0.1 - 1.0)
        .collect();
    let x_nchw = {
        let mut v = vec![0.0; x.len()];
        nhwc_to_nchw(&x, c_in, h * w, &mut v);
        v
    };
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for (r, activation) in [
        (None, Activation::Relu),
        (None, Activation::Silu),
        (Some(&residual[..]), Activation::Relu),
        (Some(&residual[..]), Activation::None),
    ] {
        let mut want = whole.clone();
        match r {
            Some(r) => add_then_apply(activation, &mut want, r),
            None => apply(activation, &mut want),
        }
        let finish = Finish {
            residual: r,
            activation,
        };
        let mut s = HasteScratch::default();
        let mut stats = LayerStats::default();
        for (input, nhwc) in [(&x, true), (&x_nchw, false)] {
            let mut got = vec![f32::NAN; want.len()];
            conv.forward_finished(
                input,
                (h, w),
                None,
                nhwc,
                &mut got,
                &mut s,
                &mut stats,
                finish,
            );
            assert_eq!(
                bits(&got),
                bits(&want),
                "{activation:?}, residual {}",
                r.is_some()
            );
        }
        let mut banded = vec![f32::NAN; want.len()];
        let (top, bottom) = banded.split_at_mut(8 * ow * c_out);
        let band_finish = |rows: std::ops::Range<usize>| Finish {
            residual: r.map(|r| &r[rows.start * ow * c_out..rows.end * ow * c_out]),
            activation,
        };
        conv.forward_finished(
            &x,
            (h, w),
            Some(0..8),
            true,
            top,
            &mut s,
            &mut stats,
            band_finish(0..8),
        );
        let f = band_finish(8..oh);
        conv.forward_finished(&x, (h, w), Some(8..oh), true, bottom, &mut s, &mut stats, f);
        assert_eq!(bits(&banded), bits(&want), "bands: {activation:?}");
    }
}

/// Several images in one call (their patches sharing bands) give each image's bits and the
/// images' summed statistics, with a residual and an activation: on a layer whose filter
/// bank fits L2 (bands within an image) and on one that does not (bands across images).
#[test]
fn images_in_one_call_are_the_images_one_by_one() {
    use crate::ops::Activation;
    for (c, side) in [(20, 9), (512, 3)] {
        let (conv, x0, _, _) = merging_layer((c, c, side, side), 4);
        let images = 3;
        // Each image its own input: the first one's values shifted per image.
        let x: Vec<f32> = (0..images)
            .flat_map(|k| {
                x0.iter()
                    .map(move |v| v * (1.0 + k as f32 * 0.5) - k as f32)
            })
            .collect();
        let out_len = side * side * c;
        let residual: Vec<f32> = (0..images * out_len)
            .map(|i| (i % 23) as f32 * 0.1 - 1.0)
            .collect();
        let finish = |k: usize| Finish {
            residual: Some(&residual[k * out_len..][..out_len]),
            activation: Activation::Relu,
        };
        let (mut want, mut want_stats) = (vec![f32::NAN; images * out_len], LayerStats::default());
        let mut s = HasteScratch::default();
        for (k, o) in want.chunks_mut(out_len).enumerate() {
            let xk = &x[k * x0.len()..][..x0.len()];
            let f = finish(k);
            conv.forward_finished(xk, (side, side), None, true, o, &mut s, &mut want_stats, f);
        }
        let (mut got, mut got_stats) = (vec![f32::NAN; images * out_len], LayerStats::default());
        let all = Finish {
            residual: Some(&residual),
            activation: Activation::Relu,
        };
        let mut s = HasteScratch::default();
        conv.forward_images_finished(
            &x,
            (side, side),
            images,
            &mut got,
            &mut s,
            &mut got_stats,
            all,
        );
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{c} channels");
        assert_eq!(got_stats, want_stats, "{c} channels");
        assert_eq!(got_stats.images, images as u64);
    }
}

/// Parts of the filter panels, each hashing every patch itself into its own buffer (how an
/// image with fewer patch rows than threads is shared), add up to the whole image, bit for
/// bit, and the recording part's statistics are the image's.
#[test]
fn parts_of_the_panels_add_up_to_the_whole_image() {
    let (c_in, c_out, h, w) = (20, 192, 7, 9);
    let (conv, x, whole, whole_stats) = merging_layer((c_in, c_out, h, w), 8);
    assert_eq!(conv.panel(), 64);
    let (oh, ow) = conv.params().out_hw(h, w);
    let mut parts = vec![f32::NAN; oh * ow * c_out];
    let mut part_stats = LayerStats::default();
    for (k, qs) in [0..1, 1..3].into_iter().enumerate() {
        let width = qs.len() * 64;
        let mut buf = vec![f32::NAN; oh * ow * width];
        let mut fresh = HasteScratch::default();
        let record = k == 1;
        let qs0 = qs.start;
        conv.forward_panels(
            &x,
            (h, w),
            qs,
            &mut buf,
            &mut fresh,
            &mut part_stats,
            record,
        );
        for (o, b) in parts.chunks_exact_mut(c_out).zip(buf.chunks_exact(width)) {
            o[qs0 * 64..][..width].copy_from_slice(b);
        }
    }
    part_stats.images += 1;
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&whole), bits(&parts));
    assert_eq!(whole_stats, part_stats);
}

/// `forward_layout` in the three other memory-order combinations against `forward`
/// (NCHW) over geometries the first test does not reach: stride 2 and mixed strides,
/// asymmetric padding, 5x5 and strided 1x1 kernels, edge patches (sizes no tile
/// divides), 64 or more output channels (the AVX-512 kernel's wide blocks), no bias;
/// with magnitude bins and centering on and off, and every channel forced into its own
/// bucket. Outputs must be bit-identical after the transpose and `LayerStats` identical.
/// One scratch serves every call, so state left by another layout or size would show.
/// With forced singletons the result must also be the direct kernel's, bit for bit: the
/// same fused multiply-adds in the same (tap, channel) order over the zero-padded window.
#[test]
fn every_memory_order_gives_the_same_bits_and_stats_over_geometries() {
    use crate::kernels::direct::{DirectConv, DirectScratch};
    use crate::kernels::layout::{nchw_to_nhwc, nhwc_to_nchw};
    use crate::ops::{Activation, ConvOp};
    let layouts = [(true, false), (false, true), (true, true)].map(|(i, o)| IoLayout {
        input_nhwc: i,
        output_nhwc: o,
    });
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    let mut s = HasteScratch::default();
    let mut ds = DirectScratch::default();
    let cases = [
        (20, 70, (3, 3), (2, 2), [1, 0, 2, 1], (13, 11), 3, true),
        (16, 8, (5, 5), (1, 1), [2; 4], (9, 10), 4, false),
        (32, 64, (1, 1), (2, 2), [0; 4], (9, 9), 2, true),
        (12, 33, (3, 3), (1, 2), [0, 1, 1, 1], (7, 12), 5, true),
        (10, 130, (3, 3), (1, 1), [1; 4], (6, 5), 4, false),
    ];
    for (case, &(c_in, c_out, (kh, kw), (sh, sw), pads, (h, w), tile, bias)) in
        cases.iter().enumerate()
    {
        let p = Conv2dParams::new(c_in, c_out, kh, kw)
            .with_stride(sh, sw)
            .with_pads(pads);
        let wts: Vec<f32> = (0..c_in * c_out * kh * kw)
            .map(|i| (((i + case) * 37 % 101) as f32 - 50.0) / 70.0)
            .collect();
        let bias: Option<Vec<f32>> =
            bias.then(|| (0..c_out).map(|i| (i % 11) as f32 * 0.05 - 0.2).collect());
        // Channels repeat with period 5 (plus a small per-channel offset on some), so
        // some buckets merge and others do not.
        let x: Vec<f32> = (0..c_in * h * w)
            .map(|i| {
                let (c, px) = (i / (h * w), i % (h * w));
                let base = ((px * 13 + (c % 5) * 29 + case) % 23) as f32 / 9.0 - 1.2;
                base + if c % 3 == 0 { 0.01 * c as f32 } else { 0.0 }
            })
            .collect();
        let mut x_hwc = vec![0.0; x.len()];
        nchw_to_nhwc(&x, c_in, h * w, &mut x_hwc);
        let (oh, ow) = p.out_hw(h, w);
        let n = c_out * oh * ow;
        for magnitude_bins in [None, Some(0.25)] {
            for centering in [true, false] {
                for singletons in [false, true] {
                    let cfg = HasteConfig {
                        hyperplanes: 6,
                        tile,
                        magnitude_bins,
                        centering,
                        ..HasteConfig::default()
                    };
                    let mut conv = HasteConv::new(p, &wts, bias.as_deref(), &cfg, case).unwrap();
                    conv.set_force_singletons(singletons);
                    let what = format!("{p:?} {h}x{w} {cfg:?} singletons={singletons}");
                    let mut want = vec![f32::NAN; n];
                    let mut want_stats = LayerStats::default();
                    let mut fresh = HasteScratch::default();
                    conv.forward(&x, h, w, &mut want, &mut fresh, &mut want_stats);
                    assert_eq!(want_stats.images, 1, "{what}");
                    // Merged buckets where allowed, so the merge paths run.
                    let kept = want_stats.mean_buckets();
                    if singletons {
                        assert_eq!(kept, c_in as f64, "{what}");
                    } else {
                        assert!(kept < c_in as f64, "{what}: nothing merged");
                    }
                    for io in layouts {
                        let xin = if io.input_nhwc { &x_hwc } else { &x };
                        let mut out = vec![f32::NAN; n];
                        let mut stats = LayerStats::default();
                        conv.forward_layout(xin, h, w, &mut out, &mut s, &mut stats, io);
                        let mut got = out.clone();
                        if io.output_nhwc {
                            nhwc_to_nchw(&out, c_out, oh * ow, &mut got);
                        }
                        assert_eq!(bits(&got), bits(&want), "{what} {io:?}");
                        assert_eq!(stats, want_stats, "{what} {io:?}");
                    }
                    if singletons {
                        let op = ConvOp {
                            input_scale: false,
                            params: p,
                            weights: wts.clone(),
                            bias: bias.clone(),
                            activation: Activation::None,
                            residual: None,
                        };
                        let d = DirectConv::new(&op).unwrap();
                        let mut dense = vec![f32::NAN; n];
                        d.forward(&x, (h, w), &mut dense, &mut ds, IoLayout::NCHW, None);
                        assert_eq!(bits(&dense), bits(&want), "{what}: direct kernel");
                    }
                }
            }
        }
    }
}

/// Edge patches hash only their own pixels inside the image (`WindowTerms::within`), with
/// the codes the whole hyperplane frame gives (zeros on the padding and past the window):
/// every patch's buckets, on sizes no tile divides, equal those of the window hashed in
/// full by `hash_window`, as the layer's bucket-size histogram shows, with magnitude bins on
/// and off, at 24 channels (where some edges take terms of their own and others keep the
/// frame's, `WindowTerms::pays_off_over`) and 64 (where every edge does).
#[test]
fn edge_patches_bucket_as_the_whole_frame() {
    use crate::haste::buckets::Buckets;
    use crate::haste::hash::hash_window;
    for (magnitude, c_in) in [(false, 24), (true, 24), (false, 64), (true, 64)] {
        let (h, w, tile) = (11, 13, 4);
        let (mut conv, x, _, _) = merging_layer((c_in, 8, h, w), tile);
        conv.cfg.magnitude_bins = magnitude.then_some(0.5);
        let mut stats = LayerStats::default();
        let mut out = vec![0.0; h * w * 8];
        let io = IoLayout::NHWC;
        conv.forward_layout(
            &x,
            h,
            w,
            &mut out,
            &mut HasteScratch::default(),
            &mut stats,
            io,
        );
        let (mut hs, mut buckets) = (HashScratch::default(), Buckets::default());
        let mut hist = vec![0u64; c_in + 1];
        let p = conv.params;
        for oy0 in (0..h).step_by(tile) {
            for ox0 in (0..w).step_by(tile) {
                let (ph, pw) = (tile.min(h - oy0), tile.min(w - ox0));
                let win = Window::of_patch(&p, (h, w), (oy0, ph), (ox0, pw));
                let (hp, cen, mag) = (
                    &conv.hyperplanes,
                    conv.cfg.centering,
                    conv.cfg.magnitude_bins,
                );
                hash_window(Isa::current(), &x, w, c_in, &win, hp, cen, mag, &mut hs);
                buckets.group(&hs.keys[..c_in]);
                for b in 0..buckets.count() {
                    hist[buckets.size(b)] += 1;
                }
            }
        }
        assert_eq!(
            stats.bucket_size_hist[..=c_in],
            hist[..],
            "magnitude bins {magnitude}, {c_in} channels"
        );
        assert!(hist[2..].iter().any(|&n| n > 0), "nothing merged");
    }
}

/// Channels zero over a patch's window join no bucket: with six channels zero everywhere
/// and a seventh zero in the top rows only, the layer counts them per patch and, with the
/// live channels at levels an octave apart (magnitude bins keep them apart), still gives
/// the dense convolution.
#[test]
fn zero_channels_join_no_bucket_and_stay_exact() {
    let (c_in, c_out, h, w) = (16, 8, 12, 12);
    let p = Conv2dParams::new(c_in, c_out, 3, 3).with_pads([1; 4]);
    let wts: Vec<f32> = (0..c_out * c_in * 9)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
        .collect();
    let x: Vec<f32> = (0..c_in * h * w)
        .map(|i| {
            let (c, y) = (i / (h * w), i % (h * w) / w);
            let live = c >= 7 || (c == 6 && y >= 6);
            // Each live channel at its own level: with magnitude bins, no two ever merge.
            let v = ((i * 7919 + c * 104729) % 1009) as f32 / 1009.0 + 0.5;
            if live {
                v * (1u32 << c) as f32
            } else {
                0.0
            }
        })
        .collect();
    let want = crate::kernels::reference::conv2d_direct(&p, &x, h, w, &wts, None);
    for drop in [true, false] {
        let cfg = HasteConfig {
            hyperplanes: 64,
            tile: 4,
            drop_zero_channels: drop,
            magnitude_bins: Some(0.5),
            ..HasteConfig::default()
        };
        let conv = HasteConv::new(p, &wts, None, &cfg, 3).unwrap();
        let mut out = vec![0.0; c_out * h * w];
        let mut stats = LayerStats::default();
        conv.forward(&x, h, w, &mut out, &mut HasteScratch::default(), &mut stats);
        // Inputs up to 2^15: on SSE2 each product is rounded too, by up to 2^-9 here.
        let tolerance = if Isa::current().fused() { 1e-4 } else { 1e-3 };
        for (i, (&a, &b)) in out.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * (1.0 + b.abs()),
                "drop {drop}, output {i}: {a} vs {b}"
            );
        }
        // 9 patches: 6 channels zero in each, the seventh in the 3 whose window ends above
        // row 6 (their windows reach row 4 at most).
        let want_zero = if drop { 9 * 6 + 3 } else { 0 };
        assert_eq!(stats.zero_channels, want_zero, "drop {drop}");
    }
}

#[test]
fn skipped_channels_belong_to_no_bucket() {
    use crate::haste::buckets::{Buckets, NO_BUCKET};
    let mut b = Buckets::default();
    b.group_skipping(
        &[7, 3, 7, 9, 3, 7],
        &[true, false, false, false, true, false],
    );
    assert_eq!(b.count(), 3);
    assert_eq!(b.members(0), &[1]);
    assert_eq!(b.members(1), &[2, 5]);
    assert_eq!(b.members(2), &[3]);
    assert_eq!(b.bucket_of(), &[NO_BUCKET, 0, 1, 2, NO_BUCKET, 1]);
    assert_eq!((b.skipped(), b.order().len()), (2, 4));
    assert!(!b.all_singletons());
}

/// A thread's scratch counts what HASTE's buffers hold once a forward pass has grown them:
/// at least the image's pixel-major copy and the patches' windows.
#[test]
fn the_scratch_counts_haste_buffers() {
    use crate::kernels::{Scratch, ScratchBytes};
    let (c, side) = (32, 12);
    let p = Conv2dParams::new(c, 64, 3, 3).with_pads([1; 4]);
    let wts: Vec<f32> = (0..c * 64 * 9).map(|i| (i % 7) as f32 - 3.0).collect();
    let x: Vec<f32> = (0..c * side * side).map(|i| (i % 5) as f32).collect();
    let cfg = HasteConfig {
        hyperplanes: 6,
        tile: 4,
        ..HasteConfig::default()
    };
    let conv = HasteConv::new(p, &wts, None, &cfg, 0).unwrap();
    let mut scratch = Scratch::default();
    assert_eq!(scratch.scratch_bytes(), 0);
    let mut out = vec![0.0; 64 * side * side];
    let s = scratch.get::<HasteScratch>();
    conv.forward(&x, side, side, &mut out, s, &mut LayerStats::default());
    let image = (c * side * side * 4) as u64;
    let window = (c * 6 * 6 * 4) as u64;
    assert!(scratch.scratch_bytes() >= image + window);
}
