//! The direct kernel's epilogue (bias, residual, activation) on every tier against the
//! scalar code, NaN and infinities included.

#[cfg(target_arch = "x86_64")]
use super::epilogue::{with_lanes, Lanes};
use super::tests::run_on;
use super::*;
use crate::ops::Activation;

/// The in-register epilogue gives the scalar one's bits, NaN, infinities and -0.0
/// included, for every activation, with and without bias and residual, on full and
/// partial lanes.
#[test]
fn epilogue_in_registers_matches_scalar_bits() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        use std::arch::x86_64::*;
        let xs: Vec<f32> = vec![
            -2.5,
            -0.0,
            0.0,
            1.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.25,
            -0.75,
            3.0,
            -1e-30,
            7.0,
            -7.0,
            0.5,
            -0.5,
            f32::MIN_POSITIVE,
        ];
        let bias: Vec<f32> = (0..16).map(|i| (i as f32 - 8.0) * 0.125).collect();
        // A residual read from offset 1, -0.0 and a NaN among its values.
        let mut residual: Vec<f32> = (0..17).map(|i| (i as f32 - 9.0) * 0.375).collect();
        (residual[2], residual[5]) = (-0.0, f32::NAN);
        let activations = [
            Activation::None,
            Activation::Relu,
            Activation::LeakyRelu(0.1),
            Activation::Clip(-1.0, 2.0),
        ];
        for activation in activations {
            for b in [None, Some(&bias[..])] {
                let e = Epilogue {
                    bias: b,
                    residual: b.map(|_| &residual[..]),
                    activation,
                };
                for (mask, lanes) in [(0xffffu16, 16), (0x01ff, 9)] {
                    let mut want = xs[..lanes].to_vec();
                    e.apply(0, 1, &mut want);
                    let mut got = vec![0.0f32; 16];
                    unsafe {
                        let x = _mm512_loadu_ps(xs.as_ptr());
                        // As the blocks' epilogue computes it.
                        let y = with_lanes!(e.activation, act => {
                            act.apply(e.add_avx512(0, 1, mask, x))
                        });
                        _mm512_storeu_ps(got.as_mut_ptr(), y);
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got[..lanes]), bits(&want), "{activation:?} {b:?}");
                }
            }
        }
    }
}

/// The bits of `v`, every NaN as one: a NaN stays NaN on every tier, but its sign and
/// payload may differ (the smooth activations' vector code on a partial AVX-512 vector
/// gives another NaN than the scalar code).
fn nan_as_one(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|f| {
            if f.is_nan() {
                f32::NAN.to_bits()
            } else {
                f.to_bits()
            }
        })
        .collect()
}

/// Every tier's epilogue (in registers where it has one, stored and finished otherwise)
/// gives the scalar code's bits for every activation, with NaN and infinities among the
/// sums, with and without bias and residual, on full and partial vectors.
#[test]
fn every_tier_finishes_like_the_scalar_epilogue() {
    let specials = [
        -2.5,
        -0.0,
        0.0,
        0.3,
        1.5,
        7.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let activations = [
        Activation::None,
        Activation::Relu,
        Activation::LeakyRelu(0.1),
        Activation::Clip(-1.0, 6.0),
        Activation::Clip(0.0, 0.2),
        Activation::HardSwish,
        Activation::Sigmoid,
    ];
    // A 1x1 convolution of one input channel with unit weights: each sum is its window value.
    for c_out in [16usize, 21, 40, 48, 64, 70, 112] {
        let n = 7 * 5;
        let win: Vec<f32> = (0..n).map(|j| specials[j % specials.len()]).collect();
        let g = Geom::pointwise(1, c_out, (7, 5));
        let bias: Vec<f32> = (0..c_out).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
        let residual: Vec<f32> = (0..n * c_out)
            .map(|i| specials[(i / 3) % specials.len()] * 0.25)
            .collect();
        let blank = vec![0.0f32; n * c_out];
        for activation in activations {
            for (bias, residual) in [
                (None, None),
                (Some(&bias[..]), None),
                (Some(&bias[..]), Some(&residual[..])),
            ] {
                let e = Epilogue {
                    bias,
                    residual,
                    activation,
                };
                let mut want = blank.clone();
                let ones = vec![1.0f32; c_out];
                let f = Filters::Panels {
                    weights: &ones,
                    width: PANEL,
                };
                unsafe { conv_generic(&g, &win, f, e, &mut want) };
                for isa in Isa::available() {
                    let f = Filters::Panels {
                        weights: &ones,
                        width: panel_width(isa),
                    };
                    let got = run_on(isa, &g, &win, f, e, &blank);
                    assert_eq!(
                        nan_as_one(&want),
                        nan_as_one(&got),
                        "{isa}, {c_out} channels, {activation:?}, bias {}, residual {}",
                        bias.is_some(),
                        residual.is_some()
                    );
                }
            }
        }
    }
}
