//! HASTE's filter merge alone, and where its rows come from:
//! `cargo run --release --example filter_merge [-- C_IN C_OUT MERGED%]` (default 512 512 65).
//!
//! A `C_IN -> C_OUT` 3x3 layer's weights in 64-channel panels and 16 random partitions with
//! about `MERGED%` of the channels in buckets of 2 to 4. Each merge sums one partition's
//! buckets over every panel, as the single patch of a 7 x 7 image does. `BANKS=n` keeps n
//! copies of the bank and merges them in turn (four 9.4 MB banks no longer fit in this
//! machine's L3: the rows then come from memory, as for the first image of a batch);
//! `HOT=1` merges panel 0 every time (from L2 when a panel fits there). Prints microseconds
//! per merge of the whole bank, best of 7 rounds.
use haste::haste::buckets::Buckets;
use haste::haste::merge::merge_filter_rows;
use haste::kernels::direct::{weights_panels, PANEL};
use std::time::Instant;

/// Times each round merges every partition.
const REPEATS: usize = 20;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let c_in = args.first().copied().unwrap_or(512);
    let c_out = args.get(1).copied().unwrap_or(512);
    let merged = args.get(2).copied().unwrap_or(65);
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let banks = env("BANKS").unwrap_or(1).max(1);
    let hot = env("HOT") == Some(1);
    let taps = 9;
    let w: Vec<f32> = (0..c_in * c_out * taps)
        .map(|i| ((i * 7919 % 2003) as f32) / 1001.5 - 1.0)
        .collect();
    let bank: Vec<Vec<f32>> = (0..banks)
        .map(|_| weights_panels(&w, c_in, c_out, taps, PANEL))
        .collect();
    let panel_len = taps * c_in * PANEL;
    let parts: Vec<(Buckets, Vec<u32>)> = (0..16)
        .map(|seed| {
            let b = partition(c_in, merged, seed);
            let multi = (0..b.count() as u32)
                .filter(|&k| b.size(k as usize) > 1)
                .collect();
            (b, multi)
        })
        .collect();
    let mut wm = vec![0.0f32; panel_len];
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        let rounds = parts.iter().cycle().take(REPEATS * parts.len());
        for (i, (b, multi)) in rounds.enumerate() {
            let wt = &bank[i % banks];
            for q in 0..c_out / PANEL {
                let q = if hot { 0 } else { q };
                let panel = &wt[q * panel_len..][..panel_len];
                merge(panel, c_in, taps, b, multi, &mut wm);
            }
        }
        best = best.min(t.elapsed().as_secs_f64() / (REPEATS * parts.len()) as f64);
    }
    println!(
        "{c_in} -> {c_out}, {merged} % merged, {banks} bank(s){}: {:.1} us per bank",
        if hot { ", panel 0 only" } else { "" },
        best * 1e6
    );
}

/// The merge compiled for the best of AVX-512 and AVX2 the CPU has, as `HasteConv` inlines it
/// into its tier's code (the plain build is SSE2 on x86-64).
fn merge(panel: &[f32], c_in: usize, taps: usize, b: &Buckets, multi: &[u32], wm: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { merge_avx512(panel, c_in, taps, b, multi, wm) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { merge_avx2(panel, c_in, taps, b, multi, wm) };
    }
    merge_filter_rows(panel, c_in, PANEL, taps, b, multi, wm);
}

/// `$name`: [`merge_filter_rows`] compiled with the target features `$features`.
///
/// # Safety
/// The CPU supports them.
macro_rules! merge_compiled_for {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            panel: &[f32],
            c_in: usize,
            taps: usize,
            b: &Buckets,
            multi: &[u32],
            wm: &mut [f32],
        ) {
            merge_filter_rows(panel, c_in, PANEL, taps, b, multi, wm);
        }
    };
}
merge_compiled_for!(merge_avx2, "avx2,fma");
merge_compiled_for!(merge_avx512, "avx512f,fma");

/// Random buckets: about `merged` % of the channels in buckets of 2 to 4 (one key per three
/// merged channels on average), the rest alone.
fn partition(c: usize, merged: usize, seed: u64) -> Buckets {
    let mut state = seed.wrapping_mul(6364136223846793005) ^ 1442695040888963407;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let groups = (c * merged / 100 / 3).max(1);
    let keys: Vec<u128> = (0..c)
        .map(|ch| {
            if next() % 100 < merged {
                (next() % groups) as u128
            } else {
                (1_000_000 + ch) as u128
            }
        })
        .collect();
    let mut b = Buckets::default();
    b.group(&keys);
    b
}
