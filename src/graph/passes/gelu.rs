//! [`fuse_gelu`]: GELU as PyTorch exports it, five elementwise ops, becomes one activation;
//! [`fold_linear_bias`]: the bias Add after a MatMul moves into it.

use super::{producer_of, reader_counts};
use crate::graph::{Graph, ValueId};
use crate::ops::{Activation, Op};

/// `x / sqrt(2)` as PyTorch exports GELU's divisor (`1.4142135381698608`, the f32 nearest).
const SQRT_2: f32 = std::f32::consts::SQRT_2;

/// Rewrites `Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)` (`nn.GELU()`, each product's
/// operands in either order), every intermediate value read once, as one
/// [`Activation::Gelu`] of `x`: the activation computes the same operations in the same
/// order, so the bits do not change, and it can then run inside the op producing `x` (a
/// ConvNeXt MLP's first MatMul). As five passes over the MLP's widest values, GELU took 16 %
/// of ConvNeXt-tiny's time.
pub fn fuse_gelu(g: &mut Graph) {
    let readers = reader_counts(g);
    let producer = producer_of(g);
    let single = |v: ValueId| readers.get(&v) == Some(&1) && !g.outputs.contains(&v);
    let constant = |v: ValueId, want: f32| {
        g.constants
            .get(&v)
            .is_some_and(|c| c.len() == 1 && c.to_f32()[0] == want)
    };
    // The node making `v`, when `v` is read once and that node is `op`-like.
    let made_by = |v: ValueId, is: fn(&Op) -> bool| {
        let &p = producer.get(&v)?;
        (single(v) && is(&g.nodes[p].op)).then_some(p)
    };
    // Of a binary node's two inputs, the one that is the constant `want`, and the other.
    let split_const = |node: usize, want: f32| match g.nodes[node].inputs[..] {
        [a, b] if constant(b, want) => Some(a),
        [a, b] if constant(a, want) => Some(b),
        _ => None,
    };
    let mut rewrites = Vec::new();
    for (last, n) in g.nodes.iter().enumerate() {
        if !matches!(n.op, Op::Mul) {
            continue;
        }
        let found = (|| {
            let product = split_const(last, 0.5)?;
            let mul = made_by(product, |o| matches!(o, Op::Mul))?;
            let [a, b] = g.nodes[mul].inputs[..] else {
                return None;
            };
            // One factor is `x`, the other `erf(x / sqrt 2) + 1`.
            let gelu_of = |x: ValueId, sum: ValueId| {
                let add = made_by(sum, |o| matches!(o, Op::Add))?;
                let e = split_const(add, 1.0)?;
                let erf = made_by(e, |o| matches!(o, Op::Unary(crate::ops::Unary::Erf)))?;
                let q = g.nodes[erf].inputs[0];
                let div = made_by(q, |o| matches!(o, Op::Div))?;
                let [num, den] = g.nodes[div].inputs[..] else {
                    return None;
                };
                (num == x && constant(den, SQRT_2)).then_some(x)
            };
            gelu_of(a, b).or_else(|| gelu_of(b, a))
        })();
        if let Some(x) = found {
            rewrites.push((last, x));
        }
    }
    for (i, x) in rewrites {
        g.nodes[i].op = Op::Activation(Activation::Gelu);
        g.nodes[i].inputs = vec![x];
    }
}

/// Folds `Add(Linear(x), b)` (either operand order) into the Linear's bias, when `b` is a
/// constant of one value per output column and the Linear has no bias yet (a MatMul: the
/// sum then takes the same single addition) and no other reader. ConvNeXt's MLPs are
/// `MatMul -> Add`; the Add was a pass over each of their outputs.
pub fn fold_linear_bias(g: &mut Graph) {
    let readers = reader_counts(g);
    let producer = producer_of(g);
    let mut remove = vec![false; g.nodes.len()];
    for add in 0..g.nodes.len() {
        let [a, b] = g.nodes[add].inputs[..] else {
            continue;
        };
        if !matches!(g.nodes[add].op, Op::Add) {
            continue;
        }
        let (y, c) = if g.constants.contains_key(&b) {
            (a, b)
        } else {
            (b, a)
        };
        let Some(&lin) = producer.get(&y) else {
            continue;
        };
        if remove[lin] || readers.get(&y) != Some(&1) || g.outputs.contains(&y) {
            continue;
        }
        let Some(bias) = g.constants.get(&c) else {
            continue;
        };
        // One axis: a bias of more axes would also broadcast the output to more.
        let per_column = bias.shape.len() == 1;
        let Op::Linear(l) = &mut g.nodes[lin].op else {
            continue;
        };
        if l.bias.is_some() || !per_column || bias.len() != l.n {
            continue;
        }
        l.bias = Some(bias.to_f32());
        let out = g.nodes[add].outputs[0];
        let name = format!("{}+{}", g.nodes[lin].name, g.nodes[add].name);
        (g.nodes[lin].outputs[0], g.nodes[lin].name) = (out, name);
        remove[add] = true;
    }
    let mut r = remove.iter();
    g.nodes.retain(|_| !*r.next().unwrap_or(&false));
}
