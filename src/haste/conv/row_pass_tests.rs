//! Filter panels run one kernel row at a time (`bands::takes_row_passes`) give the bits of
//! whole panels, on every tier: the partial sums wait in the outputs between rows, and each
//! output starts and finishes its sum at its own first and last row that reads the image.

use super::calls::{Finish, Part};
use super::{HasteConv, HasteScratch};
use crate::haste::{HasteConfig, LayerStats};
use crate::kernels::isa::Isa;
use crate::kernels::layout::IoLayout;
use crate::ops::{Activation, Conv2dParams};

/// A 3x3 layer of 24 input channels that repeat (so buckets merge), at `stride` and `tile`,
/// with a bias; its pixel-major input (`h x w`) and a residual for its output.
fn layer(c_out: usize, stride: usize, tile: usize) -> (HasteConv, Vec<f32>, Vec<f32>) {
    let (c_in, h, w) = (24, 13, 11);
    let p = Conv2dParams::new(c_in, c_out, 3, 3)
        .with_pads([1; 4])
        .with_stride(stride, stride);
    let wts: Vec<f32> = (0..c_in * c_out * 9)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
        .collect();
    let bias: Vec<f32> = (0..c_out).map(|i| i as f32 * 0.01).collect();
    let x: Vec<f32> = (0..h * w * c_in)
        .map(|i| (((i / c_in) * 13 + (i % c_in % 7) * 29) % 97) as f32 / 30.0 - 1.0)
        .collect();
    let cfg = HasteConfig {
        hyperplanes: 6,
        tile,
        ..HasteConfig::default()
    };
    let conv = HasteConv::new(p, &wts, Some(&bias), &cfg, 2).unwrap();
    let (oh, ow) = p.out_hw(h, w);
    let residual = (0..oh * ow * c_out)
        .map(|i| (i % 23) as f32 * 0.1 - 1.0)
        .collect();
    (conv, x, residual)
}

#[test]
fn kernel_row_passes_give_the_bits_of_whole_panels() {
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    // Two panels, patches with padding rows above and below; whole-image rows of patches;
    // stride 2; one narrow panel.
    for (c_out, stride, tile) in [(128, 1, 4), (128, 1, 8), (64, 2, 4), (10, 1, 5)] {
        let (mut conv, x, residual) = layer(c_out, stride, tile);
        let (oh, ow) = conv.params().out_hw(13, 11);
        for finish in [
            None,
            Some(Finish {
                residual: Some(&residual[..]),
                activation: Activation::Relu,
            }),
        ] {
            let run = |conv: &HasteConv, isa: Isa| {
                let mut out = vec![f32::NAN; oh * ow * c_out];
                let (mut s, mut stats) = (HasteScratch::default(), LayerStats::default());
                let part = Part {
                    finish,
                    ..Part::whole(conv)
                };
                let io = IoLayout::NHWC;
                let (x, o) = (&x[..], &mut out[..]);
                conv.forward_on(isa, x, (13, 11), None, o, &mut s, &mut stats, io, part);
                (bits(&out), stats)
            };
            // Each tier against itself: SSE2 rounds each product (see `Unfused`).
            for isa in Isa::available() {
                conv.set_row_passes(false);
                let whole = run(&conv, isa);
                assert!(whole.1.mean_buckets() < 24.0, "nothing merged");
                conv.set_row_passes(true);
                let rows = run(&conv, isa);
                let what = format!("{c_out} channels, stride {stride}, tile {tile}, {isa}");
                assert_eq!(rows.1, whole.1, "{what}");
                assert!(rows.0 == whole.0, "{what}: other bits");
            }
        }
    }
}

/// A part of the panels (a worker's share of an image at batch 1) in row passes gives the
/// whole image's bits for those channels.
#[test]
fn a_part_of_the_panels_in_row_passes_is_the_whole_images() {
    let (mut conv, x, _) = layer(192, 1, 4);
    let (oh, ow) = conv.params().out_hw(13, 11);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    conv.set_row_passes(false);
    let (mut s, mut stats) = (HasteScratch::default(), LayerStats::default());
    let mut whole = vec![f32::NAN; oh * ow * 192];
    conv.forward_panels(&x, (13, 11), 0..3, &mut whole, &mut s, &mut stats, true);
    conv.set_row_passes(true);
    let mut part = vec![f32::NAN; oh * ow * 128];
    conv.forward_panels(&x, (13, 11), 1..3, &mut part, &mut s, &mut stats, false);
    let want: Vec<f32> = whole
        .chunks_exact(192)
        .flat_map(|px| px[64..].iter().copied())
        .collect();
    assert_eq!(bits(&part), bits(&want));
}

/// Two images in one call (their patches sharing bands) in row passes give the bits of
/// whole panels.
#[test]
fn images_sharing_bands_in_row_passes_are_whole_panels() {
    let (mut conv, x, residual) = layer(128, 1, 8);
    let (oh, ow) = conv.params().out_hw(13, 11);
    let x2: Vec<f32> = x.iter().chain(x.iter().rev()).copied().collect();
    let r2: Vec<f32> = residual.iter().chain(&residual).copied().collect();
    let finish = Finish {
        residual: Some(&r2[..]),
        activation: Activation::Relu,
    };
    let mut run = |rows: bool| {
        conv.set_row_passes(rows);
        let (mut s, mut stats) = (HasteScratch::default(), LayerStats::default());
        let mut out = vec![f32::NAN; 2 * oh * ow * 128];
        conv.forward_images_finished(&x2, (13, 11), 2, &mut out, &mut s, &mut stats, finish);
        (out.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), stats)
    };
    let (whole, rows) = (run(false), run(true));
    assert!(whole.0 == rows.0, "other bits");
    assert_eq!(whole.1, rows.1);
}
