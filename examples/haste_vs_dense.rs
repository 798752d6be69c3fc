//! One layer, one thread: the dense direct kernel against HASTE (forced singletons, so the
//! same multiply-adds plus HASTE's per-patch work), best of many runs each, alternating:
//! `cargo run --release --example haste_vs_dense -- C_IN C_OUT SIDE [TILE [THREADS]] [pairs]` (each
//! thread runs its own copy, as the plan runs one image per thread). `pairs`: HASTE hashes
//! an input whose channels come in equal pairs instead (about half of them merge: the line
//! gives the mean buckets a patch). `STEPS=1` also prints HASTE's time step by step.
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

/// SplitMix64's finalizer: consecutive inputs give unrelated outputs.
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
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
    // Pixel-major (`NHWC`, as the layers below read it), each value a hash of its channel
    // and pixel in [-1, 1), so that distinct channels hash apart.
    let x: Vec<f32> = (0..ci * hw * hw)
        .map(|i| {
            let (px, c) = (i / ci, i % ci);
            let c = if pairs { c / 2 } else { c };
            (mix((c * hw * hw + px) as u64) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
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
    let (mut td, mut th, mut buckets) = (0.0, 0.0, 0.0);
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
                    (td, th, st.mean_buckets())
                })
            })
            .collect();
        for r in runs {
            let (d, h, b) = r.join().expect("timing thread");
            td += d / threads as f64;
            th += h / threads as f64;
            buckets += b / threads as f64;
        }
    });
    if std::env::var_os("STEPS").is_some() {
        print_steps(&mut h, &x, hw, co, io);
    }
    let gf = |us: f64| 2.0 * p.dense_macs(hw, hw) as f64 / us / 1e3;
    println!(
        "{ci}->{co} @{hw} tile {tile}: dense {td:.1} us ({:.0} GFLOP/s), HASTE {} ({buckets:.1} buckets a patch) {th:.1} us ({:.0}): {:.2}x",
        gf(td),
        if pairs { "on channel pairs" } else { "all singletons" },
        gf(th),
        td / th
    );
}

/// `STEPS=1`: HASTE's steps over 20 profiled runs, each in clock ticks per input channel and
/// window pixel and as a share of their sum.
fn print_steps(h: &mut HasteConv, x: &[f32], hw: usize, co: usize, io: IoLayout) {
    h.set_profile_steps(true);
    let (mut out, mut hs) = (vec![0.0; co * hw * hw], HasteScratch::default());
    let mut st = LayerStats::default();
    for _ in 0..20 {
        h.forward_layout(x, hw, hw, &mut out, &mut hs, &mut st, io);
    }
    h.set_profile_steps(false);
    let steps = &st.steps;
    let total = steps.total();
    for (name, t) in steps.named() {
        println!(
            "  {name:<13} {:7.2} ({:4.1} %)",
            steps.per_channel_pixel(t),
            100.0 * t as f64 / total.max(1) as f64
        );
    }
    println!(
        "  {:<13} {:7.2}",
        "fixed",
        steps.per_channel_pixel(steps.fixed())
    );
}
