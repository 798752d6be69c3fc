//! Quick timing of HasteConv::forward against a plain im2col + sgemm dense conv (one thread).
//! `cargo run --release --example haste_timing -- 2,4,8` (tiles to try).

use haste::haste::{HasteConfig, HasteConv, HasteScratch, LayerStats};
use haste::kernels::gemm::sgemm;
use haste::ops::Conv2dParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn im2col_conv(
    p: &Conv2dParams,
    x: &[f32],
    h: usize,
    w: usize,
    wts: &[f32],
    cols: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (oh, ow) = p.out_hw(h, w);
    let k = p.c_in * p.kh * p.kw;
    cols.resize(k * oh * ow, 0.0);
    for c in 0..p.c_in {
        for ky in 0..p.kh {
            for kx in 0..p.kw {
                let row = &mut cols[((c * p.kh + ky) * p.kw + kx) * oh * ow..][..oh * ow];
                for oy in 0..oh {
                    let iy = (oy * p.stride.0 + ky) as isize - p.pads[0] as isize;
                    for ox in 0..ow {
                        let ix = (ox * p.stride.1 + kx) as isize - p.pads[1] as isize;
                        row[oy * ow + ox] =
                            if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                                x[(c * h + iy as usize) * w + ix as usize]
                            } else {
                                0.0
                            };
                    }
                }
            }
        }
    }
    sgemm(
        p.c_out,
        oh * ow,
        k,
        wts,
        k,
        cols,
        oh * ow,
        out,
        oh * ow,
        false,
    );
}

fn time<F: FnMut()>(mut f: F, min_secs: f64) -> f64 {
    f();
    let mut best = f64::MAX;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < min_secs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tiles: Vec<usize> = if args.len() > 1 {
        args[1].split(',').map(|s| s.parse().unwrap()).collect()
    } else {
        vec![2, 4, 8]
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(c, hw) in &[(64usize, 8usize), (64, 32), (128, 56)] {
        let p = Conv2dParams::new(c, c, 3, 3).with_pads([1; 4]);
        let wts: Vec<f32> = (0..c * c * 9)
            .map(|_| rng.random_range(-0.1f32..0.1))
            .collect();
        // smooth-ish post-ReLU input: random per-channel low-frequency field
        let x: Vec<f32> = (0..c * hw * hw)
            .map(|i| {
                let (ch, y, xx) = (i / (hw * hw), (i / hw) % hw, i % hw);
                ((ch as f32 * 0.37 + y as f32 * 0.21).sin()
                    + (xx as f32 * 0.13 + ch as f32).cos()
                    + rng.random_range(-0.3f32..0.3))
                .max(0.0)
            })
            .collect();
        let (oh, ow) = p.out_hw(hw, hw);
        let mut out = vec![0.0; c * oh * ow];
        let mut cols = Vec::new();
        let secs = if hw > 32 { 2.0 } else { 1.0 };
        let dense = time(
            || im2col_conv(&p, &x, hw, hw, &wts, &mut cols, &mut out),
            secs,
        );
        let k = c * 9;
        let gemm_only = time(
            || {
                sgemm(
                    c,
                    oh * ow,
                    k,
                    &wts,
                    k,
                    &cols,
                    oh * ow,
                    &mut out,
                    oh * ow,
                    false,
                )
            },
            secs,
        );
        println!(
            "c={c} {hw}x{hw}: dense sgemm alone (im2col precomputed) {:.1} us ({:.0} GFLOP/s)",
            gemm_only * 1e6,
            2.0 * p.dense_macs(hw, hw) as f64 / gemm_only / 1e9
        );
        println!(
            "c={c} {hw}x{hw}: dense im2col+sgemm {:.1} us ({:.0} GFLOP/s)",
            dense * 1e6,
            2.0 * p.dense_macs(hw, hw) as f64 / dense / 1e9
        );
        for &tile in &tiles {
            for (name, force) in [("L=14", false), ("singletons", true)] {
                let cfg = HasteConfig {
                    tile,
                    ..HasteConfig::default()
                };
                let mut conv = HasteConv::new(p, &wts, None, &cfg, 0).unwrap();
                conv.set_force_singletons(force);
                let mut scratch = HasteScratch::default();
                let mut stats = LayerStats::default();
                let t = time(
                    || conv.forward(&x, hw, hw, &mut out, &mut scratch, &mut stats),
                    secs,
                );
                let mut st = LayerStats::default();
                conv.forward(&x, hw, hw, &mut out, &mut scratch, &mut st);
                println!(
                    "  tile {tile} {name:10}: {:.1} us  ({:.2}x dense)  buckets {:.1}/{c}  flops total/dense {:.2} (conv {:.2})",
                    t * 1e6,
                    dense / t,
                    st.mean_buckets(),
                    st.flops.total() as f64 / p.dense_macs(hw, hw) as f64,
                    st.flops.conv as f64 / p.dense_macs(hw, hw) as f64
                );
            }
        }
    }
}
