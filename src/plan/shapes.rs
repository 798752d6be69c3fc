//! Shape inference over the plan's steps, and whether the network can run image by image.

use super::{Plan, Src};
use crate::error::{Error, Result};
use crate::ops::Op;

/// Per step: the shapes of its inputs, and of its output.
pub(crate) type StepShapes = (Vec<Vec<Vec<usize>>>, Vec<Vec<usize>>);

impl Plan {
    /// Computes every step's shapes for a batch of `n` (cached until `n` changes).
    pub(crate) fn infer_shapes(&mut self, n: usize) -> Result<()> {
        if self.shapes_batch == n {
            return Ok(());
        }
        (self.in_shapes, self.out_shapes) = self.shapes_for(n)?;
        self.shapes_batch = n;
        Ok(())
    }

    /// Every step's input shapes and output shape for a batch of `n`.
    pub(crate) fn shapes_for(&self, n: usize) -> Result<StepShapes> {
        let mut input_shape = vec![n];
        input_shape.extend(&self.image_shape);
        // Every tensor the plan will allocate is checked before anything is allocated.
        let limit = crate::ops::MAX_TENSOR_ELEMENTS;
        let too_large = |what: String, shape: &[usize]| {
            let fits = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .is_some_and(|e| e <= limit);
            if fits {
                Ok(())
            } else {
                Err(Error::Limits {
                    path: self.graph.source.clone(),
                    message: format!(
                        "{what} of shape {shape:?} (batch {n}) exceeds the limit of {limit} elements"
                    ),
                })
            }
        };
        too_large("the input".into(), &input_shape)?;
        let mut slot_shape: Vec<Vec<usize>> = vec![vec![]; self.slots.len()];
        let mut in_shapes = Vec::with_capacity(self.steps.len());
        let mut out_shapes = Vec::with_capacity(self.steps.len());
        for s in &self.steps {
            let ins: Vec<Vec<usize>> = s
                .inputs
                .iter()
                .map(|src| match *src {
                    Src::Input => input_shape.clone(),
                    Src::Slot(i) => slot_shape[i].clone(),
                    Src::Const(i) => self.consts[i].0.clone(),
                })
                .collect();
            let node = &self.graph.nodes[s.node];
            let refs: Vec<&[usize]> = ins.iter().map(Vec::as_slice).collect();
            let out = node.op.output_shape(&refs).map_err(|e| {
                Error::model(
                    &self.graph.source,
                    format!("node '{}': {e} (input shapes {ins:?})", node.name),
                )
            })?;
            too_large(format!("the output of node '{}'", node.name), &out)?;
            slot_shape[s.output] = out.clone();
            in_shapes.push(ins);
            out_shapes.push(out);
        }
        Ok((in_shapes, out_shapes))
    }

    /// True when every step computes each image from that image alone, so that running the
    /// network image by image gives the batch's result: every runtime operand and output has the
    /// batch as its first axis (checked on batches of 1 and 2), and no op works along it.
    pub(crate) fn image_mode_ok(&self) -> bool {
        let Ok((in2, out2)) = self.shapes_for(2) else {
            return false;
        };
        let batched = |one: &[usize], two: &[usize]| {
            one.len() == two.len() && one.first() == Some(&1) && two[0] == 2 && one[1..] == two[1..]
        };
        self.steps.iter().enumerate().all(|(i, s)| {
            let along_batch = match &self.graph.nodes[s.node].op {
                Op::Slice { axes, .. } => {
                    axes.is_empty() || axes.iter().any(|&a| a == 0 || a == -(out2[i].len() as i64))
                }
                Op::Concat { axis } | Op::SplitPart { axis, .. } => {
                    *axis == 0 || *axis == -(out2[i].len() as i64)
                }
                Op::Transpose { perm } => perm.first() != Some(&0),
                Op::Flatten { axis } => *axis == 0,
                Op::ReduceMean { axes, .. } => {
                    let rank = in2[i][0].len() as i64;
                    axes.is_empty() || axes.iter().any(|&a| a == 0 || a == -rank)
                }
                Op::Softmax { axis } => *axis == 0 || *axis == -(out2[i].len() as i64),
                Op::LayerNorm(l) => l.axis == 0 || l.axis == -(out2[i].len() as i64),
                _ => false,
            };
            let operands_ok = s
                .inputs
                .iter()
                .zip(&self.img_in_shapes[i])
                .zip(&in2[i])
                .all(|((src, one), two)| matches!(src, Src::Const(_)) || batched(one, two));
            !along_batch && operands_ok && batched(&self.img_out_shapes[i], &out2[i])
        })
    }
}
