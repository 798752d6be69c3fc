//! Shape inference for the runtime ops, and the shape rules shared with constant folding.

use super::Op;
use crate::error::{Error, Result};

fn shape_err(op: &Op, msg: impl std::fmt::Display) -> Error {
    Error::Shape(format!("{}: {msg}", op.kind()))
}

/// Normalizes a possibly negative axis for a tensor of `rank` dimensions.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Resolves an ONNX Reshape target (0 copies the input dimension unless `allowzero`, -1 infers).
pub fn reshape_target(input: &[usize], target: &[i64], allowzero: bool) -> Option<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i)?),
            t if t >= 0 => out.push(t as usize),
            _ => return None,
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return None;
        }
        out[i] = total / known;
    } else if known != total {
        return None;
    }
    Some(out)
}

/// A resolved slice along one axis: `count` elements from `start`, every `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisSlice {
    pub start: i64,
    pub step: i64,
    pub count: usize,
}

/// Resolves ONNX Slice parameters against a shape (clamping as the spec says).
pub fn resolve_slice(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: &[i64],
    steps: &[i64],
) -> Option<Vec<AxisSlice>> {
    let rank = shape.len();
    let mut out: Vec<AxisSlice> = shape
        .iter()
        .map(|&d| AxisSlice {
            start: 0,
            step: 1,
            count: d,
        })
        .collect();
    if starts.len() != ends.len() {
        return None;
    }
    for i in 0..starts.len() {
        let axis = match axes.get(i) {
            Some(&a) => normalize_axis(a, rank)?,
            None => i,
        };
        let step = steps.get(i).copied().unwrap_or(1);
        if step == 0 || axis >= rank {
            return None;
        }
        let dim = shape[axis] as i64;
        let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let fix = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (start, end) = if step > 0 {
            (clamp(fix(starts[i]), 0, dim), clamp(fix(ends[i]), 0, dim))
        } else {
            (
                clamp(fix(starts[i]), 0, dim - 1),
                clamp(fix(ends[i]), -1, dim - 1),
            )
        };
        let count = if step > 0 {
            if end > start {
                (end - start + step - 1) / step
            } else {
                0
            }
        } else if start > end {
            (start - end + (-step) - 1) / (-step)
        } else {
            0
        };
        out[axis] = AxisSlice {
            start,
            step,
            count: count as usize,
        };
    }
    Some(out)
}

impl Op {
    /// Output shape of a runtime op from its input shapes (batch axis included).
    pub fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let first = || {
            inputs
                .first()
                .copied()
                .ok_or_else(|| shape_err(self, "missing input"))
        };
        let image = |s: &[usize]| -> Result<(usize, usize, usize, usize)> {
            match *s {
                [n, c, h, w] => Ok((n, c, h, w)),
                _ => Err(shape_err(self, format!("expects an NCHW input, got {s:?}"))),
            }
        };
        match self {
            Op::Conv(c) => {
                let (n, ch, h, w) = image(first()?)?;
                let p = &c.params;
                if ch != p.c_in {
                    return Err(shape_err(
                        self,
                        format!("input has {ch} channels, weights expect {}", p.c_in),
                    ));
                }
                let (oh, ow) = p.out_hw(h, w);
                if oh == 0 || ow == 0 {
                    return Err(shape_err(
                        self,
                        format!("kernel does not fit a {h}x{w} input"),
                    ));
                }
                let out = vec![n, p.c_out, oh, ow];
                match inputs.get(1) {
                    Some(r) if c.residual.is_some() && *r != out.as_slice() => Err(shape_err(
                        self,
                        format!("residual input {r:?} differs from the output {out:?}"),
                    )),
                    _ => Ok(out),
                }
            }
            Op::BatchNorm(b) => {
                let s = first()?;
                if s.len() < 2 || s[1] != b.scale.len() {
                    return Err(shape_err(
                        self,
                        format!("input {s:?} vs {} channels", b.scale.len()),
                    ));
                }
                Ok(s.to_vec())
            }
            Op::ChannelShuffle { groups } => {
                let s = first()?;
                if s.len() != 4 || *groups == 0 || s[1] % groups != 0 {
                    return Err(shape_err(self, format!("input {s:?} in {groups} groups")));
                }
                Ok(s.to_vec())
            }
            Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Clip { .. }
            | Op::Activation(_)
            | Op::Unary(_)
            | Op::Identity => Ok(first()?.to_vec()),
            Op::LayerNorm(l) => {
                let s = first()?;
                let a = normalize_axis(l.axis, s.len())
                    .ok_or_else(|| shape_err(self, "axis out of range"))?;
                let d: usize = s[a..].iter().product();
                if d != l.scale.len() {
                    return Err(shape_err(
                        self,
                        format!("normalizes {d} values, scale holds {}", l.scale.len()),
                    ));
                }
                Ok(s.to_vec())
            }
            Op::Add | Op::AddActivation(_) | Op::Sub | Op::Mul | Op::Div => {
                if inputs.len() != 2 {
                    return Err(shape_err(self, "needs two inputs"));
                }
                broadcast_shapes(inputs[0], inputs[1]).ok_or_else(|| {
                    shape_err(
                        self,
                        format!("cannot broadcast {:?} with {:?}", inputs[0], inputs[1]),
                    )
                })
            }
            Op::MaxPool(p) | Op::AveragePool(p) => {
                let (n, c, h, w) = image(first()?)?;
                let (oh, ow) = p.out_hw(h, w);
                if oh == 0 || ow == 0 {
                    return Err(shape_err(
                        self,
                        format!("window does not fit a {h}x{w} input"),
                    ));
                }
                Ok(vec![n, c, oh, ow])
            }
            Op::GlobalAveragePool => {
                let (n, c, _, _) = image(first()?)?;
                Ok(vec![n, c, 1, 1])
            }
            Op::Flatten { axis } => {
                let s = first()?;
                let a = if *axis == s.len() as i64 {
                    s.len()
                } else {
                    normalize_axis(*axis, s.len())
                        .ok_or_else(|| shape_err(self, "axis out of range"))?
                };
                Ok(vec![s[..a].iter().product(), s[a..].iter().product()])
            }
            Op::ReduceMean { axes, keepdims } => {
                let s = first()?;
                let reduced = reduced_axes(axes, s.len())
                    .ok_or_else(|| shape_err(self, "axis out of range"))?;
                Ok(s.iter()
                    .enumerate()
                    .filter_map(|(k, &d)| match (reduced[k], keepdims) {
                        (false, _) => Some(d),
                        (true, true) => Some(1),
                        (true, false) => None,
                    })
                    .collect())
            }
            Op::SplitPart { .. } => {
                let s = first()?;
                let r = self
                    .split_range(s)
                    .ok_or_else(|| shape_err(self, "parts do not fit the axis"))?;
                Ok(s.iter().zip(&r).map(|(_, a)| a.count).collect())
            }
            Op::Softmax { axis } => {
                let s = first()?;
                normalize_axis(*axis, s.len())
                    .ok_or_else(|| shape_err(self, "axis out of range"))?;
                Ok(s.to_vec())
            }
            Op::Reshape { shape, allowzero } => {
                let s = first()?;
                reshape_target(s, shape, *allowzero)
                    .ok_or_else(|| shape_err(self, format!("cannot reshape {s:?} to {shape:?}")))
            }
            Op::Linear(l) => {
                let s = first()?;
                match s.last() {
                    Some(&k) if k == l.k => {
                        let mut out = s.to_vec();
                        if let Some(last) = out.last_mut() {
                            *last = l.n;
                        }
                        Ok(out)
                    }
                    _ => Err(shape_err(
                        self,
                        format!("input {s:?} does not end in {}", l.k),
                    )),
                }
            }
            Op::Pad { pads, .. } => {
                let s = first()?;
                if pads.len() != 2 * s.len() {
                    return Err(shape_err(
                        self,
                        format!("{} pads for rank {}", pads.len(), s.len()),
                    ));
                }
                let mut out = Vec::with_capacity(s.len());
                for (i, &d) in s.iter().enumerate() {
                    let v = d as i64 + pads[i] + pads[i + s.len()];
                    if v < 0 {
                        return Err(shape_err(self, "padding removes more than the dimension"));
                    }
                    out.push(v as usize);
                }
                Ok(out)
            }
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            } => {
                let s = first()?;
                let r = resolve_slice(s, starts, ends, axes, steps)
                    .ok_or_else(|| shape_err(self, format!("bad slice of {s:?}")))?;
                Ok(r.iter().map(|a| a.count).collect())
            }
            Op::Concat { axis } => {
                let s = first()?;
                let a = normalize_axis(*axis, s.len())
                    .ok_or_else(|| shape_err(self, "axis out of range"))?;
                let mut out = s.to_vec();
                out[a] = 0;
                for t in inputs {
                    if t.len() != s.len() || t.iter().enumerate().any(|(i, &d)| i != a && d != s[i])
                    {
                        return Err(shape_err(
                            self,
                            format!("cannot concatenate {s:?} and {t:?}"),
                        ));
                    }
                    out[a] += t[a];
                }
                Ok(out)
            }
            Op::Transpose { perm } => {
                let s = first()?;
                if perm.len() != s.len() {
                    return Err(shape_err(self, "permutation rank differs from input rank"));
                }
                Ok(perm.iter().map(|&p| s[p]).collect())
            }
            _ => Err(shape_err(self, "only valid on constants (load time)")),
        }
    }
}

/// Per axis of a rank-`rank` tensor, whether ReduceMean's `axes` reduces it (all of them when
/// `axes` is empty); `None` for an axis out of range.
pub fn reduced_axes(axes: &[i64], rank: usize) -> Option<Vec<bool>> {
    let mut reduced = vec![axes.is_empty(); rank];
    for &a in axes {
        reduced[normalize_axis(a, rank)?] = true;
    }
    Some(reduced)
}

/// Whether ReduceMean's `axes` on a `rank`-axis input reduce exactly the two spatial axes of
/// an NCHW image (`x.mean([2, 3])`, as MNASNet and others end): a global average pooling,
/// run as one in either memory order.
pub fn reduces_image_plane(axes: &[i64], rank: usize) -> bool {
    rank == 4 && reduced_axes(axes, rank).as_deref() == Some(&[false, false, true, true])
}

impl Op {
    /// The part of `shape` a [`Op::SplitPart`] keeps, as slices per axis; `None` for another
    /// op or parts that do not fit.
    pub fn split_range(&self, shape: &[usize]) -> Option<Vec<AxisSlice>> {
        let Op::SplitPart {
            axis,
            index,
            parts,
            sizes,
        } = self
        else {
            return None;
        };
        let a = normalize_axis(*axis, shape.len())?;
        let d = shape[a];
        let (start, count) = if sizes.is_empty() {
            // Equal parts (the last one smaller when they do not divide the axis).
            let per = d.div_ceil((*parts).max(1));
            let start = (index * per).min(d);
            (start, per.min(d - start))
        } else {
            let sizes: Option<Vec<usize>> =
                sizes.iter().map(|&s| usize::try_from(s).ok()).collect();
            let sizes = sizes?;
            if sizes.iter().sum::<usize>() != d || *index >= sizes.len() {
                return None;
            }
            (sizes[..*index].iter().sum(), sizes[*index])
        };
        let mut r: Vec<AxisSlice> = shape
            .iter()
            .map(|&n| AxisSlice {
                start: 0,
                step: 1,
                count: n,
            })
            .collect();
        r[a] = AxisSlice {
            start: start as i64,
            step: 1,
            count,
        };
        Some(r)
    }
}
