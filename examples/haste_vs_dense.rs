//! One layer, one thread: the dense direct kernel against HASTE (forced singletons, so the
//! same multiply-adds plus HASTE's per-patch work), best of many runs each, alternating:
//! `cargo run --release --example haste_vs_dense -- C_IN C_OUT SIDE [TILE [THREADS]] [pairs]` (each
//! thread runs its own copy, as the plan runs one image per thread).
use haste::haste::{HasteConfig, HasteConv, HasteScratch, LayerStats};
use haste::kernels::direct::{DirectConv, DirectScratch};
use haste::kernels::layout::IoLayout;
use haste::ops::{Activation, Conv2dParams, ConvOp};
use std::time::Instant;

fn best<F: FnMut()>(f: &mut F, secs: f64) -> f64 {
    let mut best = f64::MAX;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best * 1e6
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let (ci, co, hw) = (a[0], a[1], a[2]);
    let tile = a.get(3).copied().unwrap_or(4);
    let p = Conv2dParams::new(ci, co, 3, 3).with_pads([1; 4]);
    let weights: Vec<f32> = (0..ci * co * 9)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
        .collect();
    // With `pairs`, channels 2k and 2k + 1 are equal, so natural buckets merge half of them;
    // otherwise every channel is its own bucket (forced).
    let pairs = std::env::args().any(|a| a == "pairs");
    let x: Vec<f32> = (0..ci * hw * hw)
        .map(|i| {
            let (c, px) = (i / (hw * hw), i % (hw * hw));
            let c = if pairs { c / 2 } else { c };
            (((c * hw * hw + px) * 13 % 97) as f32 - 40.0) / 30.0
        })
        .collect();
    let io = IoLayout::NHWC;
    let op = ConvOp {
        input_scale: false,
        params: p,
        weights: weights.clone(),
        bias: None,
        activation: Activation::None,
        residual: None,
    };
    let d = DirectConv::new(&op).expect("one group");
    let cfg = HasteConfig {
        tile,
        ..HasteConfig::default()
    };
    let mut h = HasteConv::new(p, &weights, None, &cfg, 1).expect("valid HASTE layer");
    h.set_force_singletons(!pairs);
    // Every thread runs its own image, as the plan does at batch >= threads.
    let threads = a.get(4).copied().unwrap_or(1);
    let (mut td, mut th) = (0.0, 0.0);
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = vec![0.0; co * hw * hw];
                    let (mut ds, mut hs, mut st) = (
                        DirectScratch::default(),
                        HasteScratch::default(),
                        LayerStats::default(),
                    );
                    let (mut td, mut th) = (f64::MAX, f64::MAX);
                    for _ in 0..4 {
                        td = td.min(best(
                            &mut || d.forward(&x, (hw, hw), &mut out, &mut ds, io, None),
                            0.5,
                        ));
                        th = th.min(best(
                            &mut || h.forward_layout(&x, hw, hw, &mut out, &mut hs, &mut st, io),
                            0.5,
                        ));
                    }
                    (td, th)
                })
            })
            .collect();
        for r in runs {
            let (d, h) = r.join().expect("timing thread");
            td += d / threads as f64;
            th += h / threads as f64;
        }
    });
    let gf = |us: f64| 2.0 * p.dense_macs(hw, hw) as f64 / us / 1e3;
    println!(
        "{ci}->{co} @{hw} tile {tile}: dense {td:.1} us ({:.0} GFLOP/s), HASTE {} {th:.1} us ({:.0}): {:.2}x",
        gf(td),
        if pairs { "on channel pairs" } else { "all singletons" },
        gf(th),
        td / th
    );
}
