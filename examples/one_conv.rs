//! Time the direct kernel on one conv shape, for profiling:
//! `cargo run --release --example one_conv -- C_IN C_OUT K STRIDE SIDE [nchw]` (`nchw`: a planar
//! input, as the network's image; `par2`: split over two threads; `cold`: each run on
//! another of 16 inputs and outputs, as a layer in a network reads its input from L3 or
//! memory; `relu6`: a bias and ReLU6 in the epilogue; `res`: a residual added in the
//! epilogue, cycled with the outputs under `cold`).
use haste::kernels::direct::{DirectConv, DirectScratch};
use haste::kernels::layout::IoLayout;
use haste::ops::{Activation, Conv2dParams, ConvOp};
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let [ci, co, k, s, hw] = [a[0], a[1], a[2], a[3], a[4]];
    let relu6 = std::env::args().any(|a| a == "relu6");
    let p = Conv2dParams::new(ci, co, k, k)
        .with_pads([k / 2; 4])
        .with_stride(s, s);
    let op = ConvOp {
        input_scale: false,
        params: p,
        weights: vec![0.01; ci * co * k * k],
        // `relu6`: a bias and ReLU6 after the sums (MobileNet's expansions), in the kernel's
        // epilogue.
        bias: relu6.then(|| vec![0.1; co]),
        activation: if relu6 {
            Activation::Clip(0.0, 6.0)
        } else {
            Activation::None
        },
        residual: None,
    };
    let d = DirectConv::new(&op).expect("one group, no dilation");
    // `COPIES` sets how many under `cold` (4 of a large layer's stay in L3).
    let copies = if std::env::args().any(|a| a == "cold") {
        std::env::var("COPIES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(16)
    } else {
        1
    };
    let xs = vec![vec![0.5f32; ci * hw * hw]; copies];
    let (oh, ow) = p.out_hw(hw, hw);
    let mut outs = vec![vec![0.0; co * oh * ow]; copies];
    let residuals = std::env::args()
        .any(|a| a == "res")
        .then(|| vec![vec![0.25f32; co * oh * ow]; copies]);
    let mut scratch = DirectScratch::default();
    let io = IoLayout {
        input_nhwc: !std::env::args().any(|a| a == "nchw"),
        output_nhwc: true,
    };
    let t = Instant::now();
    let mut runs = 0;
    // `par2`: the output rows split between two threads, as a batch-1 layer runs.
    let parts = if std::env::args().any(|a| a == "par2") {
        2
    } else {
        1
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(parts)
        .build()
        .expect("a thread pool");
    pool.install(|| {
        while t.elapsed().as_secs_f64()
            < std::env::var("SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(3.0)
        {
            let (x, out) = (&xs[runs % copies], &mut outs[runs % copies]);
            let r = residuals.as_ref().map(|r| &r[runs % copies][..]);
            if parts > 1 {
                d.forward_parallel(x, (hw, hw), out, &mut scratch, io, parts, r);
            } else {
                d.forward(x, (hw, hw), out, &mut scratch, io, r);
            }
            runs += 1;
        }
    });
    let per = t.elapsed().as_secs_f64() / runs as f64;
    println!(
        "{:.1} us, {:.0} GFLOP/s",
        per * 1e6,
        2.0 * p.dense_macs(hw, hw) as f64 / per / 1e9
    );
}
