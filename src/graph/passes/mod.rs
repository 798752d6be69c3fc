//! Graph simplification passes, run in order by [`simplify`]:
//! 1. [`fold_constants`]: resolve ops whose parameters arrive as constant inputs (Conv weights,
//!    Reshape shapes, Pad pads ...) and evaluate every node whose inputs are all constants
//!    (the CIFAR ResNets' zero-pad shortcut is such a subgraph).
//!    Lives in `fold.rs`.
//! 2. [`fuse_batchnorm`]: fold an inference BatchNormalization into the Conv before it.
//! 3. [`remove_identities`], [`fuse_silu`] (`x * sigmoid(x)` is one activation),
//!    [`fuse_gelu`] (so is GELU's five-op form) and [`fold_linear_bias`] (`MatMul + b`,
//!    `gelu.rs`), then [`fuse_activations`] and [`fuse_add_activations`] (a ReLU runs
//!    inside the Conv, Linear, BatchNormalization or residual Add before it).
//! 4. [`pool_before_pointwise_conv`]: a global average pooling after a linear 1x1 Conv moves
//!    in front of it (the Conv then runs on one pixel), then [`prune_dead_nodes`] and [`prune_dead_constants`].
//!
//! [`fold_runtime_shapes`] (shapes an export computes from the input at run time) runs
//! before these, [`fuse_residual_adds`], [`fold_channel_scales`] (`scales.rs`) and
//! [`fold_channel_shuffles`] (`shuffles.rs`) after them: they need the image shape, which [`crate::Model`] knows from the model's
//! declared input.
//!
//! Each pass keeps the graph consistent; [`check`] verifies it afterwards.

mod fold;
mod gelu;
mod runtime_shapes;
mod scales;
mod shuffles;

pub use fold::fold_constants;
use fold::is_load_time_only;
pub use gelu::{fold_linear_bias, fuse_gelu};
pub use runtime_shapes::fold_runtime_shapes;
pub use scales::fold_channel_scales;
pub use shuffles::fold_channel_shuffles;

use super::{Graph, Node, ValueId};
use crate::error::{Error, Result};
use crate::ops::{Activation, ConvOp, Op};
use std::collections::HashMap;

/// Marks an optional ONNX input that was left empty.
pub const MISSING: ValueId = usize::MAX;

/// Runs every pass and checks the result.
pub fn simplify(mut g: Graph) -> Result<Graph> {
    fold_constants(&mut g)?;
    fuse_batchnorm(&mut g);
    remove_identities(&mut g);
    fuse_silu(&mut g);
    fuse_gelu(&mut g);
    // The Sigmoids SiLU replaced (and GELU's Div, Erf and Add) still read the values the
    // activations would fuse into.
    prune_dead_nodes(&mut g);
    fold_linear_bias(&mut g);
    fuse_activations(&mut g);
    fuse_add_activations(&mut g);
    pool_before_pointwise_conv(&mut g);
    prune_dead_nodes(&mut g);
    prune_dead_constants(&mut g);
    check(&g)?;
    Ok(g)
}

pub(crate) fn node_error(g: &Graph, n: &Node, msg: impl std::fmt::Display) -> Error {
    Error::model(
        &g.source,
        format!("node '{}' ({}): {msg}", n.name, n.op.kind()),
    )
}

/// Number of nodes reading each value (graph outputs count as readers).
fn reader_counts(g: &Graph) -> HashMap<ValueId, usize> {
    let mut readers: HashMap<ValueId, usize> = HashMap::new();
    for n in &g.nodes {
        for &i in &n.inputs {
            *readers.entry(i).or_default() += 1;
        }
    }
    for &o in &g.outputs {
        *readers.entry(o).or_default() += 1;
    }
    readers
}

/// The node producing each value.
fn producer_of(g: &Graph) -> HashMap<ValueId, usize> {
    let mut producer = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for &o in &n.outputs {
            producer.insert(o, i);
        }
    }
    producer
}

/// Folds `BatchNorm(Conv(x))` into the Conv's weights and bias when the Conv output has no
/// other reader: `w' = w * s[co]`, `b' = b * s[co] + t[co]`.
pub fn fuse_batchnorm(g: &mut Graph) {
    fuse_into_conv(g, |follower, conv| {
        let Op::BatchNorm(bn) = follower else {
            return false;
        };
        if conv.params.c_out != bn.scale.len() || conv.activation != Activation::None {
            return false;
        }
        let per_out = conv.weights.len() / conv.params.c_out;
        for (co, chunk) in conv.weights.chunks_mut(per_out).enumerate() {
            chunk.iter_mut().for_each(|w| *w *= bn.scale[co]);
        }
        let bias = conv.bias.get_or_insert_with(|| vec![0.0; bn.scale.len()]);
        for ((b, s), t) in bias.iter_mut().zip(&bn.scale).zip(&bn.shift) {
            *b = *b * s + t;
        }
        true
    });
}

/// Fuses a Relu / LeakyRelu / Clip into the Conv before it, so the activation runs while the
/// output is still in cache.
pub fn fuse_activations(g: &mut Graph) {
    fuse_into_conv(g, |follower, conv| match Activation::of(follower) {
        Some(act) if conv.activation == Activation::None => {
            conv.activation = act;
            true
        }
        _ => false,
    });
    fuse_into_producer(g, |follower, producer| {
        match (Activation::of(follower), &mut *producer) {
            (Some(act), Op::Linear(l)) if l.activation == Activation::None => {
                l.activation = act;
                true
            }
            _ => false,
        }
    });
}

/// Rewrites `Mul(x, Sigmoid(x))` (either operand order), the way PyTorch exports SiLU, as one
/// SiLU activation of `x` when nothing else reads the Sigmoid's output; the Sigmoid is left
/// for [`prune_dead_nodes`]. The activation can then fuse into the op producing `x`.
pub fn fuse_silu(g: &mut Graph) {
    let readers = reader_counts(g);
    let producer = producer_of(g);
    let sigmoid_of = |v: ValueId| {
        let &p = producer.get(&v)?;
        let n = &g.nodes[p];
        let single = readers.get(&v) == Some(&1) && !g.outputs.contains(&v);
        (matches!(n.op, Op::Activation(Activation::Sigmoid)) && single).then(|| n.inputs[0])
    };
    let mut rewrites = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if !matches!(n.op, Op::Mul) || n.inputs.len() != 2 {
            continue;
        }
        let (a, b) = (n.inputs[0], n.inputs[1]);
        if sigmoid_of(b) == Some(a) {
            rewrites.push((i, a));
        } else if sigmoid_of(a) == Some(b) {
            rewrites.push((i, b));
        }
    }
    for (i, x) in rewrites {
        g.nodes[i].op = Op::Activation(Activation::Silu);
        g.nodes[i].inputs = vec![x];
    }
}

/// Fuses a Relu / LeakyRelu / Clip into the Add before it (a residual connection) or into
/// the BatchNormalization before it (one no Conv absorbed, as in a pre-activation network),
/// so the value is activated in the same pass over memory.
pub fn fuse_add_activations(g: &mut Graph) {
    fuse_into_producer(g, |follower, producer| {
        match (Activation::of(follower), &mut *producer) {
            (Some(act), Op::Add) => {
                *producer = Op::AddActivation(act);
                true
            }
            (Some(act), Op::BatchNorm(bn)) if bn.activation == Activation::None => {
                bn.activation = act;
                true
            }
            _ => false,
        }
    });
}

/// Folds single-input nodes into the Conv producing their input, when no one else reads the
/// Conv's output. `fold` updates the Conv and returns true, or returns false to leave the pair.
fn fuse_into_conv(g: &mut Graph, mut fold: impl FnMut(&Op, &mut ConvOp) -> bool) {
    fuse_into_producer(g, |follower, producer| match producer {
        Op::Conv(conv) => fold(follower, conv),
        _ => false,
    });
}

/// Folds single-input nodes into the node producing their (first) input, when no one else
/// reads that output. `fold` rewrites the producer's op and returns true, or returns false to
/// leave the pair.
fn fuse_into_producer(g: &mut Graph, mut fold: impl FnMut(&Op, &mut Op) -> bool) {
    let readers = reader_counts(g);
    let producer = producer_of(g);
    let mut remove = vec![false; g.nodes.len()];
    for i in 0..g.nodes.len() {
        let Some(&x) = g.nodes[i].inputs.first() else {
            continue;
        };
        let Some(&ci) = producer.get(&x) else {
            continue;
        };
        if ci == i || remove[ci] || readers.get(&x) != Some(&1) || g.outputs.contains(&x) {
            continue;
        }
        let (follower_op, follower_out, follower_name) = (
            g.nodes[i].op.clone(),
            g.nodes[i].outputs[0],
            g.nodes[i].name.clone(),
        );
        let producer = &mut g.nodes[ci];
        if !fold(&follower_op, &mut producer.op) {
            continue;
        }
        producer.outputs[0] = follower_out;
        producer.name = format!("{}+{}", producer.name, follower_name);
        remove[i] = true;
    }
    let mut r = remove.iter();
    g.nodes.retain(|_| !*r.next().unwrap_or(&false));
}

/// Moves a GlobalAveragePool in front of the 1x1 Conv feeding it, when that Conv is linear (no
/// activation fused in, stride 1, no padding) and nothing else reads its output. Averaging
/// commutes with a per-pixel affine map, `mean_p(W x_p + b) = W mean_p(x_p) + b`, so the Conv
/// then runs on one pixel instead of `h x w`: Tiny Darknet's 128 -> 1000 classifier goes from
/// 25 M multiply-adds per image to 128 K, about 5 % of the network's time. The result is the
/// same up to float rounding (the sums are taken in another order).
pub fn pool_before_pointwise_conv(g: &mut Graph) {
    let readers = reader_counts(g);
    let mut producer = producer_of(g);
    for pool in 0..g.nodes.len() {
        if !matches!(g.nodes[pool].op, Op::GlobalAveragePool) {
            continue;
        }
        let between = g.nodes[pool].inputs[0];
        let Some(&conv) = producer.get(&between) else {
            continue;
        };
        let linear_pointwise = match &g.nodes[conv].op {
            Op::Conv(c) => {
                c.params.is_pointwise() && c.activation == Activation::None && c.residual.is_none()
            }
            _ => false,
        };
        if !linear_pointwise
            || readers.get(&between) != Some(&1)
            || g.outputs.contains(&between)
            || g.nodes[conv].outputs.len() != 1
        {
            continue;
        }
        // The value between the two nodes now holds the pooled input: the pool reads the
        // Conv's input, the Conv reads the pool's output and writes what the pool wrote.
        let conv_input = g.nodes[conv].inputs[0];
        let pooled_output = g.nodes[pool].outputs[0];
        g.nodes[pool].inputs[0] = conv_input;
        g.nodes[pool].outputs[0] = between;
        g.nodes[conv].inputs[0] = between;
        g.nodes[conv].outputs[0] = pooled_output;
        let name = format!("{}_pooled", g.value_name(conv_input));
        if let Some(slot) = g.value_names.get_mut(between) {
            *slot = name;
        }
        // Keep the node list in execution order: the pool first.
        g.nodes.swap(conv, pool);
        producer.insert(between, conv);
        producer.insert(pooled_output, pool);
    }
}

/// Fuses a residual `Add` (or `Add` + activation) into the Conv producing one of its operands,
/// when nothing else reads that Conv's output, the Conv has no activation of its own, and the
/// other operand is a runtime value (not a constant) of the same shape (no broadcasting): the
/// Conv then reads it as a second input and adds it in its epilogue ([`ConvOp::residual`]).
/// A ResNet's residual additions stop being steps of their own, with an output written and
/// read back, and at batch 1 a join between the threads each. Runs on the simplified graph
/// with the model's image shape (to compare the operands' shapes); the sums are the same bits.
pub fn fuse_residual_adds(g: &mut Graph, image_shape: &[usize]) {
    let Some(shapes) = g.shapes_for_one_image(image_shape) else {
        return;
    };
    let readers = reader_counts(g);
    let mut producer = producer_of(g);
    let mut remove = vec![false; g.nodes.len()];
    #[allow(clippy::needless_range_loop)] // the loop rewrites other nodes by index
    for add in 0..g.nodes.len() {
        let activation = match g.nodes[add].op {
            Op::Add => Activation::None,
            Op::AddActivation(a) => a,
            _ => continue,
        };
        let [x, y] = g.nodes[add].inputs[..] else {
            continue;
        };
        for (from_conv, other) in [(x, y), (y, x)] {
            let Some(&conv) = producer.get(&from_conv) else {
                continue;
            };
            let fusable = match &g.nodes[conv].op {
                Op::Conv(c) => c.activation == Activation::None && c.residual.is_none(),
                _ => false,
            };
            let same_shape = matches!(
                (shapes.get(&from_conv), shapes.get(&other)),
                (Some(a), Some(b)) if a == b
            );
            if !fusable
                || !same_shape
                || g.constants.contains_key(&other)
                || other == MISSING
                || readers.get(&from_conv) != Some(&1)
                || g.outputs.contains(&from_conv)
                || g.nodes[conv].inputs.len() != 1
            {
                continue;
            }
            let sum = g.nodes[add].outputs[0];
            let name = format!("{}+{}", g.nodes[conv].name, g.nodes[add].name);
            let node = &mut g.nodes[conv];
            if let Op::Conv(c) = &mut node.op {
                c.residual = Some(activation);
            }
            node.inputs.push(other);
            node.outputs[0] = sum;
            node.name = name;
            producer.insert(sum, conv);
            remove[add] = true;
            break;
        }
    }
    let mut r = remove.iter();
    g.nodes.retain(|_| !*r.next().unwrap_or(&false));
}

/// Removes Identity nodes by rewiring their readers to their input.
pub fn remove_identities(g: &mut Graph) {
    while let Some(pos) = g
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::Identity) && !g.outputs.contains(&n.outputs[0]))
    {
        let n = g.nodes.remove(pos);
        let (from, to) = (n.outputs[0], n.inputs[0]);
        for m in &mut g.nodes {
            m.inputs
                .iter_mut()
                .filter(|v| **v == from)
                .for_each(|v| *v = to);
        }
    }
}

/// Drops nodes whose outputs nobody reads.
pub fn prune_dead_nodes(g: &mut Graph) {
    loop {
        let readers = reader_counts(g);
        let before = g.nodes.len();
        g.nodes
            .retain(|n| n.outputs.iter().any(|o| readers.contains_key(o)));
        if g.nodes.len() == before {
            break;
        }
    }
}

/// Drops constants no node reads and no output is: the initializers folded into the ops
/// that use them (a convolution keeps its weights, BatchNorm-folded, in its op), which would
/// otherwise hold a second copy of every weight for the life of the model and of each plan.
pub fn prune_dead_constants(g: &mut Graph) {
    let readers = reader_counts(g);
    g.constants.retain(|v, _| readers.contains_key(v));
}

/// Consistency check: every input is produced, outputs are computable, no load-time op left.
pub fn check(g: &Graph) -> Result<()> {
    g.topological_order()?;
    for n in &g.nodes {
        if is_load_time_only(&n.op) {
            return Err(node_error(g, n, "left unresolved after simplification"));
        }
    }
    let produced: Vec<ValueId> = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().copied())
        .collect();
    for &o in &g.outputs {
        if !produced.contains(&o) && !g.inputs.contains(&o) && !g.constants.contains_key(&o) {
            return Err(Error::model(
                &g.source,
                format!("graph output '{}' is never computed", g.value_name(o)),
            ));
        }
    }
    Ok(())
}
