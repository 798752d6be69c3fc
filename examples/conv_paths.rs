//! The two dense conv paths (im2col + GEMM, and the direct kernel) on the conv shapes of the
//! shared models, one thread: `cargo run --release --example conv_paths`.
use haste::kernels::direct::{DirectConv, DirectScratch};
use haste::kernels::im2col::conv2d_image;
use haste::ops::{Activation, Conv2dParams, ConvOp};
use std::time::Instant;

fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let mut best = f64::MAX;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 0.3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    // (c_in, c_out, k, stride, input side)
    let shapes = [
        (3, 16, 3, 1, 32),
        (16, 16, 3, 1, 32),
        (16, 32, 3, 2, 32),
        (32, 32, 3, 1, 16),
        (32, 64, 3, 2, 16),
        (64, 64, 3, 1, 8),
        (3, 16, 3, 1, 224),
        (16, 32, 3, 1, 112),
        (16, 128, 3, 1, 56),
        (32, 256, 3, 1, 28),
        (64, 512, 3, 1, 14),
        (3, 64, 7, 2, 224),
        (64, 64, 3, 1, 56),
        (64, 128, 3, 2, 56),
        (128, 128, 3, 1, 28),
        (256, 256, 3, 1, 14),
        (512, 512, 3, 1, 7),
    ];
    for (ci, co, k, s, hw) in shapes {
        let p = Conv2dParams::new(ci, co, k, k)
            .with_pads([k / 2; 4])
            .with_stride(s, s);
        let weights: Vec<f32> = (0..ci * co * k * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
            .collect();
        let op = ConvOp {
            input_scale: false,
            params: p,
            weights,
            bias: Some(vec![0.1; co]),
            activation: Activation::Relu,
            residual: None,
        };
        let x: Vec<f32> = (0..ci * hw * hw)
            .map(|i| ((i * 13 % 97) as f32 - 40.0) / 30.0)
            .collect();
        let (oh, ow) = p.out_hw(hw, hw);
        let mut a = vec![0.0; co * oh * ow];
        let mut b = a.clone();
        let mut col = Vec::new();
        let t_gemm = time(|| conv2d_image(&op, &x, hw, hw, &mut a, &mut col));
        let d = DirectConv::new(&op).expect("one group, no dilation");
        let mut scratch = DirectScratch::default();
        let t_direct = time(|| {
            d.forward(
                &x,
                (hw, hw),
                &mut b,
                &mut scratch,
                haste::kernels::layout::IoLayout::NCHW,
                None,
            )
        });
        let err = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let gf = |t: f64| 2.0 * p.dense_macs(hw, hw) as f64 / t / 1e9;
        println!(
            "{ci:4}->{co:4} k{k} s{s} @{hw:3}: im2col+gemm {:8.1} us ({:4.0} GF/s)  direct {:8.1} us ({:4.0} GF/s)  {:.2}x  maxdiff {err:.1e}",
            t_gemm * 1e6,
            gf(t_gemm),
            t_direct * 1e6,
            gf(t_direct),
            t_gemm / t_direct
        );
    }
}
