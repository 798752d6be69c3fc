//! Shapes an export computes at run time from the input (`Shape` of a runtime value feeding
//! Gather, Sub, Concat, ... into a Reshape target or a Pad's `pads`), folded to constants
//! once the image size is known.
//!
//! PyTorch writes `x.view(x.size(0), -1)` and TF-ported "same" padding this way. With the
//! image size fixed, every such shape is known except the batch, so the graph is folded
//! twice, with a batch of 1 and of 2: `Shape` of a value whose shape the inference knows
//! becomes a constant, the constant subgraphs after it fold, and that repeats until nothing
//! changes. What does not depend on the batch comes out the same both times and is kept. A
//! Reshape target that differs only in its first entry, 1 against 2 where its input's first
//! axis is the batch, gets ONNX's "copy this dimension" (0) there. Any other dependence on
//! the batch is a load-time error naming the node.

use super::fold::fold_what_is_constant;
use super::{node_error, MISSING};
use crate::error::Result;
use crate::graph::{Const, Graph, ValueId};
use crate::ops::Op;
use std::collections::HashMap;

/// The shape of each runtime value the inference could tell.
type Shapes = HashMap<ValueId, Vec<usize>>;

/// Folds the runtime shape computations of `g` for images of `image_shape` (`[c, h, w]`).
pub fn fold_runtime_shapes(g: &mut Graph, image_shape: &[usize]) -> Result<()> {
    if !g.nodes.iter().any(|n| matches!(n.op, Op::Shape)) {
        return Ok(());
    }
    let (one, one_shapes) = folded_for_batch(g.clone(), image_shape, 1)?;
    let (two, two_shapes) = folded_for_batch(g.clone(), image_shape, 2)?;
    *g = reconcile(one, &two, (&one_shapes, &two_shapes))?;
    Ok(())
}

/// `g` with every computable `Shape` replaced by its value at batch `n`, and folded; with
/// the shapes inferred in the last round.
fn folded_for_batch(mut g: Graph, image_shape: &[usize], n: usize) -> Result<(Graph, Shapes)> {
    loop {
        fold_what_is_constant(&mut g)?;
        let shapes = infer_shapes(&g, image_shape, n)?;
        let mut replaced = vec![false; g.nodes.len()];
        for (i, node) in g.nodes.iter().enumerate() {
            if !matches!(node.op, Op::Shape) {
                continue;
            }
            if let Some(s) = node.inputs.first().and_then(|v| shapes.get(v)) {
                let dims = s.iter().map(|&d| d as i64).collect();
                g.constants
                    .insert(node.outputs[0], Const::i64(vec![s.len()], dims));
                replaced[i] = true;
            }
        }
        if !replaced.contains(&true) {
            return Ok((g, shapes));
        }
        let mut k = replaced.iter();
        g.nodes.retain(|_| !*k.next().unwrap_or(&false));
    }
}

/// The shape of every runtime value the op shapes can tell, for a batch of `n`.
fn infer_shapes(g: &Graph, image_shape: &[usize], n: usize) -> Result<Shapes> {
    let mut shapes: Shapes = HashMap::new();
    if let Some(&input) = g.inputs.first() {
        let mut s = vec![n];
        s.extend(image_shape);
        shapes.insert(input, s);
    }
    for i in g.topological_order()? {
        let node = &g.nodes[i];
        let ins: Option<Vec<Vec<usize>>> = node
            .inputs
            .iter()
            .filter(|&&v| v != MISSING)
            .map(|v| {
                shapes
                    .get(v)
                    .cloned()
                    .or_else(|| g.constants.get(v).map(|c| c.shape.clone()))
            })
            .collect();
        let Some(ins) = ins else { continue };
        let refs: Vec<&[usize]> = ins.iter().map(Vec::as_slice).collect();
        if let (Ok(out), Some(&o)) = (node.op.output_shape(&refs), node.outputs.first()) {
            shapes.insert(o, out);
        }
    }
    Ok(shapes)
}

/// The graph folded at batch 1, checked against the one folded at batch 2: the same nodes
/// and operands, except Reshape targets that copy the batch (see the module doc).
fn reconcile(
    mut one: Graph,
    two: &Graph,
    (one_shapes, two_shapes): (&Shapes, &Shapes),
) -> Result<Graph> {
    // Whether value `v`'s first axis is the batch (1, then 2).
    let batched = |v: Option<&ValueId>| {
        let first = |s: &Shapes| v.and_then(|v| s.get(v)?.first().copied());
        first(one_shapes) == Some(1) && first(two_shapes) == Some(2)
    };
    let batch_dependent = |g: &Graph, i: usize| {
        node_error(
            g,
            &g.nodes[i],
            "its shape computation depends on the batch size in a way haste cannot fold",
        )
    };
    if one.nodes.len() != two.nodes.len() {
        let i = one.nodes.len().min(two.nodes.len()).saturating_sub(1);
        return Err(batch_dependent(&one, i));
    }
    for i in 0..one.nodes.len() {
        let (a, b) = (&one.nodes[i], &two.nodes[i]);
        if a.inputs != b.inputs || a.outputs != b.outputs {
            return Err(batch_dependent(&one, i));
        }
        let same_operands = a
            .inputs
            .iter()
            .all(|v| one.constants.get(v) == two.constants.get(v));
        if !same_operands {
            return Err(batch_dependent(&one, i));
        }
        let fixed = match (&a.op, &b.op) {
            (x, y) if x == y => None,
            (
                Op::Reshape {
                    shape: s1,
                    allowzero: false,
                },
                Op::Reshape { shape: s2, .. },
            ) if s1.len() == s2.len()
                && s1.first() == Some(&1)
                && s2.first() == Some(&2)
                && s1[1..] == s2[1..]
                && batched(a.inputs.first()) =>
            {
                let mut shape = s1.clone();
                shape[0] = 0;
                Some(Op::Reshape {
                    shape,
                    allowzero: false,
                })
            }
            _ => return Err(batch_dependent(&one, i)),
        };
        if let Some(op) = fixed {
            one.nodes[i].op = op;
        }
    }
    Ok(one)
}
