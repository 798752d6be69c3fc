//! Where a HASTE conv's time goes, step by step, against the engine's dense conv (1 thread).
//! `cargo run --release --example haste_steps`
use haste::haste::buckets::Buckets;
use haste::haste::conv::Window;
use haste::haste::hash::{hash_window, HashScratch};
use haste::haste::hyperplanes::Hyperplanes;
use haste::haste::merge::merge_input_in_place;
use haste::haste::{HasteConfig, HasteConv, HasteScratch, LayerStats};
use haste::kernels::conv::conv2d_image;
use haste::kernels::direct::{
    conv_avx512 as patch_gemm_avx512, Epilogue, Filters, Geom as PatchGeom,
};
use haste::kernels::isa::Isa;
use haste::ops::{Activation, Conv2dParams, ConvOp};
use std::time::Instant;

fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let mut best = f64::MAX;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 0.5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best * 1e6
}

fn main() {
    for &(c, hw) in &[(16usize, 32usize), (32, 16), (64, 8)] {
        let p = Conv2dParams::new(c, c, 3, 3).with_pads([1; 4]);
        let wts: Vec<f32> = (0..c * c * 9)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
            .collect();
        let x: Vec<f32> = (0..c * hw * hw)
            .map(|i| {
                let (ch, y, xx) = (i / (hw * hw), (i / hw) % hw, i % hw);
                ((ch as f32 * 0.37 + y as f32 * 0.21).sin() + (xx as f32 * 0.13 + ch as f32).cos())
                    .max(0.0)
            })
            .collect();
        let op = ConvOp {
            params: p,
            weights: wts.clone(),
            bias: None,
            activation: Activation::None,
            residual: None,
        };
        let mut out = vec![0.0; c * hw * hw];
        let mut col = Vec::new();
        let dense = time(|| conv2d_image(&op, &x, hw, hw, &mut out, &mut col));
        let cfg = HasteConfig {
            hyperplanes: 14,
            tile: 4,
            magnitude_bins: None,
            ..HasteConfig::default()
        };
        let conv = HasteConv::new(p, &wts, None, &cfg, 3).unwrap();
        let mut s = HasteScratch::default();
        let mut st = LayerStats::default();
        let full = time(|| conv.forward(&x, hw, hw, &mut out, &mut s, &mut st));
        // steps
        let mut hwc = vec![0.0; c * hw * hw];
        for ch in 0..c {
            for px in 0..hw * hw {
                hwc[px * c + ch] = x[ch * hw * hw + px];
            }
        }
        let hp = Hyperplanes::generate(cfg.kind, 14, cfg.sparsity, 6, 6, 7);
        let mut hs = HashScratch::default();
        hs.reserve(c, 36);
        let wins: Vec<(Window, usize, usize)> = (0..hw)
            .step_by(4)
            .flat_map(|oy| (0..hw).step_by(4).map(move |ox| (oy, ox)))
            .map(|(oy, ox)| (Window::of_patch(&p, (hw, hw), (oy, 4), (ox, 4)), oy, ox))
            .collect();
        let hash = time(|| {
            for (w, _, _) in &wins {
                hash_window(Isa::current(), &hwc, hw, c, w, &hp, true, None, &mut hs);
            }
        });
        let mut b = Buckets::default();
        let group = time(|| {
            for (w, _, _) in &wins {
                hash_window(Isa::current(), &hwc, hw, c, w, &hp, true, None, &mut hs);
                b.group(&hs.keys[..c]);
            }
        }) - hash;
        b.make_singletons(c);
        let mut mwin = vec![0.0; 36 * c];
        let merge = time(|| {
            for (w, _, _) in &wins {
                merge_input_in_place(&hwc, hw, c, w, &b, &[], &mut mwin);
            }
        });
        let wt: Vec<f32> = vec![0.01; 9 * c * c];
        let first: Vec<u32> = (0..c as u32).collect();
        let rows: Vec<usize> = (0..9)
            .flat_map(|kk| first.iter().map(move |&f| (kk * c + f as usize) * c))
            .map(|at| wt.as_ptr() as usize + at * 4)
            .collect();
        let mut ohwc = vec![0.0; hw * hw * c];
        let kern = time(|| {
            for (_, oy, ox) in &wins {
                let g = PatchGeom {
                    win_w: 6,
                    c_in: c,
                    c_out: c,
                    kh: 3,
                    kw: 3,
                    sh: 1,
                    sw: 1,
                    ph: 4,
                    pw: 4,
                    out_w: hw,
                    out_stride: c,
                };
                unsafe {
                    patch_gemm_avx512(
                        &g,
                        &mwin,
                        Filters::Rows {
                            first: &first,
                            rows: &rows,
                            base: 0,
                        },
                        Epilogue::NONE,
                        &mut ohwc[(oy * hw + ox) * c..],
                    )
                };
            }
        });
        let gf = |us: f64| 2.0 * (c * c * 9 * hw * hw) as f64 / us / 1e3;
        println!("c={c:3} {hw:2}x{hw:2}: dense {dense:6.1} us ({:4.0} GF/s) | haste {full:6.1} us | hash {hash:5.1} group {group:5.1} merge-in {merge:5.1} kernel(all singleton) {kern:6.1} us ({:4.0} GF/s) | buckets {:.1}",
            gf(dense), gf(kern), st.mean_buckets());
    }
}
