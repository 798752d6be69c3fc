//! Time the grouped convolution kernel on RegNet/ResNeXt shapes, one thread, on the padded
//! pixel-major image (the kernel alone, as one worker runs it), on every tier the CPU has:
//! `cargo run --release --example grouped`.
use haste::kernels::grouped::{GroupedConv, GroupedScratch};
use haste::kernels::isa::Isa;
use haste::ops::{Activation, Conv2dParams, ConvOp};
use std::time::Instant;

fn main() {
    // (channels, group width, stride, input side): RegNetX-400MF's four stages, ResNeXt-50's
    // first and last.
    for (c, width, s, side) in [
        (32, 16, 2, 112),
        (64, 16, 1, 28),
        (160, 16, 1, 14),
        (400, 16, 1, 7),
        (64, 16, 2, 56),
        (160, 16, 2, 28),
        (400, 16, 2, 14),
        (128, 4, 1, 56),
        (128, 8, 1, 56),
        (128, 16, 1, 56),
        (256, 8, 1, 28),
        (256, 16, 1, 28),
        (1024, 32, 1, 7),
        (168, 24, 1, 14),
        (432, 48, 1, 14),
        (512, 64, 1, 14),
    ] {
        let params = Conv2dParams::new(c, c, 3, 3)
            .with_stride(s, s)
            .with_pads([1; 4])
            .with_groups(c / width);
        let op = ConvOp {
            input_scale: false,
            params,
            weights: (0..c * width * 9)
                .map(|i| (i % 7) as f32 * 0.1 - 0.3)
                .collect(),
            bias: Some(vec![0.1; c]),
            activation: Activation::Relu,
            residual: None,
        };
        let Some(g) = GroupedConv::new(&op) else {
            println!("{c} channels, groups of {width}: not a grouped kernel shape");
            continue;
        };
        let (oh, ow) = params.out_hw(side, side);
        let (hp, wp) = (side + 2, side + 2);
        let padded: Vec<f32> = (0..hp * wp * c).map(|i| (i % 13) as f32 * 0.05).collect();
        let mut out = vec![0.0; c * oh * ow];
        let macs = (oh * ow * c * width * 9) as f64;
        let mut line = format!("{c:>5} ch, groups of {width:>2}, stride {s}, {side:>3}^2:");
        for isa in Isa::available() {
            let mut best = f64::MAX;
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < 0.3 {
                let t = Instant::now();
                g.rows(isa, &padded, (hp, wp), 0..oh, &mut out, None);
                best = best.min(t.elapsed().as_secs_f64());
            }
            line += &format!("  {isa} {:6.1} GFLOP/s", 2.0 * macs / best / 1e9);
        }
        // As a network runs it: from the unpadded pixel-major image, padded a band at a time.
        let image: Vec<f32> = (0..side * side * c)
            .map(|i| (i % 13) as f32 * 0.05)
            .collect();
        let mut s = GroupedScratch::default();
        let isa = Isa::current();
        let mut best = f64::MAX;
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < 0.3 {
            let t = Instant::now();
            g.padded_pixels(
                isa,
                &image,
                (side, side),
                true,
                0..oh * ow,
                &mut out,
                None,
                &mut s,
            );
            best = best.min(t.elapsed().as_secs_f64());
        }
        line += &format!(
            "  padded by bands ({isa}) {:6.1} GFLOP/s",
            2.0 * macs / best / 1e9
        );
        println!("{line}");
    }
}
