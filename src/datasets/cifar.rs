//! The CIFAR-10 binary format (`test_batch.bin`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::preprocess::{check_out_len, normalize_chw, Preprocess};
use super::Dataset;

/// Bytes per CIFAR-10 record: 1 label byte + 32x32 pixels x 3 planes.
pub const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;
/// Largest CIFAR file haste reads into memory (2 GiB).
pub const MAX_CIFAR_BYTES: u64 = 2 << 30;

/// A CIFAR-10 binary file held in memory: records of 1 label byte (0..=9) and 3072 pixel
/// bytes (1024 R, 1024 G, 1024 B, each 32x32 row-major).
///
/// Images go through the [`Preprocess`] pipeline as 32x32 RGB8 images: with a 32x32 model and
/// no resize or crop they are only normalized; otherwise they are resized/cropped with the same
/// Pillow-exact bilinear path as image files.
#[derive(Debug)]
pub struct CifarBinary {
    path: PathBuf,
    data: Vec<u8>,
    preprocess: Preprocess,
    lut: Box<[[f32; 256]; 3]>,
}

impl CifarBinary {
    /// Reads and checks the whole file: not empty, at most [`MAX_CIFAR_BYTES`], a multiple of
    /// 3073 bytes, every label byte at most 9.
    pub fn open(path: &Path, preprocess: &Preprocess) -> Result<CifarBinary> {
        preprocess.validate().map_err(Error::InvalidArgument)?;
        let len = crate::files::check_regular(path, MAX_CIFAR_BYTES, "CIFAR file")?;
        if len == 0 {
            return Err(Error::dataset(path, "CIFAR file is empty"));
        }
        if !len.is_multiple_of(CIFAR_RECORD as u64) {
            return Err(Error::dataset(
                path,
                format!(
                    "size {len} is not a multiple of the {CIFAR_RECORD}-byte CIFAR-10 record \
                     (truncated or not a CIFAR-10 binary file)"
                ),
            ));
        }
        let data = crate::files::read_regular(path, MAX_CIFAR_BYTES, "CIFAR file")?;
        if data.len() as u64 != len {
            return Err(Error::dataset(path, "file changed size while being read"));
        }
        CifarBinary::from_bytes(path, data, preprocess)
    }

    /// Checks CIFAR-10 records already in memory (as [`CifarBinary::open`] does for a file);
    /// `path` names them in messages.
    pub fn from_bytes(path: &Path, data: Vec<u8>, preprocess: &Preprocess) -> Result<CifarBinary> {
        preprocess.validate().map_err(Error::InvalidArgument)?;
        if data.is_empty() {
            return Err(Error::dataset(path, "CIFAR file is empty"));
        }
        if !data.len().is_multiple_of(CIFAR_RECORD) {
            return Err(Error::dataset(
                path,
                format!(
                    "size {} is not a multiple of the {CIFAR_RECORD}-byte CIFAR-10 record \
                     (truncated or not a CIFAR-10 binary file)",
                    data.len()
                ),
            ));
        }
        if let Some((i, rec)) = data
            .chunks_exact(CIFAR_RECORD)
            .enumerate()
            .find(|(_, r)| r[0] > 9)
        {
            return Err(Error::dataset(
                path,
                format!(
                    "record {i}: label byte {} is not a CIFAR-10 class (0..=9)",
                    rec[0]
                ),
            ));
        }
        Ok(CifarBinary {
            path: path.to_path_buf(),
            data,
            preprocess: preprocess.clone(),
            lut: preprocess.lut(),
        })
    }

    /// The raw record `index`: label byte followed by the 3072 planar pixel bytes.
    pub fn record(&self, index: usize) -> &[u8] {
        &self.data[index * CIFAR_RECORD..(index + 1) * CIFAR_RECORD]
    }
}

impl Dataset for CifarBinary {
    fn len(&self) -> usize {
        self.data.len() / CIFAR_RECORD
    }

    fn memory_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    fn label(&self, index: usize) -> usize {
        self.record(index)[0] as usize
    }

    fn item_name(&self, index: usize) -> String {
        format!("record {index}")
    }

    fn source(&self) -> &Path {
        &self.path
    }

    fn load(&self, index: usize, out: &mut [f32]) -> Result<()> {
        check_out_len(&self.preprocess, out)?;
        if index >= self.len() {
            return Err(Error::dataset(
                &self.path,
                format!("record {index} is out of range ({} records)", self.len()),
            ));
        }
        let px = &self.record(index)[1..];
        let p = &self.preprocess;
        if p.height == 32
            && p.width == 32
            && p.resize_shorter_side.is_none()
            && p.center_crop.is_none_or(|c| c == 32)
        {
            for (c, (dst, src)) in out
                .chunks_exact_mut(1024)
                .zip(px.chunks_exact(1024))
                .enumerate()
            {
                let lut = &self.lut[c];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = lut[s as usize];
                }
            }
            return Ok(());
        }
        let mut rgb = vec![0u8; 3 * 1024];
        for (i, p3) in rgb.chunks_exact_mut(3).enumerate() {
            p3[0] = px[i];
            p3[1] = px[1024 + i];
            p3[2] = px[2048 + i];
        }
        normalize_chw(&p.geometry_rgb8(&rgb, 32, 32), &self.lut, out);
        Ok(())
    }
}
