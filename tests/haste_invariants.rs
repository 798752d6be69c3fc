//! Invariants of HASTE (src/haste) against the naive reference convolution.

use haste::haste::{
    dense_macs, FlopCount, HasteConfig, HasteConv, HasteScratch, HyperplaneKind, LayerStats,
};
use haste::kernels::reference::conv2d_direct;
use haste::ops::Conv2dParams;
use haste::Error;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

struct Case {
    p: Conv2dParams,
    h: usize,
    w: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl Case {
    fn new(p: Conv2dParams, h: usize, w: usize, seed: u64) -> Case {
        let weights = random(p.c_out * p.c_in * p.kh * p.kw, seed ^ 0xA5);
        let bias = random(p.c_out, seed ^ 0x5A);
        Case {
            p,
            h,
            w,
            weights,
            bias,
        }
    }

    fn conv(&self, cfg: &HasteConfig, layer: usize) -> HasteConv {
        HasteConv::new(self.p, &self.weights, Some(&self.bias), cfg, layer).unwrap()
    }

    fn run(&self, conv: &HasteConv, x: &[f32]) -> (Vec<f32>, LayerStats) {
        let (oh, ow) = self.p.out_hw(self.h, self.w);
        let mut out = vec![f32::NAN; self.p.c_out * oh * ow];
        let mut stats = LayerStats::default();
        conv.forward(
            x,
            self.h,
            self.w,
            &mut out,
            &mut HasteScratch::default(),
            &mut stats,
        );
        (out, stats)
    }

    /// Asserts `got` equals the dense conv of `x` to `1e-5` relative to the sum of |terms|.
    fn assert_dense(&self, x: &[f32], got: &[f32]) -> Result<(), TestCaseError> {
        let want = conv2d_direct(&self.p, x, self.h, self.w, &self.weights, Some(&self.bias));
        let ax: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let aw: Vec<f32> = self.weights.iter().map(|v| v.abs()).collect();
        let ab: Vec<f32> = self.bias.iter().map(|v| v.abs()).collect();
        let bound = conv2d_direct(&self.p, &ax, self.h, self.w, &aw, Some(&ab));
        prop_assert_eq!(got.len(), want.len());
        for (i, ((&g, &r), &b)) in got.iter().zip(&want).zip(&bound).enumerate() {
            prop_assert!(
                (g - r).abs() <= 1e-5 * (b + 1e-3),
                "{:?} {}x{}: output {} is {} want {} (scale {})",
                self.p,
                self.h,
                self.w,
                i,
                g,
                r,
                b
            );
        }
        Ok(())
    }
}

fn singleton_case(
    p: Conv2dParams,
    h: usize,
    w: usize,
    tile: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let case = Case::new(p, h, w, seed);
    let cfg = HasteConfig {
        tile,
        hyperplanes: 4,
        seed,
        ..HasteConfig::default()
    };
    let mut conv = case.conv(&cfg, 0);
    conv.set_force_singletons(true);
    let x = random(p.c_in * h * w, seed);
    let (out, stats) = case.run(&conv, &x);
    case.assert_dense(&x, &out)?;
    prop_assert_eq!(stats.flops.conv, dense_macs(&p, h, w));
    prop_assert_eq!(stats.flops.filter_merge, 0);
    Ok(())
}

#[test]
fn forced_singletons_equal_dense_over_a_grid() {
    let mut seed = 0;
    for &(kh, kw) in &[(1, 1), (3, 3), (5, 5), (3, 1)] {
        for &stride in &[(1, 1), (2, 2), (1, 2)] {
            for pads in [[0; 4], [1; 4], [2; 4], [0, 1, 2, 1], [2, 0, 1, 2]] {
                for &tile in &[1, 2, 3, 4, 7] {
                    seed += 1;
                    let c_in = [1, 3, 17, 40][seed as usize % 4];
                    let c_out = [1, 5, 16][seed as usize % 3];
                    let (h, w) = [(5, 7), (8, 8), (11, 6), (6, 13)][seed as usize % 4];
                    let p = Conv2dParams::new(c_in, c_out, kh, kw)
                        .with_stride(stride.0, stride.1)
                        .with_pads(pads);
                    if p.out_hw(h, w).0 == 0 || p.out_hw(h, w).1 == 0 {
                        continue;
                    }
                    singleton_case(p, h, w, tile, seed).unwrap();
                }
            }
        }
    }
}

#[test]
fn natural_singletons_with_64_hyperplanes_equal_dense() {
    for (i, &(c_in, k, pad, stride, tile)) in [
        (8, 3, 1, 1, 4),
        (20, 3, 0, 1, 3),
        (12, 5, 2, 2, 2),
        (16, 1, 0, 1, 7),
        (30, 3, 1, 2, 4),
    ]
    .iter()
    .enumerate()
    {
        let p = Conv2dParams::new(c_in, 7, k, k)
            .with_stride(stride, stride)
            .with_pads([pad; 4]);
        let case = Case::new(p, 14, 12, i as u64);
        let cfg = HasteConfig {
            hyperplanes: 64,
            tile,
            seed: 3,
            ..HasteConfig::default()
        };
        let conv = case.conv(&cfg, i);
        let x = random(c_in * 14 * 12, 100 + i as u64);
        let (out, stats) = case.run(&conv, &x);
        let merged: u64 = stats.bucket_size_hist.iter().skip(2).sum();
        if merged == 0 {
            case.assert_dense(&x, &out).unwrap();
            assert_eq!(stats.flops.conv, dense_macs(&p, 14, 12));
        } else {
            // Windows of one or two pixels only have a few codes: fine, but then say so.
            assert!(
                tile * stride + k <= 3,
                "unexpected merges: {:?}",
                stats.bucket_size_hist
            );
        }
    }
}

/// `x` whose channel `c` is a copy of base channel `map[c]`.
fn duplicated(base: &[f32], hw: usize, map: &[usize]) -> Vec<f32> {
    map.iter()
        .flat_map(|&b| base[b * hw..(b + 1) * hw].iter().copied())
        .collect()
}

#[test]
fn duplicate_channels_merge_exactly() {
    // Output channel counts of one filter panel (9, 130) and of several 64-channel panels
    // (128, 192), which wide layers use.
    for (i, &(c_in, n_base, k, pad, stride, tile, c_out)) in [
        (24, 4, 3, 1, 1, 4, 9),
        (40, 6, 3, 1, 1, 3, 9),
        (16, 3, 5, 2, 1, 4, 9),
        (32, 5, 3, 0, 2, 4, 9),
        (12, 4, 1, 0, 1, 4, 9),
        (24, 4, 3, 1, 1, 4, 128),
        (40, 6, 3, 1, 2, 4, 192),
        (16, 5, 3, 1, 1, 2, 130),
    ]
    .iter()
    .enumerate()
    {
        let (h, w) = (16, 13);
        let p = Conv2dParams::new(c_in, c_out, k, k)
            .with_stride(stride, stride)
            .with_pads([pad; 4]);
        let case = Case::new(p, h, w, i as u64);
        let base = random(n_base * h * w, 7 + i as u64);
        let map: Vec<usize> = (0..c_in).map(|c| (c * 7 + c / 3) % n_base).collect();
        let x = duplicated(&base, h * w, &map);
        for magnitude_bins in [None, Some(0.5)] {
            let cfg = HasteConfig {
                hyperplanes: 64,
                tile,
                magnitude_bins,
                ..HasteConfig::default()
            };
            let (out, stats) = case.run(&case.conv(&cfg, 1), &x);
            case.assert_dense(&x, &out).unwrap();
            assert!(
                stats.mean_buckets() <= n_base as f64,
                "{}",
                stats.mean_buckets()
            );
            assert!(stats.flops.conv < dense_macs(&p, h, w));
            assert_eq!(stats.bucket_sum, stats.patches * n_base as u64, "case {i}");
        }
    }
}

#[test]
fn same_seed_is_bit_identical_and_seeds_matter() {
    let p = Conv2dParams::new(32, 16, 3, 3).with_pads([1; 4]);
    let case = Case::new(p, 12, 12, 5);
    let x = random(32 * 144, 6);
    let cfg = HasteConfig {
        hyperplanes: 6,
        seed: 11,
        ..HasteConfig::default()
    };
    let a = case.run(&case.conv(&cfg, 2), &x);
    let b = case.run(&case.conv(&cfg, 2), &x);
    assert_eq!(
        a.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(a.1, b.1);
    // Reusing a scratch across images does not change anything either.
    let conv = case.conv(&cfg, 2);
    let mut scratch = HasteScratch::default();
    let mut out = vec![0.0; 16 * 144];
    for _ in 0..2 {
        conv.forward(
            &x,
            12,
            12,
            &mut out,
            &mut scratch,
            &mut LayerStats::default(),
        );
        assert_eq!(
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            a.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
    let other_seed = case.conv(
        &HasteConfig {
            seed: 12,
            ..cfg.clone()
        },
        2,
    );
    let other_layer = case.conv(&cfg, 3);
    assert_ne!(other_seed.hyperplanes(), case.conv(&cfg, 2).hyperplanes());
    assert_ne!(other_layer.hyperplanes(), case.conv(&cfg, 2).hyperplanes());
    assert_ne!(case.run(&other_seed, &x).0, a.0);
}

#[test]
fn flop_accounting_by_hand() {
    // c_in = 2 identical channels, c_out = 3, 3x3, pad 1, 4x4 image.
    let p = Conv2dParams::new(2, 3, 3, 3).with_pads([1; 4]);
    let case = Case::new(p, 4, 4, 1);
    let x = duplicated(&random(16, 2), 16, &[0, 0]);
    for kind in [HyperplaneKind::Ternary, HyperplaneKind::Gaussian] {
        // One 4x4 patch: window 6x6, of which 4x4 lies in the image.
        let cfg = HasteConfig {
            tile: 4,
            kind,
            hyperplanes: 10,
            ..HasteConfig::default()
        };
        let conv = case.conv(&cfg, 0);
        let (_, stats) = case.run(&conv, &x);
        let nnz = match kind {
            HyperplaneKind::Ternary => conv.hyperplanes().nnz_in(1..5, 1..5) as u64,
            HyperplaneKind::Gaussian => 10 * 16,
        };
        assert_eq!(stats.patches, 1);
        assert_eq!(stats.bucket_sum, 1);
        assert_eq!(stats.bucket_size_hist, vec![0, 0, 1]);
        let want = FlopCount {
            conv: 3 * 9 * 16,
            centering: 2 * 16,
            projection: 2 * nnz,
            input_merge: 2 * 16,
            filter_merge: 3 * 9,
        };
        assert_eq!(stats.flops, want);
        assert_eq!(stats.flops.overhead(), 2 * 16 + 2 * nnz + 2 * 16 + 27);
        assert_eq!(
            stats.flops.total(),
            3 * 9 * 16 + 2 * 16 + 2 * nnz + 2 * 16 + 27
        );
    }
    // Tile 2: four patches, each window 4x4 with 3x3 pixels in the image; no centering.
    let cfg = HasteConfig {
        tile: 2,
        centering: false,
        ..HasteConfig::default()
    };
    let conv = case.conv(&cfg, 0);
    let (_, stats) = case.run(&conv, &x);
    assert_eq!(stats.patches, 4);
    let hp = conv.hyperplanes();
    let nnz = (hp.nnz_in(1..4, 1..4)
        + hp.nnz_in(1..4, 0..3)
        + hp.nnz_in(0..3, 1..4)
        + hp.nnz_in(0..3, 0..3)) as u64;
    let want = FlopCount {
        conv: 3 * 9 * 16,
        centering: 0,
        projection: 2 * nnz,
        input_merge: 2 * 36,
        filter_merge: 4 * 27,
    };
    assert_eq!(stats.flops, want);
    // Magnitude bins add the norms to the projection cost.
    let cfg = HasteConfig {
        tile: 4,
        magnitude_bins: Some(0.5),
        ..HasteConfig::default()
    };
    let conv = case.conv(&cfg, 0);
    let (_, stats) = case.run(&conv, &x);
    assert_eq!(
        stats.flops.projection,
        2 * conv.hyperplanes().nnz_in(1..5, 1..5) as u64 + 2 * 16
    );
    assert_eq!(conv.dense_flops(4, 4), 3 * 2 * 9 * 16);
}

#[test]
fn magnitude_bins_separate_levels() {
    // Constant channels at levels 1, 2 and 9 (exact in f32): centered, channels 0 and 1 both point along
    // -(1, .., 1), so the angular hash merges them; their norms differ by an octave.
    let p = Conv2dParams::new(3, 2, 3, 3).with_pads([1; 4]);
    let case = Case::new(p, 8, 8, 3);
    let x: Vec<f32> = [1.0f32, 2.0, 9.0]
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, 64))
        .collect();
    let plain = HasteConfig {
        hyperplanes: 16,
        ..HasteConfig::default()
    };
    let (_, s0) = case.run(&case.conv(&plain, 0), &x);
    assert_eq!(s0.mean_buckets(), 2.0);
    let binned = HasteConfig {
        magnitude_bins: Some(0.5),
        ..plain
    };
    let (out, s1) = case.run(&case.conv(&binned, 0), &x);
    assert_eq!(s1.mean_buckets(), 3.0);
    case.assert_dense(&x, &out).unwrap();
}

#[test]
fn non_finite_inputs_are_counted_not_fatal() {
    let p = Conv2dParams::new(4, 3, 3, 3).with_pads([1; 4]);
    let case = Case::new(p, 8, 8, 4);
    let mut x = random(4 * 64, 5);
    x[0] = f32::NAN; // pixel (0, 0): only the first 4x4 patch's window reads it
    x[64 + 63] = f32::INFINITY; // channel 1, pixel (7, 7): only the last patch
    let conv = case.conv(&HasteConfig::default(), 0);
    let (out, stats) = case.run(&conv, &x);
    assert_eq!(stats.nonfinite_inputs, 2);
    assert!(out[0].is_nan());
    let all_nan = vec![f32::NAN; 4 * 64];
    let (out, stats) = case.run(&conv, &all_nan);
    assert_eq!(stats.nonfinite_inputs, 4 * 4 * 25);
    assert!(out.iter().all(|v| v.is_nan()));
}

#[test]
fn rejects_unsupported_convs_and_bad_configs() {
    let w = vec![0.0; 4 * 4 * 9];
    let p = Conv2dParams::new(4, 4, 3, 3);
    let cfg = HasteConfig::default();
    let inv = |r: Result<HasteConv, Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(inv(HasteConv::new(
        p.with_groups(2),
        &w[..72],
        None,
        &cfg,
        0
    )));
    assert!(inv(HasteConv::new(
        p.with_dilation(2, 2),
        &w,
        None,
        &cfg,
        0
    )));
    assert!(inv(HasteConv::new(p, &w[1..], None, &cfg, 0)));
    assert!(inv(HasteConv::new(p, &w, Some(&[0.0; 3]), &cfg, 0)));
    assert!(inv(HasteConv::new(
        p,
        &w,
        None,
        &HasteConfig {
            hyperplanes: 0,
            ..cfg.clone()
        },
        0
    )));
    assert!(inv(HasteConv::new(
        p,
        &w,
        None,
        &HasteConfig {
            tile: 0,
            ..cfg.clone()
        },
        0
    )));
    assert!(HasteConv::new(p, &w, Some(&[0.0; 4]), &cfg, 0).is_ok());
}

fn conv_params() -> impl Strategy<Value = (Conv2dParams, usize, usize)> {
    (
        1usize..24,
        1usize..12,
        prop_oneof![Just(1usize), Just(3), Just(5)],
        1usize..3,
        0usize..3,
        0usize..3,
        1usize..12,
        1usize..12,
    )
        .prop_map(|(c_in, c_out, k, s, pa, pb, h, w)| {
            let p = Conv2dParams::new(c_in, c_out, k, k)
                .with_stride(s, s)
                .with_pads([pa, pb, pb, pa]);
            (p, h + k, w + k)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        rng_seed: RngSeed::Fixed(0x4841_5354),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_forced_singletons_equal_dense((p, h, w) in conv_params(), tile in 1usize..8, seed in 0u64..1000) {
        singleton_case(p, h, w, tile, seed)?;
    }

    /// Two distinct base channels, copied: after centering their window vectors are
    /// antiparallel, so they never share a code and every bucket holds equal channels.
    #[test]
    fn prop_duplicates_merge_exactly(
        (p, h, w) in conv_params(),
        tile in 1usize..8,
        l in 1usize..=64,
        s in 0.0f32..0.9,
        seed in 0u64..1000,
        gaussian in any::<bool>(),
    ) {
        let mut p = p;
        p.c_in = p.c_in.max(2);
        let case = Case::new(p, h, w, seed);
        let base = random(2 * h * w, seed + 1);
        let map: Vec<usize> = (0..p.c_in).map(|c| usize::from(c % 3 == 1)).collect();
        let x = duplicated(&base, h * w, &map);
        let kind = if gaussian { HyperplaneKind::Gaussian } else { HyperplaneKind::Ternary };
        let cfg = HasteConfig { hyperplanes: l, sparsity: s, tile, seed, kind, ..HasteConfig::default() };
        let (out, stats) = case.run(&case.conv(&cfg, 0), &x);
        case.assert_dense(&x, &out)?;
        prop_assert!(stats.mean_buckets() <= 2.0);
        prop_assert!(stats.flops.conv <= dense_macs(&p, h, w));
    }

    /// Same seed, same input: bit-identical output and identical statistics.
    #[test]
    fn prop_same_seed_is_deterministic(
        (p, h, w) in conv_params(),
        tile in 1usize..8,
        l in 1usize..=64,
        seed in 0u64..1000,
        layer in 0usize..50,
    ) {
        let case = Case::new(p, h, w, seed);
        let x = random(p.c_in * h * w, seed + 7);
        let cfg = HasteConfig { hyperplanes: l, tile, seed, ..HasteConfig::default() };
        let (a, sa) = case.run(&case.conv(&cfg, layer), &x);
        let (b, sb) = case.run(&case.conv(&cfg, layer), &x);
        prop_assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        prop_assert_eq!(sa, sb);
    }

    /// FLOPs accounting never claims more than the convolution could save: the reduced conv
    /// costs at most the dense one, the overhead is positive, and the reduction counted with
    /// overhead is at most the conv-only one.
    #[test]
    fn prop_flops_never_overclaim(
        (p, h, w) in conv_params(),
        tile in 1usize..8,
        l in 1usize..=64,
        s in 0.0f32..0.9,
        seed in 0u64..1000,
        centering in any::<bool>(),
    ) {
        let case = Case::new(p, h, w, seed);
        let x = random(p.c_in * h * w, seed + 3);
        let cfg = HasteConfig { hyperplanes: l, sparsity: s, tile, seed, centering, ..HasteConfig::default() };
        let conv = case.conv(&cfg, 0);
        let (_, stats) = case.run(&conv, &x);
        // The dense multiply-adds counted from the definition: every output of every output
        // channel reads c_in * kh * kw inputs.
        let out_side = |size: usize, pad: usize, k: usize, s: usize| (size + pad - k) / s + 1;
        let oh = out_side(h, p.pads[0] + p.pads[2], p.kh, p.stride.0);
        let ow = out_side(w, p.pads[1] + p.pads[3], p.kw, p.stride.1);
        let dense = (p.c_out * p.c_in * p.kh * p.kw * oh * ow) as u64;
        prop_assert_eq!(conv.dense_flops(h, w), dense);
        let f = stats.flops;
        prop_assert!(f.conv <= dense, "conv {} > dense {}", f.conv, dense);
        prop_assert!(stats.patches > 0);
        prop_assert!(f.overhead() > 0);
        let parts = [f.conv, f.centering, f.projection, f.input_merge, f.filter_merge];
        prop_assert_eq!(f.total(), parts.iter().sum::<u64>());
        let summary = haste::FlopsSummary {
            dense_flops: dense,
            flops: f.total(),
            overhead_flops: f.overhead(),
            conv_dense_flops: dense,
            conv_flops_without_overhead: f.conv,
        };
        prop_assert!(summary.reduction_conv_only() >= 0.0);
        prop_assert!(summary.reduction_conv_only() <= 100.0);
        prop_assert!(summary.reduction() <= summary.reduction_conv_only() + 1e-9);
    }
}
