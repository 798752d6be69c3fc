//! The ops of transformer-style blocks in CNNs (ConvNeXt): elementwise math functions
//! ([`Unary`]: Erf, Sqrt, Pow by a constant) and layer normalization ([`LayerNormOp`]).

/// An elementwise function of one runtime value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    /// The error function (GELU is `x * 0.5 * (1 + erf(x / sqrt(2)))`).
    Erf,
    Sqrt,
    /// `x` to a constant power (ONNX Pow with a constant exponent).
    Pow(f32),
}

impl Unary {
    /// ONNX spelling.
    pub fn kind(self) -> &'static str {
        match self {
            Unary::Erf => "Erf",
            Unary::Sqrt => "Sqrt",
            Unary::Pow(_) => "Pow",
        }
    }

    /// The function at `x`.
    #[inline]
    pub fn at(self, x: f32) -> f32 {
        match self {
            Unary::Erf => erf(x),
            Unary::Sqrt => x.sqrt(),
            // Squares (the variance in a decomposed layer norm) as one product, as
            // onnxruntime does; other powers through `powf`.
            Unary::Pow(2.0) => x * x,
            Unary::Pow(1.0) => x,
            Unary::Pow(p) => x.powf(p),
        }
    }
}

/// The error function in f64, rounded to f32: its Taylor series up to |x| = 1 (exact to
/// f64 there, so `erf(0) = 0`), beyond it `1 - erfc` from the Chebyshev fit of `erfc` in
/// Numerical Recipes (relative error 1.2e-7 of `erfc`, at most 0.16, so below 2e-8
/// absolute). Odd, and NaN for NaN.
pub fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let e = if z <= 1.0 {
        erf_series(z)
    } else {
        1.0 - erfc_fit(z)
    };
    (if x < 0.0 { -e } else { e }) as f32
}

/// `erf(z)` for `0 <= z <= 1`: `2 / sqrt(pi) * sum (-1)^n z^(2n + 1) / (n! (2n + 1))`,
/// whose terms fall below 1e-17 by n = 18.
fn erf_series(z: f64) -> f64 {
    let (z2, mut term, mut sum) = (z * z, z, z);
    for n in 1..20 {
        term *= -z2 / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

/// `erfc(z)` for `z >= 0`, within a relative 1.2e-7.
fn erfc_fit(z: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * z);
    const C: [f64; 10] = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let poly = C.iter().rev().fold(0.0, |acc, &c| acc * t + c);
    t * (-z * z + poly).exp()
}

/// ONNX LayerNormalization over the axes from `axis` to the last: each such row of `d`
/// values is centered, divided by `sqrt(variance + epsilon)` (population variance), then
/// scaled and shifted per position in the row.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormOp {
    pub axis: i64,
    pub epsilon: f32,
    /// `d` values (the normalized row's shape, flattened).
    pub scale: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

impl LayerNormOp {
    /// Rows of `x` normalized into `out` (both a whole number of rows of `scale.len()`
    /// values). Means and variances are summed in f64, so the order of the sums does not
    /// show in the f32 result.
    pub fn rows(&self, x: &[f32], out: &mut [f32]) {
        let d = self.scale.len();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let inv = 1.0 / (var + self.epsilon as f64).sqrt();
            for (k, (o, &v)) in or.iter_mut().zip(xr).enumerate() {
                let y = ((v as f64 - mean) * inv) as f32 * self.scale[k];
                *o = match &self.bias {
                    Some(b) => y + b[k],
                    None => y,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values_and_is_odd() {
        // erf(0.5), erf(1), erf(2), erf(3) to 10 digits.
        for (x, want) in [
            (0.0f32, 0.0f64),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265_0),
            (3.0, 0.999_977_909_5),
        ] {
            assert!((erf(x) as f64 - want).abs() < 2e-7, "erf({x}) = {}", erf(x));
            assert_eq!(erf(-x), -erf(x));
        }
        assert!(erf(f32::NAN).is_nan());
        assert_eq!((erf(f32::INFINITY), erf(f32::NEG_INFINITY)), (1.0, -1.0));
    }

    #[test]
    fn layer_norm_rows_have_zero_mean_unit_variance_before_the_affine_map() {
        let op = LayerNormOp {
            axis: -1,
            epsilon: 0.0,
            scale: vec![2.0, 2.0, 2.0, 2.0],
            bias: Some(vec![1.0, 1.0, 1.0, 1.0]),
        };
        let x = [1.0f32, 2.0, 3.0, 4.0, -5.0, 5.0, -5.0, 5.0];
        let mut out = [0.0f32; 8];
        op.rows(&x, &mut out);
        // Row 1: mean 2.5, variance 1.25.
        let s = 1.25f64.sqrt();
        for (k, &v) in x[..4].iter().enumerate() {
            let want = 2.0 * (v as f64 - 2.5) / s + 1.0;
            assert!((out[k] as f64 - want).abs() < 1e-6);
        }
        // Row 2: mean 0, variance 25: +-1 scaled by 2, plus 1.
        assert_eq!(&out[4..], &[-1.0, 3.0, -1.0, 3.0]);
    }
}
