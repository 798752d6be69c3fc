//! Constant folding: resolve ops whose parameters arrive as constant inputs (Conv weights,
//! Reshape shapes, Pad pads ...) and evaluate every node whose inputs are all constants, such
//! as the CIFAR ResNets' zero-padding shortcut (ConstantOfShape, Concat, Reshape, Slice,
//! Transpose, Cast feeding Pad).

use super::{node_error, MISSING};
use crate::error::Result;
use crate::graph::{Const, ConstData, Graph, Node, ValueId};
use crate::kernels::layout;
use crate::ops::shape::{broadcast_shapes, normalize_axis, reshape_target, resolve_slice};
use crate::ops::{Activation, BatchNormOp, ConvOp, LayerNormOp, LinearOp, Op, PendingOp, Unary};

/// Resolves pending ops and folds constant subgraphs, in dependency order.
pub fn fold_constants(g: &mut Graph) -> Result<()> {
    fold(g, false)
}

/// [`fold_constants`] that leaves alone what it cannot resolve yet (a pending op whose
/// parameters are not constants, a load-time op on a runtime value), for
/// [`super::fold_runtime_shapes`], which makes more of the graph constant between passes.
pub(super) fn fold_what_is_constant(g: &mut Graph) -> Result<()> {
    fold(g, true)
}

fn fold(g: &mut Graph, lenient: bool) -> Result<()> {
    let order = g.topological_order()?;
    let mut keep = vec![true; g.nodes.len()];
    for i in order {
        let mut node = g.nodes[i].clone();
        if let Op::Pending(p) = &node.op {
            match resolve_pending(g, &node, p) {
                Ok((op, inputs)) => {
                    node.op = op;
                    node.inputs = inputs;
                }
                Err(_) if lenient => continue,
                Err(e) => return Err(e),
            }
        }
        node.inputs.retain(|&v| v != MISSING);
        let all_const = node.inputs.iter().all(|v| g.constants.contains_key(v));
        if all_const && node.outputs.len() == 1 {
            let inputs: Vec<&Const> = node
                .inputs
                .iter()
                .filter_map(|v| g.constants.get(v))
                .collect();
            if let Some(c) = eval_const(g, &node, &inputs)? {
                g.constants.insert(node.outputs[0], c);
                keep[i] = false;
                continue;
            }
        }
        if is_load_time_only(&node.op) && lenient {
            g.nodes[i] = node;
            continue;
        }
        if is_load_time_only(&node.op) {
            return Err(node_error(
                g,
                &node,
                "this op must be computable at load time (its inputs must be constants)",
            ));
        }
        g.nodes[i] = node;
    }
    let mut k = keep.iter();
    g.nodes.retain(|_| *k.next().unwrap_or(&true));
    Ok(())
}

pub(super) fn is_load_time_only(op: &Op) -> bool {
    matches!(
        op,
        Op::ConstantOfShape { .. }
            | Op::Cast { .. }
            | Op::Unsqueeze { .. }
            | Op::Squeeze { .. }
            | Op::Gather { .. }
            | Op::Shape
            | Op::Max
            | Op::Min
            | Op::Neg
            | Op::Ceil
            | Op::Floor
            | Op::Pending(_)
    )
}

/// Turns a pending op into a concrete one, consuming its constant parameter inputs.
fn resolve_pending(g: &Graph, n: &Node, p: &PendingOp) -> Result<(Op, Vec<ValueId>)> {
    let input = |i: usize| n.inputs.get(i).copied().filter(|&v| v != MISSING);
    let constant = |i: usize, what: &str| -> Result<Option<&Const>> {
        match input(i) {
            None => Ok(None),
            Some(v) => match g.constants.get(&v) {
                Some(c) => Ok(Some(c)),
                None => Err(node_error(g, n, format!("{what} must be a constant"))),
            },
        }
    };
    let required = |i: usize, what: &str| -> Result<&Const> {
        constant(i, what)?.ok_or_else(|| node_error(g, n, format!("missing {what}")))
    };
    let f32s = |c: &Const, what: &str| -> Result<Vec<f32>> {
        match &c.data {
            ConstData::F32(v) => Ok(v.clone()),
            ConstData::I64(_) => Err(node_error(g, n, format!("{what} must be float"))),
        }
    };
    let data_input = input(0).ok_or_else(|| node_error(g, n, "missing data input"))?;
    let only_data = vec![data_input];
    Ok(match p {
        PendingOp::Conv {
            params_without_channels,
        } => {
            let w = required(1, "weight")?;
            if w.shape.len() != 4 {
                return Err(node_error(
                    g,
                    n,
                    format!("weight has shape {:?}, expected 4-D", w.shape),
                ));
            }
            let mut params = *params_without_channels;
            params.c_out = w.shape[0];
            params.c_in = w.shape[1] * params.groups;
            if params.kh != 0 && (params.kh, params.kw) != (w.shape[2], w.shape[3]) {
                return Err(node_error(
                    g,
                    n,
                    "kernel_shape disagrees with the weight shape",
                ));
            }
            params.kh = w.shape[2];
            params.kw = w.shape[3];
            params.validate().map_err(|e| node_error(g, n, e))?;
            let bias = match constant(2, "bias")? {
                Some(b) if b.len() == params.c_out => Some(f32s(b, "bias")?),
                Some(_) => {
                    return Err(node_error(
                        g,
                        n,
                        "bias length differs from the output channels",
                    ))
                }
                None => None,
            };
            (
                Op::Conv(ConvOp {
                    input_scale: false,
                    params,
                    weights: f32s(w, "weight")?,
                    bias,
                    activation: Activation::None,
                    residual: None,
                }),
                only_data,
            )
        }
        PendingOp::BatchNorm { epsilon } => {
            let [scale, bias, mean, var] = [1, 2, 3, 4].map(|i| required(i, "BatchNorm parameter"));
            let (scale, bias, mean, var) = (
                f32s(scale?, "scale")?,
                f32s(bias?, "bias")?,
                f32s(mean?, "mean")?,
                f32s(var?, "var")?,
            );
            let c = scale.len();
            if [bias.len(), mean.len(), var.len()].iter().any(|&l| l != c) {
                return Err(node_error(g, n, "BatchNorm parameters differ in length"));
            }
            let mut s = vec![0.0; c];
            let mut t = vec![0.0; c];
            for i in 0..c {
                s[i] = scale[i] / (var[i] + epsilon).sqrt();
                t[i] = bias[i] - mean[i] * s[i];
            }
            (
                Op::BatchNorm(BatchNormOp {
                    scale: s,
                    shift: t,
                    activation: Activation::None,
                }),
                only_data,
            )
        }
        PendingOp::Clip => {
            let scalar = |i: usize, default: f32| -> Result<f32> {
                Ok(constant(i, "clip bound")?
                    .and_then(|c| c.to_f32().first().copied())
                    .unwrap_or(default))
            };
            (
                Op::Clip {
                    min: scalar(1, f32::NEG_INFINITY)?,
                    max: scalar(2, f32::INFINITY)?,
                },
                only_data,
            )
        }
        PendingOp::Pow => match required(1, "exponent")?.to_f32()[..] {
            [p] => (Op::Unary(Unary::Pow(p)), only_data),
            _ => return Err(node_error(g, n, "the exponent must be a single number")),
        },
        PendingOp::LayerNorm { axis, epsilon } => {
            let scale = f32s(required(1, "scale")?, "scale")?;
            let bias = match constant(2, "bias")? {
                Some(b) if b.len() == scale.len() => Some(f32s(b, "bias")?),
                Some(_) => return Err(node_error(g, n, "bias and scale differ in length")),
                None => None,
            };
            let (axis, epsilon) = (*axis, *epsilon);
            let op = LayerNormOp {
                axis,
                epsilon,
                scale,
                bias,
            };
            (Op::LayerNorm(op), only_data)
        }
        PendingOp::Reshape { allowzero } => (
            Op::Reshape {
                shape: required(1, "shape")?.to_i64(),
                allowzero: *allowzero,
            },
            only_data,
        ),
        PendingOp::Pad { .. } => {
            let pads = required(1, "pads")?.to_i64();
            let value = constant(2, "constant value")?
                .and_then(|c| c.to_f32().first().copied())
                .unwrap_or(0.0);
            if let Some(axes) = constant(3, "axes")? {
                if !axes.is_empty() {
                    return Err(node_error(g, n, "Pad with 'axes' is not supported"));
                }
            }
            (Op::Pad { pads, value }, only_data)
        }
        PendingOp::Slice => {
            let get = |i: usize| -> Result<Vec<i64>> {
                Ok(constant(i, "slice parameter")?
                    .map(|c| c.to_i64())
                    .unwrap_or_default())
            };
            let steps = get(4)?;
            if steps.contains(&0) {
                return Err(node_error(g, n, "slice step 0"));
            }
            (
                Op::Slice {
                    starts: get(1)?,
                    ends: get(2)?,
                    axes: get(3)?,
                    steps,
                },
                only_data,
            )
        }
        PendingOp::Unsqueeze => (
            Op::Unsqueeze {
                axes: required(1, "axes")?.to_i64(),
            },
            only_data,
        ),
        PendingOp::SplitPart {
            axis,
            index,
            parts,
            sizes,
        } => (
            Op::SplitPart {
                axis: *axis,
                index: *index,
                parts: *parts,
                sizes: match constant(1, "split")? {
                    Some(c) => c.to_i64(),
                    None => sizes.clone().unwrap_or_default(),
                },
            },
            only_data,
        ),
        PendingOp::ReduceMean { keepdims } => (
            Op::ReduceMean {
                axes: constant(1, "axes")?.map(|c| c.to_i64()).unwrap_or_default(),
                keepdims: *keepdims,
            },
            only_data,
        ),
        PendingOp::Squeeze => (
            Op::Squeeze {
                axes: constant(1, "axes")?.map(|c| c.to_i64()).unwrap_or_default(),
            },
            only_data,
        ),
        PendingOp::MatMul => {
            let b = required(1, "right operand")?;
            if b.shape.len() != 2 {
                return Err(node_error(
                    g,
                    n,
                    "MatMul supports a 2-D constant right operand only",
                ));
            }
            let w = f32s(b, "right operand")?;
            (
                Op::Linear(LinearOp::new(b.shape[0], b.shape[1], &w, None, 1.0)),
                only_data,
            )
        }
        PendingOp::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            if *trans_a {
                return Err(node_error(g, n, "Gemm with transA = 1 is not supported"));
            }
            let b = required(1, "B")?;
            if b.shape.len() != 2 {
                return Err(node_error(g, n, "B must be 2-D"));
            }
            let w = f32s(b, "B")?;
            let (k, nn) = if *trans_b {
                (b.shape[1], b.shape[0])
            } else {
                (b.shape[0], b.shape[1])
            };
            let weight = if *trans_b {
                let mut t = vec![0.0; w.len()];
                layout::transpose(&w, &b.shape, &[1, 0], &mut t);
                t
            } else {
                w
            };
            let bias = match constant(2, "C")? {
                None => None,
                Some(c) if c.len() == nn => Some(c.to_f32().iter().map(|x| x * beta).collect()),
                Some(c) if c.len() == 1 => Some(vec![c.to_f32()[0] * beta; nn]),
                Some(_) => {
                    return Err(node_error(g, n, "C must broadcast over the output columns"))
                }
            };
            (
                Op::Linear(LinearOp::new(k, nn, &weight, bias, *alpha)),
                only_data,
            )
        }
    })
}

/// Evaluates a node on constant inputs; `Ok(None)` if the op is not folded.
fn eval_const(g: &Graph, n: &Node, inputs: &[&Const]) -> Result<Option<Const>> {
    let bad = |msg: String| node_error(g, n, msg);
    let first = || {
        inputs
            .first()
            .copied()
            .ok_or_else(|| node_error(g, n, "missing input"))
    };
    let out = match &n.op {
        Op::Identity => first()?.clone(),
        Op::Cast { to } => {
            let c = first()?;
            match *to {
                1 | 10 | 11 => Const::f32(c.shape.clone(), c.to_f32()),
                2 | 3 | 5 | 6 | 7 | 9 | 12 | 13 => Const::i64(c.shape.clone(), c.to_i64()),
                other => return Err(bad(format!("Cast to data type {other} is not supported"))),
            }
        }
        Op::Shape => {
            let c = first()?;
            Const::i64(
                vec![c.shape.len()],
                c.shape.iter().map(|&d| d as i64).collect(),
            )
        }
        Op::ConstantOfShape { value } => {
            let dims = first()?.to_i64();
            let shape = crate::ops::checked_shape(&g.source, &format!("node '{}'", n.name), &dims)?;
            let len: usize = shape.iter().product();
            match &value.data {
                ConstData::F32(v) => Const::f32(shape, vec![v[0]; len]),
                ConstData::I64(v) => Const::i64(shape, vec![v[0]; len]),
            }
        }
        Op::Unsqueeze { axes } => {
            let c = first()?;
            let rank = c.shape.len() + axes.len();
            let mut ax: Vec<usize> = axes
                .iter()
                .map(|&a| {
                    normalize_axis(a, rank).ok_or_else(|| bad(format!("axis {a} out of range")))
                })
                .collect::<Result<_>>()?;
            ax.sort_unstable();
            let mut shape = c.shape.clone();
            for a in ax {
                shape.insert(a.min(shape.len()), 1);
            }
            c.reshaped(shape)
        }
        Op::Squeeze { axes } => {
            let c = first()?;
            let ax: Vec<usize> = axes
                .iter()
                .filter_map(|&a| normalize_axis(a, c.shape.len()))
                .collect();
            let shape = c
                .shape
                .iter()
                .enumerate()
                .filter(|&(i, &d)| {
                    !(if ax.is_empty() {
                        d == 1
                    } else {
                        ax.contains(&i)
                    })
                })
                .map(|(_, &d)| d)
                .collect();
            c.reshaped(shape)
        }
        Op::Reshape { shape, allowzero } => {
            let c = first()?;
            let s = reshape_target(&c.shape, shape, *allowzero)
                .ok_or_else(|| bad(format!("cannot reshape {:?} to {shape:?}", c.shape)))?;
            c.reshaped(s)
        }
        Op::Flatten { .. } => {
            let c = first()?;
            let s = n.op.output_shape(&[&c.shape])?;
            c.reshaped(s)
        }
        Op::Transpose { perm } => {
            let c = first()?;
            let perm: Vec<usize> = if perm.is_empty() {
                (0..c.shape.len()).rev().collect()
            } else {
                perm.clone()
            };
            if perm.len() != c.shape.len() {
                return Err(bad("permutation rank differs from input rank".into()));
            }
            let shape: Vec<usize> = perm.iter().map(|&p| c.shape[p]).collect();
            let idx = index_map(&c.shape, c.len(), |src, dst| {
                layout::transpose(src, &c.shape, &perm, dst)
            });
            c.gather_flat(shape, &idx)
        }
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => {
            let c = first()?;
            let r = resolve_slice(&c.shape, starts, ends, axes, steps)
                .ok_or_else(|| bad("bad slice".into()))?;
            let shape: Vec<usize> = r.iter().map(|a| a.count).collect();
            let idx = index_map(&c.shape, shape.iter().product(), |src, dst| {
                layout::slice(src, &c.shape, &r, dst)
            });
            c.gather_flat(shape, &idx)
        }
        Op::Concat { axis } => {
            let shapes: Vec<&[usize]> = inputs.iter().map(|c| c.shape.as_slice()).collect();
            let shape = n.op.output_shape(&shapes)?;
            let a = normalize_axis(*axis, shape.len())
                .ok_or_else(|| bad("axis out of range".into()))?;
            if inputs.iter().all(|c| matches!(c.data, ConstData::I64(_))) {
                let datas: Vec<Vec<i64>> = inputs.iter().map(|c| c.to_i64()).collect();
                let parts: Vec<(&[i64], &[usize])> = datas
                    .iter()
                    .zip(&shapes)
                    .map(|(d, s)| (d.as_slice(), *s))
                    .collect();
                let mut out = vec![0; shape.iter().product()];
                layout::concat(&parts, a, &mut out, usize::MAX);
                Const::i64(shape, out)
            } else {
                let datas: Vec<Vec<f32>> = inputs.iter().map(|c| c.to_f32()).collect();
                let parts: Vec<(&[f32], &[usize])> = datas
                    .iter()
                    .zip(&shapes)
                    .map(|(d, s)| (d.as_slice(), *s))
                    .collect();
                let mut out = vec![0.0; shape.iter().product()];
                layout::concat(&parts, a, &mut out, usize::MAX);
                Const::f32(shape, out)
            }
        }
        Op::Gather { axis } => {
            let (c, ind) = match inputs {
                [c, i] => (*c, *i),
                _ => return Err(bad("Gather needs two inputs".into())),
            };
            let a = normalize_axis(*axis, c.shape.len())
                .ok_or_else(|| bad("axis out of range".into()))?;
            let dim = c.shape[a] as i64;
            let outer: usize = c.shape[..a].iter().product();
            let inner: usize = c.shape[a + 1..].iter().product();
            let mut idx = Vec::new();
            for o in 0..outer {
                for &i in &ind.to_i64() {
                    let i = if i < 0 { i + dim } else { i };
                    if !(0..dim).contains(&i) {
                        return Err(bad(format!("index {i} out of range")));
                    }
                    let base = (o * c.shape[a] + i as usize) * inner;
                    idx.extend(base..base + inner);
                }
            }
            let mut shape = c.shape[..a].to_vec();
            shape.extend(&ind.shape);
            shape.extend(&c.shape[a + 1..]);
            c.gather_flat(shape, &idx)
        }
        Op::Unary(u) => {
            let c = first()?;
            let v = c.to_f32().iter().map(|&x| u.at(x)).collect();
            Const::f32(c.shape.clone(), v)
        }
        Op::Neg | Op::Ceil | Op::Floor => {
            let c = first()?;
            match &c.data {
                ConstData::I64(v) => {
                    let neg = matches!(n.op, Op::Neg);
                    let out = v.iter().map(|&x| if neg { x.wrapping_neg() } else { x });
                    Const::i64(c.shape.clone(), out.collect())
                }
                ConstData::F32(v) => {
                    let f = |x: f32| match n.op {
                        Op::Neg => -x,
                        Op::Ceil => x.ceil(),
                        _ => x.floor(),
                    };
                    Const::f32(c.shape.clone(), v.iter().map(|&x| f(x)).collect())
                }
            }
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Max | Op::Min => {
            let (x, y) = match inputs {
                [x, y] => (*x, *y),
                _ => return Err(bad("needs two inputs".into())),
            };
            let shape = broadcast_shapes(&x.shape, &y.shape)
                .ok_or_else(|| bad(format!("cannot broadcast {:?} with {:?}", x.shape, y.shape)))?;
            let len = shape.iter().product();
            let op = n.op.clone();
            match (&x.data, &y.data) {
                (ConstData::I64(a), ConstData::I64(b)) => {
                    let mut out = vec![0; len];
                    layout::broadcast_binary(a, &x.shape, b, &y.shape, &mut out, &shape, |p, q| {
                        match op {
                            Op::Add => p.wrapping_add(q),
                            Op::Sub => p.wrapping_sub(q),
                            Op::Mul => p.wrapping_mul(q),
                            Op::Max => p.max(q),
                            Op::Min => p.min(q),
                            _ => p.checked_div(q).unwrap_or(0),
                        }
                    });
                    Const::i64(shape, out)
                }
                _ => {
                    let (a, b) = (x.to_f32(), y.to_f32());
                    let mut out = vec![0.0; len];
                    layout::broadcast_binary(
                        &a,
                        &x.shape,
                        &b,
                        &y.shape,
                        &mut out,
                        &shape,
                        |p, q| match op {
                            Op::Add => p + q,
                            Op::Sub => p - q,
                            Op::Mul => p * q,
                            Op::Max => p.max(q),
                            Op::Min => p.min(q),
                            _ => p / q,
                        },
                    );
                    Const::f32(shape, out)
                }
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

/// Flat source indices of a layout op, found by running it on the index sequence.
fn index_map(shape: &[usize], out_len: usize, op: impl Fn(&[usize], &mut [usize])) -> Vec<usize> {
    let src: Vec<usize> = (0..shape.iter().product()).collect();
    let mut dst = vec![0usize; out_len];
    op(&src, &mut dst);
    dst
}
