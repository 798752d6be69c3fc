//! Datasets, preprocessing and model cards.
//!
//! * [`open_dataset`] opens a CIFAR-10 binary file ([`CifarBinary`]) or a torchvision-style
//!   class folder tree of JPEG/PNG images ([`ImageFolder`]) behind the [`Dataset`] trait.
//! * [`decode_rgb8`] decodes JPEGs with libjpeg-turbo's C decoder at Pillow's settings (the
//!   same pixels as `PIL.Image.open(p).convert("RGB")`) and PNGs with the `image` crate.
//! * [`Preprocess`] is the torchvision pipeline `Resize` -> `CenterCrop` -> `ToTensor` ->
//!   `Normalize`, with Pillow's bilinear resize re-implemented bit-exactly
//!   ([`resize_bilinear_rgb8`]).
//! * [`ModelCard`] reads the `NAME.json` beside a model; [`load_labels`] reads a label file.
//! * [`load_batch`] and [`load_batch_skipping`] load a batch of images in parallel.
//!
//! ```no_run
//! use haste::datasets::{open_dataset, ModelCard};
//! use std::path::Path;
//! let card = ModelCard::beside_model(Path::new("../shared/models/tiny-darknet-imagenet.onnx"))?
//!     .expect("card");
//! let data = open_dataset(
//!     Path::new("../shared/data/imagenet-val-1300/val"),
//!     &card.preprocess,
//!     card.labels.as_deref(),
//! )?;
//! let mut x = vec![0f32; card.preprocess.input_len()];
//! data.load(0, &mut x)?; // CHW, 3x224x224
//! println!("{} is class {}", data.item_name(0), data.label(0));
//! # Ok::<(), haste::Error>(())
//! ```

use std::path::Path;

use crate::error::Result;

mod batch;
mod card;
mod cifar;
mod image_folder;
mod jpeg;
mod preprocess;
mod resize;
mod skip;

pub use batch::{load_batch, load_batch_skipping};
pub use card::{load_labels, ModelCard};
pub use cifar::{CifarBinary, CIFAR_RECORD, MAX_CIFAR_BYTES};
pub use image_folder::{ImageFolder, MAX_IMAGES};
pub use preprocess::{decode_rgb8, decode_rgb8_bytes, resized_size, Preprocess, MAX_IMAGE_SIDE};
pub use resize::resize_bilinear_rgb8;
pub use skip::Skip;

/// A labelled image dataset whose items come out preprocessed for one model.
///
/// Implementations are immutable after opening, so [`Dataset::load`] can run on many threads
/// at once.
pub trait Dataset: Send + Sync {
    /// Number of items.
    fn len(&self) -> usize;
    /// True when there is no item (never the case for datasets from [`open_dataset`]).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Ground-truth label of item `index`, as an index into the model's label list / output.
    ///
    /// # Panics
    /// If `index >= len()`.
    fn label(&self, index: usize) -> usize;
    /// A name for messages: `record 17` for CIFAR, the image path for folders.
    ///
    /// # Panics
    /// If `index >= len()`.
    fn item_name(&self, index: usize) -> String;
    /// The file or folder the dataset was opened from.
    fn source(&self) -> &Path;
    /// Whether [`Dataset::label`] means something (a flat folder of images has no labels:
    /// it can calibrate, not be scored).
    fn has_labels(&self) -> bool {
        true
    }
    /// Bytes the dataset holds in memory (a CIFAR-10 file is read whole; an image folder
    /// only lists its files).
    fn memory_bytes(&self) -> u64 {
        0
    }
    /// Writes item `index`, preprocessed, as CHW floats into `out`
    /// (`channels * height * width` floats). Errors (undecodable image, index out of range,
    /// wrong `out` length) name the file.
    fn load(&self, index: usize, out: &mut [f32]) -> Result<()>;
}

/// Opens a dataset for a model with the given preprocessing:
///
/// * a file: a CIFAR-10 binary file (e.g. `test_batch.bin`);
/// * a folder holding `test_batch.bin` (a user's `cifar-10-batches-bin`): that file. Its label
///   bytes are class indices, so a model whose label list is not 10 long is refused;
/// * any other folder: an [`ImageFolder`] of class subfolders, whose names are looked up in
///   `labels` (the model's label list, e.g. ImageNet wnids) or, without labels, numbered in
///   sorted order.
///
/// A device, FIFO or socket is refused before it is opened; so is an image folder with a
/// symbolic link that makes a cycle or leaves its tree (see [`open_dataset_with`]).
pub fn open_dataset(
    path: &Path,
    preprocess: &Preprocess,
    labels: Option<&[String]>,
) -> Result<Box<dyn Dataset>> {
    open_dataset_with(path, preprocess, labels, false)
}

/// [`open_dataset`]; with `skip_bad_links`, an image folder's symbolic links that make a
/// cycle or leave its tree are passed by instead of being an error (`--skip-bad`).
pub fn open_dataset_with(
    path: &Path,
    preprocess: &Preprocess,
    labels: Option<&[String]>,
    skip_bad_links: bool,
) -> Result<Box<dyn Dataset>> {
    let meta = std::fs::metadata(path).map_err(|e| crate::Error::io(path, e))?;
    let batch = path.join("test_batch.bin");
    let cifar = if meta.is_file() {
        path
    } else if batch.is_file() {
        &batch
    } else if meta.is_dir() {
        let folder = ImageFolder::open_with(path, preprocess, labels, skip_bad_links)?;
        return Ok(Box::new(folder));
    } else {
        // A device, FIFO or socket: refused before it is opened (a FIFO would block).
        let kind = crate::files::kind(&meta);
        let message = format!("the data is {kind}: give a CIFAR-10 binary file or an image folder");
        return Err(crate::Error::dataset(path, message));
    };
    // CIFAR labels are class indices 0-9: they only mean something for a 10-class model.
    if let Some(l) = labels.filter(|l| l.len() != 10) {
        return Err(crate::Error::dataset(
            cifar,
            format!(
                "CIFAR-10 data has 10 classes, but the model's label list has {}",
                l.len()
            ),
        ));
    }
    Ok(Box::new(CifarBinary::open(cifar, preprocess)?))
}
