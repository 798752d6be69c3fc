//! Layer normalization ([`LayerNormOp::rows`], the definition) compiled for the widest
//! vectors the CPU has: the same operations in the same order, so the same bits on every
//! tier, with eight f64 partial sums a vector where baseline x86-64 holds two.

use crate::ops::LayerNormOp;

/// `op`'s rows of `x` normalized into `out`, on the fastest tier.
pub fn rows(op: &LayerNormOp, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match super::isa::Isa::current() {
        // SAFETY: the CPU runs the tier `Isa::current` names.
        super::isa::Isa::Avx512 => return unsafe { rows_avx512(op, x, out) },
        // SAFETY: as above.
        super::isa::Isa::Avx2 => return unsafe { rows_avx2(op, x, out) },
        _ => {}
    }
    op.rows(x, out)
}

/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(op: &LayerNormOp, x: &[f32], out: &mut [f32]) {
    op.rows(x, out)
}

/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2(op: &LayerNormOp, x: &[f32], out: &mut [f32]) {
    op.rows(x, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tier gives the definition's bits, and the definition is the plain one in f64
    /// (to f32 rounding) on rows of 1 to 20 values and ConvNeXt's 96.
    #[test]
    fn every_tier_gives_the_definition() {
        for d in (1..=20).chain([96]) {
            let op = LayerNormOp {
                axis: -1,
                epsilon: 1e-6,
                scale: (0..d).map(|k| 0.5 + 0.1 * k as f32).collect(),
                bias: Some((0..d).map(|k| 0.05 * k as f32 - 0.2).collect()),
            };
            let x: Vec<f32> = (0..3 * d)
                .map(|i| ((i * 37 % 29) as f32 - 14.0) / 3.0 + 100.0)
                .collect();
            let mut want = vec![f32::NAN; x.len()];
            op.rows(&x, &mut want);
            let mut got = vec![f32::NAN; x.len()];
            rows(&op, &x, &mut got);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "d {d}");
            for (r, row) in x.chunks(d).enumerate() {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                for k in 0..d {
                    let y = (row[k] as f64 - mean) / (var + 1e-6f32 as f64).sqrt();
                    let y = y * op.scale[k] as f64 + op.bias.as_ref().unwrap()[k] as f64;
                    let g = want[r * d + k] as f64;
                    assert!(
                        (g - y).abs() < 1e-5 * (1.0 + y.abs()),
                        "d {d} row {r} k {k}"
                    );
                }
            }
        }
    }
}
