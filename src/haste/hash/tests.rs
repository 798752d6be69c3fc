//! The hash's vector paths against its portable one (the plain definition is in tests/hash_reference.rs).

use super::*;

/// A tier's [`thresholds_and_codes`].
#[cfg(target_arch = "x86_64")]
type Codes = unsafe fn(&[f32], usize, usize, bool, &mut Vec<f32>, &mut [u64]) -> bool;

/// The vector thresholds and codes against the portable loops, bit for bit, over rows of
/// one to four blocks of channels, with signed zeros (ties with the threshold 0 when not
/// centering); and a NaN projection reported as a non-finite sum by both.
#[cfg(target_arch = "x86_64")]
#[test]
fn vector_thresholds_and_codes_give_the_portable_bits() {
    let mut tiers: Vec<(&str, Codes)> = Vec::new();
    if std::arch::is_x86_feature_detected!("avx512f") {
        tiers.push(("avx512", thresholds_and_codes_avx512));
    }
    if std::arch::is_x86_feature_detected!("avx2") {
        tiers.push(("avx2", thresholds_and_codes_avx2));
    }
    for (tier, vector) in tiers {
        thresholds_and_codes_match(tier, vector);
    }
}

/// The test above for one tier's `vector` thresholds and codes.
#[cfg(target_arch = "x86_64")]
fn thresholds_and_codes_match(tier: &str, vector: Codes) {
    for (c, lc) in [(3usize, 5usize), (16, 14), (37, 20), (48, 64), (64, 6)] {
        let cpad = c.next_multiple_of(LANES);
        let mut proj = vec![0.0f32; lc * cpad];
        for l in 0..lc {
            for k in 0..c {
                let i = l * 131 + k * 17;
                proj[l * cpad + k] = match i % 11 {
                    0 => -0.0,
                    1 => 0.0,
                    2 if l % 4 == 1 => 0.25,
                    _ => ((i * 7919 % 1009) as f32 - 504.0) * 1.37e-3,
                };
            }
        }
        for centering in [true, false] {
            let (mut t_want, mut t_got) = (Vec::new(), Vec::new());
            let (mut want, mut got) = (vec![0u64; c], vec![u64::MAX; c]);
            assert!(thresholds_and_codes(
                &proj,
                cpad,
                c,
                centering,
                &mut t_want,
                &mut want
            ));
            // SAFETY: the caller checked the tier.
            let ok = unsafe { vector(&proj, cpad, c, centering, &mut t_got, &mut got) };
            assert!(ok);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&t_got), bits(&t_want), "{tier}: c {c}, L {lc}");
            assert_eq!(got, want, "{tier}: c {c}, L {lc}, centering {centering}");
            let all = u64::MAX >> (64 - lc);
            assert!(want.iter().any(|&w| w != 0) && want.iter().any(|&w| w != all));
        }
        // A NaN projection: the sum is not finite, on both paths.
        let mut bad = proj.clone();
        bad[cpad + c / 2] = f32::NAN;
        let (mut t, mut codes) = (Vec::new(), vec![0u64; c]);
        assert!(!thresholds_and_codes(
            &bad, cpad, c, true, &mut t, &mut codes
        ));
        // SAFETY: as above.
        assert!(!unsafe { vector(&bad, cpad, c, true, &mut t, &mut codes) });
    }
}

#[test]
fn magnitude_bins() {
    assert_eq!(magnitude_bin(0.0, 0.5), 0);
    assert_eq!(magnitude_bin(1e-30, 0.5), 0);
    // norm 1 and 1.2 share the [1, sqrt 2) half-octave; 1.5 does not.
    assert_eq!(magnitude_bin(1.0, 0.5), magnitude_bin(1.44, 0.5));
    assert_ne!(magnitude_bin(1.0, 0.5), magnitude_bin(2.25, 0.5));
    assert_ne!(magnitude_bin(1e-20, 0.5), 0);
    assert!(magnitude_bin(f32::INFINITY, 0.5) > magnitude_bin(1e30, 0.5));
}

#[test]
fn lane_sum() {
    let v: Vec<f32> = (0..37).map(|i| i as f32).collect();
    assert_eq!(sum_lanes(&v), (0..37).sum::<i32>() as f32);
}

/// The default step's bins by the float's exponent are the logarithm's: at powers of two,
/// one ulp either side of them, and across the range of normal squared norms.
#[test]
fn default_step_bins_are_the_logarithms() {
    let mut values = vec![
        f32::MIN_POSITIVE,
        f32::MAX,
        1.0,
        0.999_999_9,
        3.0,
        1e-20,
        1e30,
    ];
    for e in -79..=127 {
        let p = 2f32.powi(e);
        values.extend([
            p,
            f32::from_bits(p.to_bits() - 1),
            f32::from_bits(p.to_bits() + 1),
        ]);
    }
    let mut x = 0x1234_5678u32;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        values.push(f32::from_bits(x & 0x7fff_ffff));
    }
    for v in values
        .into_iter()
        .filter(|v| v.is_normal() && *v > ZERO_NORM * ZERO_NORM)
    {
        assert_eq!(magnitude_bin(v, 0.5), magnitude_bin_by_log(v, 0.5), "{v:e}");
    }
}

/// An edge window of the frame's size takes terms of its own where the entries they leave
/// out save more vector loads than their table costs in lines: a 64-channel window whose
/// ring is padding does, a 16-channel one missing a row does not, and a 16-channel corner
/// of a wide frame neither; at 64 channels one missing row does, and a window wholly in the
/// padding always (its terms are empty).
#[test]
fn edge_terms_pay_off_where_they_leave_out_enough_loads() {
    use crate::haste::config::HyperplaneKind;
    use crate::kernels::direct::Live;
    let hp = Hyperplanes::generate(HyperplaneKind::default(), 14, 0.667, 10, 10, 0);
    let live = |rows, cols| Live { rows, cols };
    let pays = |c, present| {
        let whole = WindowTerms::new(&hp, c);
        WindowTerms::within(&hp, c, present).pays_off_over(&whole)
    };
    let ring = live((1, 9), (1, 9));
    let top_row = live((1, 10), (0, 10));
    assert!(pays(64, ring) && pays(64, top_row));
    assert!(!pays(16, top_row));
    let wide = Hyperplanes::generate(HyperplaneKind::default(), 14, 0.667, 18, 18, 0);
    let whole = WindowTerms::new(&wide, 16);
    let corner = WindowTerms::within(&wide, 16, live((1, 18), (1, 18)));
    assert!(!corner.pays_off_over(&whole));
    assert!(WindowTerms::within(&wide, 16, live((0, 0), (0, 0))).pays_off_over(&whole));
}
