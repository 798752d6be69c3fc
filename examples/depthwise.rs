//! Time the depthwise kernel on the shapes of MobileNet/EfficientNet, one thread, pixel-major
//! in and out, with and without SiLU: `cargo run --release --example depthwise` (`COLD=1`:
//! the caches flushed between runs by writing `FLUSH_MB` megabytes, 16 by default, 64 past a
//! 32 MB L3; `WARM_INPUT=1` then reads the input again, so only the output is cold, as a
//! layer's output slot in a network often is; `PAR2=1`: the rows in two halves on two
//! threads).
use haste::kernels::depthwise::DepthwiseConv;
use haste::kernels::isa::Isa;
use haste::ops::{Activation, Conv2dParams, ConvOp};
use std::time::Instant;

fn main() {
    for (c, k, s, side) in [
        (32, 3, 1, 112),
        (32, 3, 1, 24),
        (96, 3, 2, 24),
        (96, 3, 2, 112),
        (144, 3, 1, 56),
        (144, 5, 2, 56),
        (240, 5, 1, 28),
        (672, 5, 1, 14),
        (1152, 3, 1, 7),
        // The small images of EfficientNet-Lite1's and MobileNetV2's last stages, where
        // onnxruntime's channel-blocked kernel is 20-30 % faster (BENCHMARKS.md, ninth
        // session).
        (1152, 5, 1, 8),
        (480, 5, 1, 15),
        (480, 3, 1, 15),
        (384, 3, 1, 14),
        (576, 3, 1, 14),
        (240, 3, 2, 30),
        // MobileNetV3's channel counts 8 past a multiple of 16, next to their neighbours.
        (64, 3, 1, 56),
        (72, 3, 1, 56),
        (80, 3, 1, 56),
        (72, 5, 2, 56),
        (120, 5, 1, 28),
        (128, 5, 1, 28),
    ] {
        // `DEPTHWISE_ONLY=96,3,2,112` times one shape (for a profiler).
        if let Ok(only) = std::env::var("DEPTHWISE_ONLY") {
            if only != format!("{c},{k},{s},{side}") {
                continue;
            }
        }
        for activation in [
            Activation::None,
            Activation::Silu,
            Activation::Clip(0.0, 6.0),
        ] {
            let pad = k / 2;
            let params = Conv2dParams::new(c, c, k, k)
                .with_stride(s, s)
                .with_pads([pad; 4])
                .with_groups(c);
            let op = ConvOp {
                input_scale: false,
                params,
                weights: (0..c * k * k).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect(),
                bias: Some(vec![0.1; c]),
                activation,
                residual: None,
            };
            let Some(dw) = DepthwiseConv::new(&op) else {
                continue;
            };
            let (oh, ow) = params.out_hw(side, side);
            let x: Vec<f32> = (0..c * side * side)
                .map(|i| (i % 13) as f32 * 0.05)
                .collect();
            let mut out = vec![0.0; c * oh * ow];
            let mut best = f64::MAX;
            // `COLD=1`: `FLUSH_MB` (16) MB written between runs, so the image and weights
            // come from further out, as in a network whose other layers evicted them.
            let flush_mb = std::env::var("FLUSH_MB")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(16);
            let mut flush = if std::env::var("COLD").is_ok() {
                vec![0.0f32; flush_mb << 18]
            } else {
                Vec::new()
            };
            let start = Instant::now();
            let seconds = if std::env::var("DEPTHWISE_ONLY").is_ok() {
                3.0
            } else {
                0.3
            };
            while start.elapsed().as_secs_f64() < seconds {
                flush.iter_mut().for_each(|v| *v += 1.0);
                if std::env::var("WARM_INPUT").is_ok() {
                    std::hint::black_box(x.iter().sum::<f32>());
                }
                let t = Instant::now();
                if std::env::var("PAR2").is_ok() {
                    // Two halves of the rows on two threads, as a batch-1 layer runs.
                    let half = oh.div_ceil(2);
                    let (top, bottom) = out.split_at_mut(half * ow * c);
                    rayon::join(
                        || dw.rows(Isa::current(), &x, (side, side), 0..half, top, None),
                        || dw.rows(Isa::current(), &x, (side, side), half..oh, bottom, None),
                    );
                } else {
                    dw.rows(Isa::current(), &x, (side, side), 0..oh, &mut out, None);
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            let flops = 2.0 * (c * k * k * oh * ow) as f64;
            println!(
                "c {c:4} k {k} s {s} {side:3}x{side:<3} {:>8}: {:7.1} us {:6.1} GFLOP/s",
                format!("{activation:?}"),
                best * 1e6,
                flops / best / 1e9
            );
        }
    }
}
