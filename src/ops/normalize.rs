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

/// The error function: the rational approximation of Eigen's `generic_fast_erf_float`
/// (odd polynomials of degree 13 over 8 in `x`, for `x` clamped to [-4, 4], where `erf` is
/// 1 to f32 precision), within a few 1e-7 of the exact value; NaN for NaN. Branch-free
/// f32 arithmetic, so a loop over a slice vectorizes (GELU evaluates it on every value of
/// ConvNeXt's widest layers).
#[inline]
pub fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_600_1e-3,
        -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ALPHA[1..].iter().fold(ALPHA[0], |acc, &a| acc * x2 + a);
    let q = BETA[1..].iter().fold(BETA[0], |acc, &b| acc * x2 + b);
    // The fit overshoots 1 by an ulp near the clamp.
    (x * p / q).clamp(-1.0, 1.0)
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
    /// show in the f32 result; each in eight interleaved partial sums (`sum8`), a loop the
    /// compiler vectorizes (one running sum waited on every addition: ConvNeXt-tiny's layer
    /// norms took twice onnxruntime's time).
    #[inline(always)]
    pub fn rows(&self, x: &[f32], out: &mut [f32]) {
        let d = self.scale.len();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let mean = sum8(xr, |v| v) / d as f64;
            let var = sum8(xr, |v| (v - mean) * (v - mean)) / d as f64;
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

/// The sum of `f(v)` (in f64) over `xs`: lane `j` of eight partial sums takes the values at
/// `j`, `j + 8` and so on, and the lanes are then added in order.
#[inline(always)]
fn sum8(xs: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v as f64);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v as f64);
    }
    acc.iter().sum()
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
            assert!((erf(x) as f64 - want).abs() < 5e-7, "erf({x}) = {}", erf(x));
            assert_eq!(erf(-x), -erf(x));
        }
        assert!(erf(f32::NAN).is_nan());
        // Within 5e-7 of f64's series over [-5, 5] (which loses at most 7 of its 16 digits
        // to cancellation there), and never beyond 1.
        let series = |z: f64| {
            let (mut term, mut sum) = (z, z);
            for n in 1..120 {
                term *= -z * z / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * std::f64::consts::FRAC_2_SQRT_PI
        };
        for i in -5000..=5000 {
            let x = i as f32 * 1e-3;
            let want = series(x as f64);
            assert!(
                (erf(x) as f64 - want).abs() < 5e-7,
                "erf({x}) {} vs {want}",
                erf(x)
            );
            assert!(erf(x).abs() <= 1.0, "erf({x})");
        }
        assert!((erf(f32::INFINITY) - 1.0).abs() <= 1.2e-7);
        assert_eq!(erf(f32::NEG_INFINITY), -erf(f32::INFINITY));
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
