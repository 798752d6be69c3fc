//! ONNX import: protobuf decode (via `onnx-protobuf`) -> [`Graph`] with raw ops. Simplification
//! happens afterwards in [`crate::graph::passes`].

mod attrs;
mod registry;
pub mod tensor;

use crate::error::{Error, Result};
use crate::graph::{Const, Graph, Node, ValueId};
use crate::ops::{Op, PendingOp};
use onnx_protobuf::{Message, ModelProto};
use std::collections::HashMap;
use std::path::Path;

pub use crate::files::MAX_MODEL_BYTES;

/// Reads and decodes an ONNX file into a raw [`Graph`] (not yet simplified).
pub fn load_graph(path: &Path) -> Result<Graph> {
    let bytes = crate::files::read_regular(path, MAX_MODEL_BYTES, "model file")?;
    let model = parse_model(path, &bytes)?;
    // The file's bytes go before the weights are converted: a model in memory once more, not
    // twice.
    drop(bytes);
    graph_from_proto(path, model)
}

fn parse_model(path: &Path, bytes: &[u8]) -> Result<ModelProto> {
    ModelProto::parse_from_bytes(bytes)
        .map_err(|e| Error::model(path, format!("not a valid ONNX protobuf file ({e})")))
}

/// Decodes the bytes of an ONNX file into a raw [`Graph`]. `path` names the model in messages
/// and locates external data (it need not exist when the model has none).
pub fn graph_from_bytes(path: &Path, bytes: &[u8]) -> Result<Graph> {
    graph_from_proto(path, parse_model(path, bytes)?)
}

/// Converts a decoded model into a [`Graph`], releasing each initializer's data once it is
/// converted (so the weights are held about once, not twice, while a model loads).
pub fn graph_from_proto(path: &Path, mut model: ModelProto) -> Result<Graph> {
    let Some(g) = model.graph.as_mut() else {
        return Err(Error::model(
            path,
            "the file holds no graph (is it an ONNX model?)",
        ));
    };
    if g.node.is_empty() {
        return Err(Error::model(
            path,
            "the graph has no nodes (is it an ONNX model?)",
        ));
    }
    let mut graph = Graph {
        source: path.to_path_buf(),
        ..Graph::default()
    };
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut id_of = |graph: &mut Graph, name: &str| -> usize {
        *ids.entry(name.to_string())
            .or_insert_with(|| graph.add_value(name))
    };
    for init in &mut g.initializer {
        let c = tensor::decode_tensor(path, init)?;
        let id = id_of(&mut graph, &init.name);
        graph.constants.insert(id, c);
        // Converted: the proto's copy of the data is no longer needed.
        init.raw_data = Vec::new();
        init.float_data = Vec::new();
        init.int64_data = Vec::new();
    }
    for input in &g.input {
        let id = id_of(&mut graph, &input.name);
        if graph.constants.contains_key(&id) {
            continue;
        }
        graph.inputs.push(id);
        graph.input_shapes.push(declared_image_shape(input));
    }
    let mut unsupported: Vec<(String, String)> = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let name = if n.name.is_empty() {
            format!("{}_{i}", n.op_type)
        } else {
            n.name.clone()
        };
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            unsupported.push((format!("{}:{}", n.domain, n.op_type), name));
            continue;
        }
        if n.op_type == "Constant" {
            let c = constant_node(path, n)?;
            let out = n
                .output
                .first()
                .ok_or_else(|| Error::model(path, format!("Constant '{name}' has no output")))?;
            let id = id_of(&mut graph, out);
            graph.constants.insert(id, c);
            continue;
        }
        // Every supported op (Constant aside) reads at least one input and writes one output.
        if n.output.first().is_none_or(|o| o.is_empty()) {
            return Err(Error::model(
                path,
                format!("node '{name}' ({}) has no output", n.op_type),
            ));
        }
        if n.input.first().is_none_or(|i| i.is_empty()) {
            return Err(Error::model(
                path,
                format!("node '{name}' ({}) has no input", n.op_type),
            ));
        }
        let attrs = attrs::Attrs::new(path, n);
        if n.op_type == "Split" {
            // One node per output: each part is a slice of the input.
            let parts = n.output.len();
            let (axis, sizes) = (
                attrs.int("axis", 0),
                attrs.ints("split").map(<[i64]>::to_vec),
            );
            let inputs: Vec<ValueId> = n
                .input
                .iter()
                .map(|s| {
                    if s.is_empty() {
                        usize::MAX
                    } else {
                        id_of(&mut graph, s)
                    }
                })
                .collect();
            for (index, out) in n.output.iter().enumerate() {
                let op = Op::Pending(PendingOp::SplitPart {
                    axis,
                    index,
                    parts,
                    sizes: sizes.clone(),
                });
                let outputs = vec![id_of(&mut graph, out)];
                let name = format!("{name}:{index}");
                graph.nodes.push(Node {
                    name,
                    op,
                    inputs: inputs.clone(),
                    outputs,
                });
            }
            continue;
        }
        let Some(op) = registry::build_op(&attrs)? else {
            unsupported.push((n.op_type.clone(), name));
            continue;
        };
        // Optional inputs may be given as "": keep their position with a missing marker.
        let inputs = n
            .input
            .iter()
            .map(|s| {
                if s.is_empty() {
                    usize::MAX
                } else {
                    id_of(&mut graph, s)
                }
            })
            .collect();
        let outputs = n.output.iter().map(|s| id_of(&mut graph, s)).collect();
        graph.nodes.push(Node {
            name,
            op,
            inputs,
            outputs,
        });
    }
    if !unsupported.is_empty() {
        return Err(unsupported_ops(path, &unsupported));
    }
    for out in &g.output {
        let id = id_of(&mut graph, &out.name);
        graph.outputs.push(id);
    }
    if graph.inputs.is_empty() {
        return Err(Error::model(path, "the graph has no runtime input"));
    }
    if graph.outputs.is_empty() {
        return Err(Error::model(path, "the graph has no output"));
    }
    Ok(graph)
}

/// The declared shape of a graph input, batch axis dropped.
fn declared_image_shape(input: &onnx_protobuf::ValueInfoProto) -> Vec<Option<usize>> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value;
    use onnx_protobuf::type_proto::Value as T;
    let Some(T::TensorType(t)) = input.type_.as_ref().and_then(|t| t.value.as_ref()) else {
        return vec![];
    };
    let Some(shape) = t.shape.as_ref() else {
        return vec![];
    };
    shape
        .dim
        .iter()
        .skip(1)
        .map(|d| match d.value {
            Some(Value::DimValue(v)) if v > 0 => Some(v as usize),
            _ => None,
        })
        .collect()
}

fn constant_node(path: &Path, n: &onnx_protobuf::NodeProto) -> Result<Const> {
    let a = attrs::Attrs::new(path, n);
    if let Some(t) = a.tensor("value") {
        return tensor::decode_tensor(path, t);
    }
    for attr in &n.attribute {
        match attr.name.as_str() {
            "value_float" => return Ok(Const::f32(vec![], vec![attr.f])),
            "value_floats" => return Ok(Const::f32(vec![attr.floats.len()], attr.floats.clone())),
            "value_int" => return Ok(Const::i64(vec![], vec![attr.i])),
            "value_ints" => return Ok(Const::i64(vec![attr.ints.len()], attr.ints.clone())),
            _ => {}
        }
    }
    Err(a.error("Constant without a supported value attribute"))
}

/// The error for unsupported `(op type, node name)` pairs: one entry per op type, in order of
/// first appearance, with its count and first node (a model can hold dozens of one op).
fn unsupported_ops(path: &Path, nodes: &[(String, String)]) -> Error {
    let mut kinds: Vec<(&str, usize, &str)> = Vec::new();
    for (op, name) in nodes {
        match kinds.iter_mut().find(|(k, _, _)| k == op) {
            Some(entry) => entry.1 += 1,
            None => kinds.push((op, 1, name)),
        }
    }
    let ops = kinds
        .iter()
        .map(|(op, count, first)| match count {
            1 => format!("{op} (node '{first}')"),
            _ => format!("{op} x{count} (first node '{first}')"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Error::UnsupportedOps {
        path: path.into(),
        ops,
        nodes: nodes.iter().map(|(op, n)| format!("{op} '{n}'")).collect(),
    }
}
