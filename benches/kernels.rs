//! Micro-benchmarks of the dense convolution paths (im2col + GEMM, the direct kernel), of max
//! pooling and of the HASTE steps:
//! `cargo bench --bench kernels`.

use divan::{black_box, Bencher};
use haste::haste::buckets::Buckets;
use haste::haste::hash::{hash_copied_window, hash_window, HashScratch, WindowTerms};
use haste::haste::hyperplanes::Hyperplanes;
use haste::haste::merge::{merge_filter_rows, merge_filters, merge_input, merge_input_in_place};
use haste::haste::steps::StepTimer;
use haste::haste::window::Window;
use haste::haste::{HasteConfig, HasteConv, HasteScratch, HyperplaneKind, LayerStats};
use haste::kernels::direct::{conv_on as patch_gemm, Epilogue, Filters, Geom as PatchGeom, Sums};
use haste::kernels::direct::{DirectConv, DirectScratch};
use haste::kernels::gemm::sgemm;
use haste::kernels::im2col::conv2d_image;
use haste::kernels::isa::Isa;
use haste::kernels::layout::IoLayout;
use haste::kernels::pool::pool_hwc;
use haste::ops::{Activation, Conv2dParams, ConvOp, PoolParams};

fn main() {
    divan::main();
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f32) / 1001.5 - 1.0)
        .collect()
}

/// A post-ReLU-like input: smooth per channel, so that HASTE finds redundant channels.
fn smooth_input(c: usize, hw: usize) -> Vec<f32> {
    (0..c * hw * hw)
        .map(|i| {
            let (ch, y, x) = (i / (hw * hw), (i / hw) % hw, i % hw);
            ((ch % 5) as f32 * 0.37 + y as f32 * 0.21).sin().max(0.0) + (x as f32 * 0.01)
        })
        .collect()
}

fn conv_op(c_in: usize, c_out: usize, k: usize) -> ConvOp {
    let params = Conv2dParams::new(c_in, c_out, k, k).with_pads([k / 2; 4]);
    ConvOp {
        input_scale: false,
        params,
        weights: values(c_out * c_in * k * k, 1),
        bias: Some(values(c_out, 2)),
        activation: Activation::Relu,
        residual: None,
    }
}

/// (c_in, c_out, kernel, height = width)
const DENSE: &[(usize, usize, usize, usize)] = &[
    (3, 16, 3, 224),
    (16, 16, 3, 32),
    (32, 32, 3, 16),
    (64, 64, 3, 8),
    (128, 128, 3, 56),
    (64, 256, 1, 56),
    (128, 16, 1, 56),
    (512, 512, 3, 7),
];

#[divan::bench(args = DENSE)]
fn dense_conv(b: Bencher, &(c_in, c_out, k, hw): &(usize, usize, usize, usize)) {
    let op = conv_op(c_in, c_out, k);
    let x = values(c_in * hw * hw, 3);
    let mut out = vec![0.0; c_out * hw * hw];
    let mut col = Vec::new();
    b.counter(divan::counter::ItemsCount::new(
        2 * op.params.dense_macs(hw, hw) as usize,
    ))
    .bench_local(|| conv2d_image(&op, black_box(&x), hw, hw, &mut out, &mut col));
}

/// The direct pixel-major kernel the plan uses for spatial and wide 1x1 convolutions, on
/// pixel-major input and output as between two convolutions of a planned network.
#[divan::bench(args = DENSE)]
fn direct_conv(b: Bencher, &(c_in, c_out, k, hw): &(usize, usize, usize, usize)) {
    let op = conv_op(c_in, c_out, k);
    let conv = DirectConv::new(&op).expect("one group, no dilation");
    let x = values(c_in * hw * hw, 3);
    let mut out = vec![0.0; c_out * hw * hw];
    let mut scratch = DirectScratch::default();
    let io = IoLayout::NHWC;
    b.counter(divan::counter::ItemsCount::new(
        2 * op.params.dense_macs(hw, hw) as usize,
    ))
    .bench_local(|| conv.forward(black_box(&x), (hw, hw), &mut out, &mut scratch, io, None));
}

/// (channels, height = width) of the 2x2 max pools after Tiny Darknet's first convolutions.
const POOLS: &[(usize, usize)] = &[(16, 224), (32, 112), (128, 56)];

/// A `k` x `k` stride-2 max pool with `pad` on every side.
fn max_pool(k: usize, pad: usize) -> PoolParams {
    PoolParams {
        kernel: (k, k),
        stride: (2, 2),
        pads: [pad; 4],
        dilation: (1, 1),
        ceil_mode: false,
        count_include_pad: false,
    }
}

/// The 2x2 stride-2 max pool on a pixel-major image (vector kernel for 16-channel multiples).
#[divan::bench(args = POOLS)]
fn max_pool_2x2(b: Bencher, &(c, hw): &(usize, usize)) {
    let p = max_pool(2, 0);
    let x = values(c * hw * hw, 4);
    let mut out = vec![0.0; c * hw * hw / 4];
    b.counter(divan::counter::ItemsCount::new(x.len()))
        .bench_local(|| pool_hwc(&p, true, black_box(&x), (hw, hw, c), &mut out));
}

/// ResNet-18's 3x3 stride-2 max pool (padding 1) on a pixel-major image: the general window,
/// 16 channels at a time.
#[divan::bench]
fn max_pool_3x3_stride2(b: Bencher) {
    let (c, hw) = (64, 112);
    let p = max_pool(3, 1);
    let x = values(c * hw * hw, 4);
    let (oh, ow) = p.out_hw(hw, hw);
    let mut out = vec![0.0; c * oh * ow];
    b.counter(divan::counter::ItemsCount::new(x.len()))
        .bench_local(|| pool_hwc(&p, true, black_box(&x), (hw, hw, c), &mut out));
}

/// (channels, height = width) of the HASTE benchmarks (3x3 convolutions, tile 4, L = 14).
const HASTE: &[(usize, usize)] = &[(16, 32), (64, 8), (128, 56)];

/// One 4x4 patch in the middle of the image: its window, the HWC input and the hyperplanes.
struct Patch {
    hwc: Vec<f32>,
    win: Window,
    hp: Hyperplanes,
    c: usize,
    w: usize,
}

fn patch(c: usize, hw: usize) -> Patch {
    let p = Conv2dParams::new(c, c, 3, 3).with_pads([1; 4]);
    let x = smooth_input(c, hw);
    let mut hwc = vec![0.0; c * hw * hw];
    for (ch, plane) in x.chunks_exact(hw * hw).enumerate() {
        for (i, &v) in plane.iter().enumerate() {
            hwc[i * c + ch] = v;
        }
    }
    let o = hw / 2 - 2;
    let win = Window::of_patch(&p, (hw, hw), (o, 4), (o, 4));
    let hp = Hyperplanes::generate(HyperplaneKind::default(), 14, 0.667, win.h, win.w, 0);
    Patch {
        hwc,
        win,
        hp,
        c,
        w: hw,
    }
}

fn hashed(pt: &Patch) -> (HashScratch, Buckets) {
    let mut s = HashScratch::default();
    s.reserve(pt.c, pt.win.h * pt.win.w);
    hash_window(
        Isa::current(),
        &pt.hwc,
        pt.w,
        pt.c,
        &pt.win,
        &pt.hp,
        true,
        None,
        &mut s,
    );
    let mut buckets = Buckets::default();
    buckets.group(&s.keys[..pt.c]);
    (s, buckets)
}

/// The hash of one window as a layer runs it: from the window copied once (the copy is
/// `haste_input_merge_in_place`'s), with the layer's hyperplane offsets built beforehand.
#[divan::bench(args = HASTE)]
fn haste_hash(b: Bencher, &(c, hw): &(usize, usize)) {
    let pt = patch(c, hw);
    let (mut s, _) = hashed(&pt);
    let terms = WindowTerms::new(&pt.hp, c);
    let mut win = vec![0.0; pt.hp.dim() * c];
    pt.win.copy_into(&pt.hwc, pt.w, c, pt.hp.window(), &mut win);
    let mut timer = StepTimer::new(false);
    b.bench_local(|| {
        hash_copied_window(
            Isa::current(),
            &win,
            c,
            &pt.win,
            &pt.hp,
            &terms,
            true,
            None,
            &mut s,
            &mut timer,
        )
    });
}

#[divan::bench(args = HASTE)]
fn haste_group(b: Bencher, &(c, hw): &(usize, usize)) {
    let pt = patch(c, hw);
    let (s, mut buckets) = hashed(&pt);
    b.bench_local(|| buckets.group(black_box(&s.keys[..c])));
}

#[divan::bench(args = HASTE)]
fn haste_group_on_best_tier(b: Bencher, &(c, hw): &(usize, usize)) {
    let pt = patch(c, hw);
    let (s, mut buckets) = hashed(&pt);
    let isa = haste::kernels::isa::Isa::best();
    b.bench_local(|| buckets.group_skipping_on(isa, black_box(&s.keys[..c]), &[]));
}

#[divan::bench(args = HASTE)]
fn haste_input_merge(b: Bencher, &(c, hw): &(usize, usize)) {
    let pt = patch(c, hw);
    let (_, buckets) = hashed(&pt);
    let mut mwin = vec![0.0; pt.win.h * pt.win.w * c];
    b.bench_local(|| merge_input(&pt.hwc, pt.w, c, &pt.win, &buckets, &mut mwin));
}

#[divan::bench(args = HASTE)]
fn haste_filter_merge(b: Bencher, &(c, hw): &(usize, usize)) {
    let pt = patch(c, hw);
    let (_, buckets) = hashed(&pt);
    let wt = values(9 * c * c, 4);
    let mut wm = vec![0.0; 9 * c * c];
    b.bench_local(|| merge_filters(&wt, c, c, 9, &buckets, &mut wm));
}

/// The reduced GEMM of one 4x4 patch: `[16, 9 B] x [9 B, c_out]`.
#[divan::bench(args = HASTE)]
fn haste_reduced_gemm(b: Bencher, &(c, hw): &(usize, usize)) {
    let pt = patch(c, hw);
    let (_, buckets) = hashed(&pt);
    let k = 9 * buckets.count();
    let (cols, wm) = (values(16 * k, 5), values(k * c, 6));
    let mut out = vec![0.0; 16 * c];
    b.bench_local(|| sgemm(16, c, k, &cols, k, &wm, c, &mut out, c, false));
}

#[divan::bench(args = HASTE)]
fn haste_conv_image(b: Bencher, &(c, hw): &(usize, usize)) {
    let op = conv_op(c, c, 3);
    let cfg = HasteConfig {
        hyperplanes: 14,
        ..HasteConfig::default()
    };
    let conv = HasteConv::new(op.params, &op.weights, op.bias.as_deref(), &cfg, 1)
        .expect("valid HASTE config");
    let x = smooth_input(c, hw);
    let mut out = vec![0.0; c * hw * hw];
    let mut scratch = HasteScratch::default();
    let mut stats = LayerStats::default();
    b.bench_local(|| conv.forward(&x, hw, hw, &mut out, &mut scratch, &mut stats));
}

/// Buckets with more than one channel (what the fused path merges).
fn multi(buckets: &Buckets) -> Vec<u32> {
    (0..buckets.count() as u32)
        .filter(|&b| buckets.size(b as usize) > 1)
        .collect()
}

/// The input merge of the fused path: window copy, bucket means in place.
#[divan::bench(args = HASTE)]
fn haste_input_merge_in_place(b: Bencher, &(c, hw): &(usize, usize)) {
    let pt = patch(c, hw);
    let (_, buckets) = hashed(&pt);
    let m = multi(&buckets);
    let mut win = vec![0.0; pt.win.h * pt.win.w * c];
    b.bench_local(|| merge_input_in_place(&pt.hwc, pt.w, c, &pt.win, &buckets, &m, &mut win));
}

/// The filter merge of the fused path: only the rows of multi-channel buckets.
#[divan::bench(args = HASTE)]
fn haste_filter_merge_rows(b: Bencher, &(c, hw): &(usize, usize)) {
    let pt = patch(c, hw);
    let (_, buckets) = hashed(&pt);
    let m = multi(&buckets);
    let wt = values(9 * c * c, 4);
    let mut wm = vec![0.0; 9 * c * c];
    b.bench_local(|| merge_filter_rows(&wt, c, c, 9, &buckets, &m, &mut wm));
}

/// The fused reduced convolution of one 4x4 patch (implicit GEMM over the merged window),
/// which replaces im2col + the full filter merge + `haste_reduced_gemm`.
#[divan::bench(args = HASTE)]
fn haste_fused_patch_kernel(b: Bencher, &(c, hw): &(usize, usize)) {
    let pt = patch(c, hw);
    let (_, buckets) = hashed(&pt);
    let m = multi(&buckets);
    let wt = values(9 * c * c, 4);
    let mut wm = vec![0.0; 9 * c * c];
    merge_filter_rows(&wt, c, c, 9, &buckets, &m, &mut wm);
    let mut win = vec![0.0; pt.win.h * pt.win.w * c];
    merge_input_in_place(&pt.hwc, pt.w, c, &pt.win, &buckets, &m, &mut win);
    let first: Vec<u32> = (0..buckets.count())
        .map(|b| buckets.members(b)[0])
        .collect();
    // The row table: merged buckets read their summed rows, singletons the weights.
    let rows: Vec<*const f32> = first
        .iter()
        .enumerate()
        .map(|(b, &f)| {
            let bank = if buckets.size(b) > 1 { &wm } else { &wt };
            bank[f as usize * c..].as_ptr()
        })
        .collect();
    let g = PatchGeom {
        win_w: pt.win.w,
        c_in: c,
        c_out: c,
        kh: 3,
        kys: (0, 3),
        kw: 3,
        kxs: (0, 3),
        sh: 1,
        sw: 1,
        ph: 4,
        pw: 4,
        out_w: 4,
        out_stride: c,
        sums: Sums::WHOLE,
    };
    let mut out = vec![0.0; 16 * c];
    let filters = Filters::Rows {
        first: &first,
        rows: &rows,
        tap_stride: c * c,
        ahead: &[],
    };
    let isa = Isa::current();
    // SAFETY: rows point at `wt`/`wm` rows of channels < c; `Isa::current` is supported.
    b.bench_local(|| unsafe { patch_gemm(isa, &g, &win, filters, Epilogue::NONE, &mut out) });
}
