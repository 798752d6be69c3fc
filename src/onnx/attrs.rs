//! Attribute getters that name the node when something is wrong.

use crate::error::{Error, Result};
use onnx_protobuf::NodeProto;
use std::path::Path;

/// A node's attributes, read with errors that name the node.
pub struct Attrs<'a> {
    pub model: &'a Path,
    pub node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    pub fn new(model: &'a Path, node: &'a NodeProto) -> Self {
        Attrs { model, node }
    }

    fn find(&self, name: &str) -> Option<&'a onnx_protobuf::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Number of inputs given (optional inputs left empty do not count).
    pub fn inputs(&self) -> usize {
        self.node.input.iter().filter(|s| !s.is_empty()).count()
    }

    /// An error about this node.
    pub fn error(&self, msg: impl std::fmt::Display) -> Error {
        Error::model(
            self.model,
            format!("node '{}' ({}): {msg}", self.node.name, self.node.op_type),
        )
    }

    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.find(name).map_or(default, |a| a.i)
    }

    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.find(name).map_or(default, |a| a.f)
    }

    pub fn ints(&self, name: &str) -> Option<&'a [i64]> {
        self.find(name).map(|a| a.ints.as_slice())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.find(name).map_or(default.to_string(), |a| {
            String::from_utf8_lossy(&a.s).into_owned()
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&'a onnx_protobuf::TensorProto> {
        self.find(name).and_then(|a| a.t.as_ref())
    }

    /// A list of non-negative ints of the given length (e.g. strides), or the default.
    pub fn usizes(&self, name: &str, len: usize, default: usize, min: usize) -> Result<Vec<usize>> {
        match self.ints(name) {
            None => Ok(vec![default; len]),
            Some(v) if v.len() != len => {
                Err(self.error(format!("'{name}' has {} values, expected {len}", v.len())))
            }
            Some(v) => v
                .iter()
                .map(|&x| {
                    if x < min as i64 || x > 1 << 20 {
                        Err(self.error(format!("'{name}' value {x} is out of range")))
                    } else {
                        Ok(x as usize)
                    }
                })
                .collect(),
        }
    }
}
