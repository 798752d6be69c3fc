//! The model IR: a DAG of [`Node`]s over numbered values, plus the constants known at load time.
//!
//! Pipeline: [`crate::onnx`] decodes a file into a [`Graph`], [`passes`] simplify it (fold
//! constants, fuse BatchNorm into Conv, drop identities), then [`crate::plan`] orders it and
//! assigns buffers.

pub mod passes;

pub use crate::ops::{Const, ConstData};

use crate::ops::Op;
use std::collections::HashMap;
use std::path::PathBuf;

/// Index of a value (an edge of the graph).
pub type ValueId = usize;

/// One operation: reads `inputs`, writes `outputs`.
#[derive(Debug, Clone)]
pub struct Node {
    /// Name from the model file (or a generated one such as `conv3.bn_folded`).
    pub name: String,
    /// What it computes, with its parameters.
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

/// A model: nodes, named values, constants, and the graph's runtime input and outputs.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The file the graph came from (for error messages).
    pub source: PathBuf,
    pub nodes: Vec<Node>,
    /// Name of each value, indexed by [`ValueId`].
    pub value_names: Vec<String>,
    /// Values known at load time (initializers and folded subgraphs).
    pub constants: HashMap<ValueId, Const>,
    /// Runtime inputs (initializers excluded).
    pub inputs: Vec<ValueId>,
    /// Per-image shape of each runtime input as declared by the model (batch axis excluded);
    /// `None` where a dimension is symbolic.
    pub input_shapes: Vec<Vec<Option<usize>>>,
    pub outputs: Vec<ValueId>,
}

impl Graph {
    /// Name of a value.
    pub fn value_name(&self, v: ValueId) -> &str {
        self.value_names.get(v).map(String::as_str).unwrap_or("?")
    }

    /// Adds a fresh value and returns its id.
    pub fn add_value(&mut self, name: impl Into<String>) -> ValueId {
        self.value_names.push(name.into());
        self.value_names.len() - 1
    }

    /// Indices of the nodes in dependency order; errors on a cycle or a value never produced.
    pub fn topological_order(&self) -> crate::Result<Vec<usize>> {
        let mut producer: HashMap<ValueId, usize> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for &o in &n.outputs {
                producer.insert(o, i);
            }
        }
        // 0 = unvisited, 1 = on stack, 2 = done
        let mut state = vec![0u8; self.nodes.len()];
        let mut order = Vec::with_capacity(self.nodes.len());
        for start in 0..self.nodes.len() {
            if state[start] != 0 {
                continue;
            }
            // iterative DFS: (node, next input index)
            let mut stack = vec![(start, 0usize)];
            state[start] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&input) = self.nodes[node].inputs.get(*next) {
                    *next += 1;
                    if input == usize::MAX
                        || self.constants.contains_key(&input)
                        || self.inputs.contains(&input)
                    {
                        continue;
                    }
                    let Some(&p) = producer.get(&input) else {
                        return Err(crate::Error::model(
                            &self.source,
                            format!(
                                "node '{}' reads value '{}' that no node, input or initializer provides",
                                self.nodes[node].name,
                                self.value_name(input)
                            ),
                        ));
                    };
                    match state[p] {
                        0 => {
                            state[p] = 1;
                            stack.push((p, 0));
                        }
                        1 => {
                            return Err(crate::Error::model(
                                &self.source,
                                format!(
                                    "the graph has a cycle through node '{}'",
                                    self.nodes[p].name
                                ),
                            ))
                        }
                        _ => {}
                    }
                } else {
                    state[node] = 2;
                    order.push(node);
                    stack.pop();
                }
            }
        }
        Ok(order)
    }
}

impl Graph {
    /// The shape of every value for a batch of one `image_shape` input, from the ops' shape
    /// inference; `None` when some op rejects its inputs (the plan reports that error).
    pub fn shapes_for_one_image(
        &self,
        image_shape: &[usize],
    ) -> Option<HashMap<ValueId, Vec<usize>>> {
        let mut shapes: HashMap<ValueId, Vec<usize>> = HashMap::new();
        let input = [&[1][..], image_shape].concat();
        for &i in &self.inputs {
            shapes.insert(i, input.clone());
        }
        for (&v, c) in &self.constants {
            shapes.insert(v, c.shape.clone());
        }
        for n in self.topological_order().ok()? {
            let node = &self.nodes[n];
            let ins: Vec<&[usize]> = node
                .inputs
                .iter()
                .filter(|&&v| v != passes::MISSING)
                .map(|v| shapes.get(v).map(Vec::as_slice))
                .collect::<Option<_>>()?;
            let out = node.op.output_shape(&ins).ok()?;
            shapes.insert(*node.outputs.first()?, out);
        }
        Some(shapes)
    }

    /// True when `v` can be proven never negative (a ReLU output, a pooling of one, a sum of
    /// such values, ...). Used to decide where magnitude-aware hashing is needed.
    pub fn is_nonnegative(&self, v: ValueId) -> bool {
        self.nonnegative_within(v, 16)
    }

    fn nonnegative_within(&self, v: ValueId, depth: usize) -> bool {
        if let Some(c) = self.constants.get(&v) {
            return c.to_f32().iter().all(|&x| x >= 0.0);
        }
        if depth == 0 {
            return false;
        }
        let Some(node) = self.nodes.iter().find(|n| n.outputs.contains(&v)) else {
            return false; // a graph input: normalized images are signed
        };
        let inputs_nonnegative = || {
            node.inputs
                .iter()
                .all(|&i| self.nonnegative_within(i, depth - 1))
        };
        match &node.op {
            Op::Relu => true,
            Op::Clip { min, .. } => *min >= 0.0,
            Op::Activation(a) => a.is_nonnegative(),
            Op::Conv(c) => c.output_activation().is_nonnegative(),
            Op::AddActivation(a) => a.is_nonnegative() || inputs_nonnegative(),
            Op::Pad { value, .. } => *value >= 0.0 && inputs_nonnegative(),
            Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::GlobalAveragePool
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Slice { .. }
            | Op::SplitPart { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Identity
            | Op::Add
            | Op::Mul => inputs_nonnegative(),
            _ => false,
        }
    }
}
