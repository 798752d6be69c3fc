//! Operators: a closed `enum Op` over small per-op structs, built once at import, plus shape
//! inference ([`Op::output_shape`]). Kernels live in [`crate::kernels`]; the plan dispatches.

mod constant;
mod conv;
mod normalize;
pub mod shape;

pub use constant::{checked_shape, Const, ConstData, MAX_TENSOR_ELEMENTS};
pub use conv::Conv2dParams;
pub use normalize::{erf, LayerNormOp, Unary};

/// A convolution with its (possibly BatchNorm-folded) weights and fused activation.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvOp {
    pub params: Conv2dParams,
    /// OIHW: `[c_out, c_in / groups, kh, kw]`.
    pub weights: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    /// Applied to the output (fused by [`crate::graph::passes::fuse_activations`]).
    pub activation: Activation,
    /// A residual connection fused in by [`crate::graph::passes::fuse_residual_adds`]: the
    /// node's second input (the output's shape and memory order) is added to the convolution
    /// after its bias, then this activation is applied: `out = act(conv(x) + b + r)`, the bits
    /// of the Conv, Add and activation run one after the other. `activation` is then `None`.
    pub residual: Option<Activation>,
    /// A per-image scale of each input channel folded in by
    /// [`crate::graph::passes::fold_channel_scales`] (a squeeze-excitation's `x * s` before
    /// this convolution): the node's last input, `[n, c_in, 1, 1]`, multiplies the input's
    /// channels, `out = conv(x * s)`. Kernels that can fold it into their weights per image
    /// do; for the others the plan scales the input first.
    pub input_scale: bool,
}

impl ConvOp {
    /// The activation the output finally goes through (after the residual, if any).
    pub fn output_activation(&self) -> Activation {
        self.residual.unwrap_or(self.activation)
    }
}

/// A pointwise activation that can be fused into the op before it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    LeakyRelu(f32),
    Clip(f32, f32),
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid(f32, f32),
    /// `x * max(0, min(1, x / 6 + 1 / 2))`.
    HardSwish,
    /// `x * sigmoid(x)` (SiLU, swish): exported as `Mul(x, Sigmoid(x))` and fused by
    /// [`crate::graph::passes::fuse_silu`].
    Silu,
    /// `(x * (erf(x / sqrt 2) + 1)) * 0.5` (GELU), the operations PyTorch exports and
    /// [`crate::graph::passes::fuse_gelu`] fuses, in their order.
    Gelu,
}

/// GELU as exported: `(x * (erf(x / sqrt 2) + 1)) * 0.5`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    (x * (normalize::erf(x / std::f32::consts::SQRT_2) + 1.0)) * 0.5
}

/// `1 / (1 + exp(-x))`, NaN for NaN.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_fused(-x))
}

// The constants of `exp` and `exp_fused` (and of their lanes in `kernels::activation`).
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 in two parts: `n * LN2_HI` is exact for the `n` that occur.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
// Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in any vector unit.
pub(crate) const ROUND: f32 = 12_582_912.0;
/// Cephes' polynomial for `e^r`, highest power first.
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` in plain arithmetic, so that a loop over it vectorizes (`f32::exp` is a libm call
/// per value): Cody-Waite range reduction `x = n ln 2 + r`, Cephes' degree-6 polynomial for
/// `e^r`, and `2^n` built in the exponent bits. Relative error below 3e-7 on
/// `[-87, 88]`; the input is clamped to that range (so the result never overflows to
/// infinity and stays normal); NaN gives NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let er = p * r * r + r + 1.0;
    // NaN casts to 0: `er` is NaN already.
    er * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// [`exp`] with fused multiply-adds, the `e^x` of the sigmoid's and SiLU's definitions
/// (`kernels::activation` gives the same bits on vector lanes): 8 fewer
/// operations a value of some 30, on a chain the activation's throughput depends on. A CPU
/// without FMA instructions computes `mul_add` in software (slowly, but every x86 tier haste
/// runs on has FMA, and aarch64 always has it).
#[inline(always)]
pub fn exp_fused(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = x.mul_add(LOG2E, ROUND) - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    let er = (p * r).mul_add(r, r) + 1.0;
    er * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

impl Activation {
    /// The activation of a standalone op, if it is one.
    pub fn of(op: &Op) -> Option<Activation> {
        match *op {
            Op::Relu => Some(Activation::Relu),
            Op::LeakyRelu { alpha } => Some(Activation::LeakyRelu(alpha)),
            Op::Clip { min, max } => Some(Activation::Clip(min, max)),
            Op::Activation(a) => Some(a),
            _ => None,
        }
    }

    /// True when the output is never negative whatever the input (ReLU, Clip with min >= 0).
    pub fn is_nonnegative(self) -> bool {
        match self {
            Activation::Relu | Activation::Sigmoid | Activation::HardSigmoid(..) => true,
            Activation::Clip(min, _) => min >= 0.0,
            Activation::None
            | Activation::LeakyRelu(_)
            | Activation::HardSwish
            | Activation::Silu
            | Activation::Gelu => false,
        }
    }

    /// `out = act(out + r)`: a residual addition and its activation, a block at a time so
    /// the sums are still in L1 when activated.
    pub fn add_then_apply(self, out: &mut [f32], r: &[f32]) {
        for (o, r) in out.chunks_mut(1024).zip(r.chunks(1024)) {
            o.iter_mut().zip(r).for_each(|(o, r)| *o += r);
            self.apply(o);
        }
    }

    /// [`Self::apply`] of the piecewise-linear activations (none, ReLU, leaky ReLU, clip),
    /// inlined where a kernel finishes a few values at a time; false, with `xs` unchanged,
    /// for the others.
    #[inline(always)]
    pub fn apply_piecewise_linear(self, xs: &mut [f32]) -> bool {
        match self {
            Activation::None => {}
            Activation::Relu => xs
                .iter_mut()
                .for_each(|x| *x = if *x < 0.0 { 0.0 } else { *x }),
            Activation::LeakyRelu(a) => xs
                .iter_mut()
                .for_each(|x| *x = if *x < 0.0 { *x * a } else { *x }),
            Activation::Clip(lo, hi) => xs.iter_mut().for_each(|x| {
                *x = if *x < lo {
                    lo
                } else if *x > hi {
                    hi
                } else {
                    *x
                }
            }),
            _ => return false,
        }
        true
    }

    /// Applies the activation in place. NaN stays NaN (as in PyTorch and onnxruntime), so a
    /// broken activation is not silently turned into 0.
    #[inline]
    pub fn apply(self, xs: &mut [f32]) {
        if self.apply_piecewise_linear(xs) {
            return;
        }
        match self {
            Activation::None
            | Activation::Relu
            | Activation::LeakyRelu(_)
            | Activation::Clip(..) => {}
            Activation::Sigmoid => xs.iter_mut().for_each(|x| *x = sigmoid(*x)),
            Activation::HardSigmoid(alpha, beta) => xs
                .iter_mut()
                .for_each(|x| *x = (alpha * *x + beta).clamp(0.0, 1.0)),
            // `clamp` would turn a NaN into NaN too; the product keeps it either way.
            Activation::HardSwish => xs
                .iter_mut()
                .for_each(|x| *x *= (*x / 6.0 + 0.5).clamp(0.0, 1.0)),
            Activation::Silu => xs.iter_mut().for_each(|x| *x *= sigmoid(*x)),
            Activation::Gelu => xs.iter_mut().for_each(|x| *x = gelu(*x)),
        }
    }
}

/// Inference-mode BatchNormalization as a per-channel affine map `y = x * scale + shift`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormOp {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    /// Applied after the affine map (a ReLU after a BatchNormalization no Conv absorbed).
    pub activation: Activation,
}

/// Geometry of a MaxPool / AveragePool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolParams {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub dilation: (usize, usize),
    pub ceil_mode: bool,
    /// AveragePool only: count padding pixels in the divisor.
    pub count_include_pad: bool,
}

impl PoolParams {
    /// Output height and width for an `h` x `w` input (ONNX rules, including ceil mode).
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let dim = |size: usize, begin: usize, end: usize, k: usize, d: usize, s: usize| {
            let ext = (k - 1) * d + 1;
            let padded = size + begin + end;
            if padded < ext {
                return 0;
            }
            let span = padded - ext;
            let mut out = if self.ceil_mode {
                span.div_ceil(s) + 1
            } else {
                span / s + 1
            };
            // PyTorch/ONNX: in ceil mode the last window must start inside the input or the
            // leading padding, never entirely in the trailing padding.
            if self.ceil_mode && (out - 1) * s >= size + begin {
                out -= 1;
            }
            out
        };
        let (k, s, d, p) = (self.kernel, self.stride, self.dilation, self.pads);
        (
            dim(h, p[0], p[2], k.0, d.0, s.0),
            dim(w, p[1], p[3], k.1, d.1, s.1),
        )
    }
}

/// `y = alpha * x @ w + beta * bias` with `w` constant `[k, n]`, stored in the kernel's
/// column panels ([`crate::kernels::linear::pack_panels`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearOp {
    pub k: usize,
    pub n: usize,
    pub weight: Vec<f32>,
    /// Broadcast over rows; already multiplied by beta.
    pub bias: Option<Vec<f32>>,
    pub alpha: f32,
    /// Applied after the bias (a GELU after a ConvNeXt MLP's first MatMul).
    pub activation: Activation,
}

impl LinearOp {
    /// The op of the `[k, n]` row-major weight `w` (packed here), `bias` (already times
    /// beta) and `alpha`.
    pub fn new(k: usize, n: usize, w: &[f32], bias: Option<Vec<f32>>, alpha: f32) -> LinearOp {
        LinearOp {
            k,
            n,
            weight: crate::kernels::linear::pack_panels(w, k, n),
            bias,
            alpha,
            activation: Activation::None,
        }
    }
}

/// Every operator haste knows. Ops marked "load time" only ever run on constants
/// (constant folding); the plan refuses them on runtime values.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Conv(ConvOp),
    BatchNorm(BatchNormOp),
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Clip {
        min: f32,
        max: f32,
    },
    /// Any other pointwise activation (Sigmoid, HardSigmoid, HardSwish, SiLU).
    Activation(Activation),
    Add,
    /// `Add` followed by an activation, fused by [`crate::graph::passes::fuse_add_activations`].
    AddActivation(Activation),
    Sub,
    Mul,
    Div,
    MaxPool(PoolParams),
    AveragePool(PoolParams),
    GlobalAveragePool,
    Flatten {
        axis: i64,
    },
    /// Shape arithmetic, evaluated at load time only (after [`Op::Shape`], in TF-style padding
    /// computations): elementwise maximum and minimum, negation, ceiling and floor.
    Max,
    Min,
    Neg,
    Ceil,
    Floor,
    /// The mean over `axes` (every axis when empty), kept as size 1 with `keepdims`.
    ReduceMean {
        axes: Vec<i64>,
        keepdims: bool,
    },
    /// Output `index` of a Split along `axis`: the part of that axis after the earlier
    /// parts, of size `sizes[index]`, or of `1 / parts` of it when `sizes` is empty.
    SplitPart {
        axis: i64,
        index: usize,
        parts: usize,
        sizes: Vec<i64>,
    },
    /// `exp(x - max) / sum(exp(x - max))` along `axis`.
    Softmax {
        axis: i64,
    },
    /// Target shape as given by ONNX (0 = copy, -1 = infer).
    Reshape {
        shape: Vec<i64>,
        allowzero: bool,
    },
    /// Gemm or MatMul with a constant right operand.
    Linear(LinearOp),
    /// `pads`: ONNX order (all begins, then all ends), per axis.
    Pad {
        pads: Vec<i64>,
        value: f32,
    },
    Slice {
        starts: Vec<i64>,
        ends: Vec<i64>,
        axes: Vec<i64>,
        steps: Vec<i64>,
    },
    Concat {
        axis: i64,
    },
    Transpose {
        perm: Vec<usize>,
    },
    /// Output channel `j` of `[n, c, h, w]` is input channel `(j % groups) * (c / groups) +
    /// j / groups`: ShuffleNet's `Reshape -> Transpose -> Reshape`, folded by
    /// [`crate::graph::passes::fold_channel_shuffles`].
    ChannelShuffle {
        groups: usize,
    },
    /// An elementwise math function (Erf, Sqrt, Pow by a constant).
    Unary(Unary),
    /// LayerNormalization with constant scale and bias.
    LayerNorm(LayerNormOp),
    Identity,
    // ---- load time only ----
    /// Fills a tensor of the (constant) input shape with `value`.
    ConstantOfShape {
        value: Const,
    },
    /// ONNX data type code to convert to.
    Cast {
        to: i32,
    },
    Unsqueeze {
        axes: Vec<i64>,
    },
    Squeeze {
        axes: Vec<i64>,
    },
    Gather {
        axis: i64,
    },
    Shape,
    /// An op still waiting for its constant inputs to be resolved into parameters
    /// (`Conv` weights, `Reshape` shape, ...), see [`crate::graph::passes`].
    Pending(PendingOp),
}

/// Ops whose parameters arrive as graph inputs; resolved once constants are folded.
#[derive(Debug, Clone, PartialEq)]
pub enum PendingOp {
    Conv {
        params_without_channels: Conv2dParams,
    },
    BatchNorm {
        epsilon: f32,
    },
    Clip,
    Reshape {
        allowzero: bool,
    },
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    /// Pow, its exponent the constant second input.
    Pow,
    /// LayerNormalization, its scale and bias the constant second and third inputs.
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    Pad {
        mode: String,
    },
    Slice,
    Unsqueeze,
    Squeeze,
    /// ReduceMean with its axes as an input (opset 18).
    ReduceMean {
        keepdims: bool,
    },
    /// Output `index` of a Split into `parts`, its sizes from the attribute (`sizes`) or the
    /// constant second input; equal parts without either.
    SplitPart {
        axis: i64,
        index: usize,
        parts: usize,
        sizes: Option<Vec<i64>>,
    },
}

impl Op {
    /// Short name of the op kind (ONNX spelling where there is one).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::BatchNorm(_) => "BatchNormalization",
            Op::Relu => "Relu",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Clip { .. } => "Clip",
            Op::Activation(a) => match a {
                Activation::Sigmoid => "Sigmoid",
                Activation::HardSigmoid(..) => "HardSigmoid",
                Activation::HardSwish => "HardSwish",
                Activation::Silu => "SiLU",
                _ => "Activation",
            },
            Op::Add => "Add",
            Op::AddActivation(_) => "Add+Activation",
            Op::Sub => "Sub",
            Op::Mul => "Mul",
            Op::Div => "Div",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool(_) => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::Flatten { .. } => "Flatten",
            Op::ReduceMean { .. } => "ReduceMean",
            Op::Max => "Max",
            Op::Min => "Min",
            Op::Neg => "Neg",
            Op::Ceil => "Ceil",
            Op::Floor => "Floor",
            Op::Softmax { .. } => "Softmax",
            Op::SplitPart { .. } => "Split",
            Op::Reshape { .. } => "Reshape",
            Op::Linear(_) => "Linear",
            Op::Pad { .. } => "Pad",
            Op::Slice { .. } => "Slice",
            Op::Concat { .. } => "Concat",
            Op::Transpose { .. } => "Transpose",
            Op::ChannelShuffle { .. } => "ChannelShuffle",
            Op::Unary(u) => u.kind(),
            Op::LayerNorm(_) => "LayerNormalization",
            Op::Identity => "Identity",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Cast { .. } => "Cast",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Squeeze { .. } => "Squeeze",
            Op::Gather { .. } => "Gather",
            Op::Shape => "Shape",
            Op::Pending(_) => "Pending",
        }
    }

    /// Multiply-accumulates given the input shapes: per image for Conv, for the whole batch
    /// (every row of the input) for Linear.
    /// Only Conv and Linear count (the convention of the pruning literature).
    pub fn macs(&self, input_shapes: &[Vec<usize>]) -> u64 {
        match self {
            Op::Conv(c) => match input_shapes.first() {
                Some(s) if s.len() == 4 => c.params.dense_macs(s[2], s[3]),
                _ => 0,
            },
            Op::Linear(l) => match input_shapes.first() {
                Some(s) if !s.is_empty() => {
                    let rows: usize = s[..s.len() - 1].iter().product();
                    (rows * l.k * l.n) as u64
                }
                _ => 0,
            },
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulps_of_libm_and_keeps_nan() {
        for (name, f) in [("exp", exp as fn(f32) -> f32), ("exp_fused", exp_fused)] {
            let mut worst = 0.0f64;
            let mut x = -87.0f32;
            while x <= 88.0 {
                let want = (x as f64).exp();
                let rel = ((f(x) as f64 - want) / want).abs();
                worst = worst.max(rel);
                x += 0.001_3;
            }
            assert!(worst < 3e-7, "{name}: worst relative error {worst}");
            assert!(f(f32::NAN).is_nan(), "{name}");
            assert!(f(1e9).is_finite() && f(-1e9) > 0.0, "{name}");
        }
        let mut v = [f32::NAN, -1e9, 0.0, 1e9];
        Activation::Sigmoid.apply(&mut v);
        assert!(v[0].is_nan() && v[1] >= 0.0 && v[1] < 1e-30 && v[2] == 0.5 && v[3] == 1.0);
    }
}
