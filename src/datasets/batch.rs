//! Loading batches of images from a [`Dataset`], in parallel.

use super::Dataset;
use crate::error::Result;
use rayon::prelude::*;

/// Loads images `start..start + n` into `buf` in parallel.
pub fn load_batch(
    data: &dyn Dataset,
    start: usize,
    n: usize,
    per_image: usize,
    buf: &mut [f32],
) -> Result<()> {
    buf[..n * per_image]
        .par_chunks_mut(per_image)
        .enumerate()
        .try_for_each(|(k, out)| data.load(start + k, out))
}

/// Loads images `start..start + n` in parallel into the front of `buf`, leaving out those that
/// fail to load: returns the dataset indices of the images loaded, in order, and the names of
/// those skipped. Without `skip_bad`, a failure is returned instead (it names the image).
pub fn load_batch_skipping(
    data: &dyn Dataset,
    start: usize,
    n: usize,
    per_image: usize,
    buf: &mut [f32],
    skip_bad: bool,
) -> Result<(Vec<usize>, Vec<String>)> {
    if !skip_bad {
        load_batch(data, start, n, per_image, buf)?;
        return Ok(((start..start + n).collect(), Vec::new()));
    }
    let results: Vec<Result<()>> = buf[..n * per_image]
        .par_chunks_mut(per_image)
        .enumerate()
        .map(|(k, out)| data.load(start + k, out))
        .collect();
    let mut loaded = Vec::with_capacity(n);
    let mut skipped = Vec::new();
    for (k, r) in results.into_iter().enumerate() {
        match r {
            Ok(()) => {
                let slot = loaded.len();
                if slot != k {
                    buf.copy_within(k * per_image..(k + 1) * per_image, slot * per_image);
                }
                loaded.push(start + k);
            }
            Err(_) => skipped.push(data.item_name(start + k)),
        }
    }
    Ok((loaded, skipped))
}
