//! The reduced convolution's multiply-add rate against the dense kernel's, on one core:
//! `cargo run --release --example patch_kernel [-- C ...]` (default 64 128 256).
//!
//! For a 3x3 layer of `C -> C` channels: the direct kernel as HASTE calls it (one 4 x 4 patch
//! and one 64-channel filter panel per call, every channel its own bucket, so it does the
//! dense work: `Filters::Rows`), over the patches of a 28 x 28 image, against the dense
//! kernel on the whole image (`DirectConv`). Both do the same multiply-adds; the ratio is
//! what a patch loses before anything is merged (issue: at least 0.95). Then half the
//! channels merged away at tiles 4 and 8, with the buckets' channels and filter rows packed
//! at the start of the bank or spread over it as real partitions leave them (a third from a
//! separate buffer of summed rows): what scattered rows cost the kernel. And the dense
//! kernel on as many input channels as the merged patches keep (`KEEP` percent, else half):
//! it keeps its rate with fewer terms per output, so what the patches lose against it is the
//! patch calls' own structure, not their shorter sums. Best of 7 rounds.
use haste::kernels::aligned::AlignedFloats;
use haste::kernels::direct::{
    conv_on, weights_panels, DirectConv, DirectScratch, Epilogue, Filters, Geom, Sums, PANEL,
};
use haste::kernels::isa::Isa;
use haste::kernels::layout::IoLayout;
use haste::ops::{Activation, Conv2dParams, ConvOp};
use std::time::Instant;

const TILE: usize = 4;

/// The image side: `SIDE` from the environment, else 28.
fn side() -> usize {
    std::env::var("SIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(28)
}

/// The tiles of the merged runs: `TILES` from the environment (comma-separated), else 4, 8, 16.
fn tiles() -> Vec<usize> {
    std::env::var("TILES")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.parse().ok()).collect())
        .unwrap_or_else(|| vec![4, 8, 16])
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let channels = if args.is_empty() {
        vec![64, 128, 256]
    } else {
        args
    };
    println!("isa {}", Isa::current());
    for c in channels {
        let dense = dense_rate(c);
        let patches = patch_rate(c, TILE, Partition::Singletons);
        println!(
            "{c:>4} -> {c:<4} 3x3 @{}: dense {dense:6.1} GFLOP/s, patches {patches:6.1} GFLOP/s, ratio {:.2}",
            side(),
            patches / dense
        );
        // The dense kernel on as many input channels as the merged patches keep: what the
        // same number of terms per output costs without HASTE.
        let kept_in = kept(c);
        let dense_kept = dense_rate_from(kept_in, c);
        println!(
            "     dense {kept_in:>4} -> {c:<4}: {dense_kept:6.1} GFLOP/s ({:.2} of dense)",
            dense_kept / dense
        );
        // Channels merged away (half unless `KEEP` says), as real partitions do: the same
        // multiply-adds with the buckets' channels and rows in order, or spread as HASTE's
        // buckets leave them.
        for tile in tiles() {
            let packed = patch_rate(c, tile, Partition::HalfPacked);
            let spread = patch_rate(c, tile, Partition::HalfSpread);
            println!(
                "     {kept_in} of {c} kept, tile {tile}: packed {packed:6.1} GFLOP/s, spread {spread:6.1} GFLOP/s (rate {:.2} and {:.2} of dense)",
                packed / dense,
                spread / dense
            );
        }
    }
}

fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f32) / 1001.5 - 1.0)
        .collect()
}

/// GFLOP/s of `f`, which does `flops` per call: the best of 7 rounds of about 0.2 s.
fn rate(flops: f64, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let (t, mut runs) = (Instant::now(), 0);
        while t.elapsed().as_secs_f64() < 0.2 {
            f();
            runs += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() / runs as f64);
    }
    flops / best / 1e9
}

fn dense_rate(c: usize) -> f64 {
    dense_rate_from(c, c)
}

/// [`dense_rate`] of a `c_in -> c` layer.
fn dense_rate_from(c_in: usize, c: usize) -> f64 {
    let side = side();
    let p = Conv2dParams::new(c_in, c, 3, 3).with_pads([1; 4]);
    let op = ConvOp {
        input_scale: false,
        params: p,
        weights: values(c * c_in * 9, 1),
        bias: None,
        activation: Activation::None,
        residual: None,
    };
    let d = DirectConv::new(&op).expect("a direct convolution");
    let x = values(c_in * side * side, 2);
    let mut out = vec![0.0; c * side * side];
    let mut s = DirectScratch::default();
    let io = IoLayout::NHWC;
    let flops = 2.0 * p.dense_macs(side, side) as f64;
    rate(flops, || {
        d.forward(&x, (side, side), &mut out, &mut s, io, None)
    })
}

/// Buckets of a merged patch: `KEEP` percent of the channels (from the environment), else
/// half.
fn kept(c: usize) -> usize {
    let keep = std::env::var("KEEP")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(50);
    (c * keep / 100).max(1)
}

/// Which buckets a patch's reduced convolution reads.
#[derive(Clone, Copy, PartialEq)]
enum Partition {
    /// Every channel its own bucket (the dense work).
    Singletons,
    /// Half the channels, the first half, rows in the weights' order.
    HalfPacked,
    /// Half the channels, spread over the bank (every other channel, shifted by the patch
    /// row), a third of them read from a separate buffer of summed rows.
    HalfSpread,
}

/// Every `tile x tile` patch of the image from its own window, one panel at a time, as
/// `HasteConv` runs them.
fn patch_rate(c: usize, tile: usize, partition: Partition) -> f64 {
    let side_in = side();
    // A tile larger than the image: one patch of the whole image (a 7 x 7 layer at tile 8).
    let tile = tile.min(side_in);
    let win_side = tile + 2;
    let per_side = side_in / tile;
    let windows: Vec<AlignedFloats> = (0..per_side * per_side)
        .map(|i| AlignedFloats::from(&values(win_side * win_side * c, 3 + i)[..]))
        .collect();
    let panel = if c > PANEL { PANEL } else { c };
    let wt = AlignedFloats::from(&weights_panels(&values(c * c * 9, 1), c, c, 9, PANEL)[..]);
    let first: Vec<u32> = match partition {
        Partition::Singletons => (0..c as u32).collect(),
        Partition::HalfPacked => (0..kept(c) as u32).collect(),
        Partition::HalfSpread => (0..kept(c) as u32)
            .map(|b| (b as usize * c / kept(c)) as u32)
            .collect(),
    };
    let summed = AlignedFloats::from(&values(9 * c * panel, 4)[..]);
    let mut out = vec![0.0f32; side_in * side_in * c];
    let covered = per_side * tile;
    let flops = 2.0 * (covered * covered * c * first.len() * 9) as f64;
    let isa = Isa::current();
    rate(flops, || {
        for q in 0..c / panel {
            let wt_panel = &wt[q * 9 * c * panel..][..9 * c * panel];
            let rows: Vec<*const f32> = first
                .iter()
                .enumerate()
                .map(|(b, &f)| {
                    if partition == Partition::HalfSpread && b % 3 == 0 {
                        summed[b / 3 * panel..].as_ptr()
                    } else {
                        wt_panel[f as usize * panel..].as_ptr()
                    }
                })
                .collect();
            for (i, win) in windows.iter().enumerate() {
                let (oy0, ox0) = (i / per_side * tile, i % per_side * tile);
                let g = Geom {
                    win_w: win_side,
                    c_in: c,
                    c_out: panel,
                    kh: 3,
                    kys: (0, 3),
                    kw: 3,
                    kxs: (0, 3),
                    sh: 1,
                    sw: 1,
                    ph: tile,
                    pw: tile,
                    out_w: side_in,
                    out_stride: c,
                    sums: Sums::WHOLE,
                };
                let f = Filters::Rows {
                    first: &first,
                    rows: &rows,
                    tap_stride: c * panel,
                    ahead: &[],
                };
                let o = &mut out[(oy0 * side_in + ox0) * c + q * panel..];
                // SAFETY: every row and its taps lie in `wt_panel`; the window holds
                // `6 * 6 * c` values; `isa` is the CPU's.
                unsafe { conv_on(isa, &g, win, f, Epilogue::NONE, o) };
            }
        }
    })
}
