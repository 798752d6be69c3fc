//! `TensorProto` -> [`Const`], with size limits checked before allocating and external data
//! confined to the model's folder.

use crate::error::{Error, Result};
use crate::graph::Const;
use onnx_protobuf::TensorProto;
use std::path::Path;

pub use crate::ops::{checked_shape, MAX_TENSOR_ELEMENTS};

// ONNX TensorProto.DataType codes.
pub const FLOAT: i32 = 1;
pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;
pub const BOOL: i32 = 9;
pub const DOUBLE: i32 = 11;

/// Decodes a tensor. `model` is the model file (for messages and external data).
pub fn decode_tensor(model: &Path, t: &TensorProto) -> Result<Const> {
    let what = format!("tensor '{}'", t.name);
    let shape = checked_shape(model, &what, &t.dims)?;
    let n: usize = shape.iter().product();
    let external;
    let raw: &[u8] = if t.data_location.value() == 1 {
        external = read_external(model, t, &what)?;
        &external
    } else {
        &t.raw_data
    };
    let bad = |m: String| Error::model(model, format!("{what}: {m}"));
    let expect_len = |have: usize| {
        if have == n {
            Ok(())
        } else {
            Err(bad(format!(
                "holds {have} values, its shape {shape:?} needs {n}"
            )))
        }
    };
    let elem_size = match t.data_type {
        FLOAT | INT32 => 4,
        INT64 | DOUBLE => 8,
        UINT8 | INT8 | BOOL => 1,
        other => return Err(bad(format!("unsupported data type {other}"))),
    };
    if !raw.is_empty() {
        if raw.len() != n * elem_size {
            return Err(bad(format!(
                "raw data is {} bytes, shape {shape:?} needs {}",
                raw.len(),
                n * elem_size
            )));
        }
        let words = |size: usize| raw.chunks_exact(size);
        return Ok(match t.data_type {
            FLOAT => Const::f32(
                shape,
                words(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            DOUBLE => Const::f32(
                shape,
                words(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                    .collect(),
            ),
            INT64 => Const::i64(
                shape,
                words(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
            INT32 => Const::i64(
                shape,
                words(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                    .collect(),
            ),
            UINT8 | BOOL => Const::i64(shape, raw.iter().map(|&b| b as i64).collect()),
            _ => Const::i64(shape, raw.iter().map(|&b| b as i8 as i64).collect()),
        });
    }
    match t.data_type {
        FLOAT => {
            expect_len(t.float_data.len())?;
            Ok(Const::f32(shape, t.float_data.clone()))
        }
        DOUBLE => {
            expect_len(t.double_data.len())?;
            Ok(Const::f32(
                shape,
                t.double_data.iter().map(|&x| x as f32).collect(),
            ))
        }
        INT64 => {
            expect_len(t.int64_data.len())?;
            Ok(Const::i64(shape, t.int64_data.clone()))
        }
        _ => {
            expect_len(t.int32_data.len())?;
            Ok(Const::i64(
                shape,
                t.int32_data.iter().map(|&x| x as i64).collect(),
            ))
        }
    }
}

/// Reads a tensor stored outside the model file, refusing locations outside the model's folder.
fn read_external(model: &Path, t: &TensorProto, what: &str) -> Result<Vec<u8>> {
    let get = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let location = get("location")
        .ok_or_else(|| Error::model(model, format!("{what}: external data without a location")))?;
    let parse = |key: &str| -> Result<Option<u64>> {
        get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| Error::model(model, format!("{what}: bad external {key} '{v}'")))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?;
    let dir = model.parent().unwrap_or(Path::new("."));
    let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let file = dir.join(location);
    let file = file.canonicalize().map_err(|e| Error::io(&file, e))?;
    if !file.starts_with(&dir) {
        return Err(Error::model(
            model,
            format!("{what}: external data '{location}' points outside the model's folder"),
        ));
    }
    // At most the largest tensor haste accepts, 8 bytes an element.
    let limit = 8 * MAX_TENSOR_ELEMENTS as u64;
    crate::files::read_range(&file, offset, length, limit, "external data")
        .map_err(|e| Error::model(model, format!("{what}: {e}")))
}
