//! The fully connected kernel alone: `cargo run --release --example linear -- M K N`
//! (default: AlexNet's first classifier layer at batch 8, 8 x 9216 -> 4096). Prints the time
//! per call and the rate, on one thread and split over the rayon pool (`RAYON_NUM_THREADS`).
use haste::kernels::isa::Isa;
use haste::kernels::linear::linear;
use haste::ops::LinearOp;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let (m, k, n) = match args[..] {
        [m, k, n, ..] => (m, k, n),
        _ => (8, 9216, 4096),
    };
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 64.0)
        .collect();
    let op = LinearOp::new(k, n, &w, Some(vec![0.5; n]), 1.0);
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
        .collect();
    let mut out = vec![0.0f32; m * n];
    let isa = Isa::current();
    for parallel in [false, true] {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            let reps = 5;
            for _ in 0..reps {
                linear(isa, &op, &x, &mut out, parallel);
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        let gflops = 2.0 * (m * k * n) as f64 / best / 1e9;
        let gbs = (k * n * 4) as f64 / best / 1e9;
        println!(
            "{m} x {k} -> {n}, {}: {:.3} ms, {gflops:.0} GFLOP/s, weights at {gbs:.1} GB/s",
            if parallel { "parallel" } else { "one thread" },
            best * 1e3
        );
    }
}
