//! The ONNX op registry: one small builder per op type. An unknown op type is reported (all of
//! them, with node names) by [`crate::onnx::load_graph`].

use super::attrs::Attrs;
use super::tensor::decode_tensor;
use crate::error::Result;
use crate::graph::Const;
use crate::ops::{Activation, Conv2dParams, Op, PendingOp, PoolParams, Unary};

/// Builds the op of one node, or `Ok(None)` if haste does not know the op type.
pub fn build_op(a: &Attrs) -> Result<Option<Op>> {
    let op = match a.node.op_type.as_str() {
        "Conv" => conv(a)?,
        "BatchNormalization" => Op::Pending(PendingOp::BatchNorm {
            epsilon: a.float("epsilon", 1e-5),
        }),
        "Relu" => Op::Relu,
        "Sigmoid" => Op::Activation(Activation::Sigmoid),
        "HardSigmoid" => Op::Activation(Activation::HardSigmoid(
            a.float("alpha", 0.2),
            a.float("beta", 0.5),
        )),
        "HardSwish" => Op::Activation(Activation::HardSwish),
        "LeakyRelu" => Op::LeakyRelu {
            alpha: a.float("alpha", 0.01),
        },
        "Clip" if a.has("min") || a.has("max") => Op::Clip {
            min: a.float("min", f32::NEG_INFINITY),
            max: a.float("max", f32::INFINITY),
        },
        "Clip" => Op::Pending(PendingOp::Clip),
        "Add" => Op::Add,
        "Sub" => Op::Sub,
        "Mul" => Op::Mul,
        "Div" => Op::Div,
        "MaxPool" => Op::MaxPool(pool(a)?),
        "AveragePool" => Op::AveragePool(pool(a)?),
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "ReduceMean" if a.has("axes") || a.inputs() < 2 => Op::ReduceMean {
            axes: a.ints("axes").unwrap_or_default().to_vec(),
            keepdims: a.int("keepdims", 1) != 0,
        },
        "ReduceMean" => Op::Pending(PendingOp::ReduceMean {
            keepdims: a.int("keepdims", 1) != 0,
        }),
        "Max" => Op::Max,
        "Min" => Op::Min,
        "Neg" => Op::Neg,
        "Erf" => Op::Unary(Unary::Erf),
        "Sqrt" => Op::Unary(Unary::Sqrt),
        "Pow" => Op::Pending(PendingOp::Pow),
        "LayerNormalization" => Op::Pending(PendingOp::LayerNorm {
            axis: a.int("axis", -1),
            epsilon: a.float("epsilon", 1e-5),
        }),
        "Ceil" => Op::Ceil,
        "Floor" => Op::Floor,
        "Softmax" => Op::Softmax {
            axis: a.int("axis", -1),
        },
        "Flatten" => Op::Flatten {
            axis: a.int("axis", 1),
        },
        "Reshape" => Op::Pending(PendingOp::Reshape {
            allowzero: a.int("allowzero", 0) != 0,
        }),
        "Gemm" => Op::Pending(PendingOp::Gemm {
            alpha: a.float("alpha", 1.0),
            beta: a.float("beta", 1.0),
            trans_a: a.int("transA", 0) != 0,
            trans_b: a.int("transB", 0) != 0,
        }),
        "MatMul" => Op::Pending(PendingOp::MatMul),
        "Pad" => pad(a)?,
        "Slice" if a.has("starts") => Op::Slice {
            starts: a.ints("starts").unwrap_or_default().to_vec(),
            ends: a.ints("ends").unwrap_or_default().to_vec(),
            axes: a.ints("axes").unwrap_or_default().to_vec(),
            steps: vec![],
        },
        "Slice" => Op::Pending(PendingOp::Slice),
        "Concat" => Op::Concat {
            axis: a.int("axis", 0),
        },
        "Transpose" => transpose(a)?,
        "Identity" | "Dropout" => Op::Identity,
        "ConstantOfShape" => {
            let value = match a.tensor("value") {
                Some(t) => decode_tensor(a.model, t)?,
                None => Const::f32(vec![1], vec![0.0]),
            };
            if value.len() != 1 {
                return Err(a.error("'value' must hold exactly one element"));
            }
            Op::ConstantOfShape { value }
        }
        "Cast" => Op::Cast {
            to: a.int("to", 1) as i32,
        },
        "Unsqueeze" if a.has("axes") => Op::Unsqueeze {
            axes: a.ints("axes").unwrap_or_default().to_vec(),
        },
        "Unsqueeze" => Op::Pending(PendingOp::Unsqueeze),
        "Squeeze" if a.has("axes") => Op::Squeeze {
            axes: a.ints("axes").unwrap_or_default().to_vec(),
        },
        "Squeeze" => Op::Pending(PendingOp::Squeeze),
        "Gather" => Op::Gather {
            axis: a.int("axis", 0),
        },
        "Shape" => Op::Shape,
        _ => return Ok(None),
    };
    Ok(Some(op))
}

fn check_auto_pad(a: &Attrs) -> Result<()> {
    match a.string("auto_pad", "NOTSET").as_str() {
        "NOTSET" | "VALID" => Ok(()),
        other => Err(a.error(format!(
            "auto_pad '{other}' is not supported; export with explicit pads"
        ))),
    }
}

fn pads4(a: &Attrs) -> Result<[usize; 4]> {
    let p = a.usizes("pads", 4, 0, 0)?;
    // ONNX order: h_begin, w_begin, h_end, w_end -> top, left, bottom, right
    Ok([p[0], p[1], p[2], p[3]])
}

fn conv(a: &Attrs) -> Result<Op> {
    check_auto_pad(a)?;
    let k = match a.ints("kernel_shape") {
        Some(k) if k.len() != 2 => return Err(a.error("only 2-D convolutions are supported")),
        _ => a.usizes("kernel_shape", 2, 0, 1)?,
    };
    let s = a.usizes("strides", 2, 1, 1)?;
    let d = a.usizes("dilations", 2, 1, 1)?;
    let groups = a.int("group", 1);
    if !(1..=1 << 20).contains(&groups) {
        return Err(a.error(format!("group {groups} is out of range")));
    }
    let params = Conv2dParams::new(0, 0, k[0], k[1])
        .with_stride(s[0], s[1])
        .with_dilation(d[0], d[1])
        .with_pads(pads4(a)?)
        .with_groups(groups as usize);
    Ok(Op::Pending(PendingOp::Conv {
        params_without_channels: params,
    }))
}

fn pool(a: &Attrs) -> Result<PoolParams> {
    check_auto_pad(a)?;
    let kernel = match a.ints("kernel_shape") {
        Some(k) if k.len() == 2 => a.usizes("kernel_shape", 2, 1, 1)?,
        _ => return Err(a.error("needs a 2-D 'kernel_shape'")),
    };
    let s = a.usizes("strides", 2, 1, 1)?;
    let d = a.usizes("dilations", 2, 1, 1)?;
    Ok(PoolParams {
        kernel: (kernel[0], kernel[1]),
        stride: (s[0], s[1]),
        pads: pads4(a)?,
        dilation: (d[0], d[1]),
        ceil_mode: a.int("ceil_mode", 0) != 0,
        count_include_pad: a.int("count_include_pad", 0) != 0,
    })
}

fn pad(a: &Attrs) -> Result<Op> {
    let mode = a.string("mode", "constant");
    if mode != "constant" {
        return Err(a.error(format!(
            "pad mode '{mode}' is not supported (only 'constant')"
        )));
    }
    match a.ints("pads") {
        // opset < 11: pads and value are attributes
        Some(p) => Ok(Op::Pad {
            pads: p.to_vec(),
            value: a.float("value", 0.0),
        }),
        None => Ok(Op::Pending(PendingOp::Pad { mode })),
    }
}

fn transpose(a: &Attrs) -> Result<Op> {
    match a.ints("perm") {
        Some(p) => {
            let mut seen = vec![false; p.len()];
            let mut perm = Vec::with_capacity(p.len());
            for &x in p {
                if x < 0 || x as usize >= p.len() || seen[x as usize] {
                    return Err(a.error(format!("'perm' {p:?} is not a permutation")));
                }
                seen[x as usize] = true;
                perm.push(x as usize);
            }
            Ok(Op::Transpose { perm })
        }
        // Default: reverse the axes; the rank is known only from the input, so mark it empty.
        None => Ok(Op::Transpose { perm: vec![] }),
    }
}
