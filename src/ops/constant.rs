//! Constant tensors known at load time: f32 weights and i64 shape arithmetic.

use crate::error::{Error, Result};
use std::path::Path;

/// Element data of a constant.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A constant tensor (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    pub shape: Vec<usize>,
    pub data: ConstData,
}

impl Const {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Const {
            shape,
            data: ConstData::F32(data),
        }
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        Const {
            shape,
            data: ConstData::I64(data),
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (i64 converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            ConstData::F32(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The values as i64 (f32 truncated).
    pub fn to_i64(&self) -> Vec<i64> {
        match &self.data {
            ConstData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::I64(v) => v.clone(),
        }
    }

    /// Same data, other shape (element count must agree; checked by the caller).
    pub fn reshaped(&self, shape: Vec<usize>) -> Self {
        Const {
            shape,
            data: self.data.clone(),
        }
    }

    /// Applies a gather of flat indices to the data, whatever its type.
    pub fn gather_flat(&self, shape: Vec<usize>, indices: &[usize]) -> Self {
        let data = match &self.data {
            ConstData::F32(v) => ConstData::F32(indices.iter().map(|&i| v[i]).collect()),
            ConstData::I64(v) => ConstData::I64(indices.iter().map(|&i| v[i]).collect()),
        };
        Const { shape, data }
    }
}

/// Largest tensor haste accepts from a file (elements). Anything claiming more is refused
/// before a single byte is allocated.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 31;

/// Checked element count of ONNX dims.
pub fn checked_shape(model: &Path, what: &str, dims: &[i64]) -> Result<Vec<usize>> {
    let mut n: usize = 1;
    let mut shape = Vec::with_capacity(dims.len());
    for &d in dims {
        if d < 0 {
            return Err(Error::model(
                model,
                format!("{what}: negative dimension {d}"),
            ));
        }
        n = n
            .checked_mul(d as usize)
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| Error::Limits {
                path: model.to_path_buf(),
                message: format!(
                    "{what}: shape {dims:?} exceeds the limit of {MAX_TENSOR_ELEMENTS} elements"
                ),
            })?;
        shape.push(d as usize);
    }
    Ok(shape)
}
