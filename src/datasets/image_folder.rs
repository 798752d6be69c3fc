//! torchvision-style `ImageFolder`: `root/<class>/<image>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::preprocess::{check_out_len, decode_rgb8, normalize_chw, Preprocess};
use super::Dataset;

/// Largest number of images an [`ImageFolder`] accepts.
pub const MAX_IMAGES: usize = 10_000_000;

/// Image files of a class folder tree, in torchvision's order: `root/<class>/**/<image>` with a
/// `.jpg`, `.jpeg` or `.png` extension (case-insensitive), classes sorted by name, and within a
/// class the folders in sorted path order (torchvision's `sorted(os.walk(...))`, symlinks
/// followed) and files sorted by name. Item 0 of `imagenet-val-1300/val` is
/// `n01440764/ILSVRC2012_val_00023559.JPEG`.
///
/// Labels: with a label list (the model's output order, e.g. ImageNet wnids) each class folder
/// name is looked up in it, and a folder missing from it is an error naming the folder; without
/// one, classes are numbered in sorted order (torchvision `ImageFolder.class_to_idx`). Class
/// folders without images are allowed (they keep their index); a root without any image is an
/// error. Images are decoded on each [`Dataset::load`] call by [`decode_rgb8`] (JPEGs with
/// libjpeg-turbo's decoder, giving Pillow's pixels exactly; PNGs with `image`; grayscale and
/// 16-bit converted to RGB8) and preprocessed with the Pillow-exact pipeline of [`Preprocess`].
#[derive(Debug)]
pub struct ImageFolder {
    root: PathBuf,
    items: Vec<(PathBuf, usize)>,
    classes: Vec<String>,
    preprocess: Preprocess,
    lut: Box<[[f32; 256]; 3]>,
}

/// The label of an image in a flat folder (no class): matches no model output.
const UNLABELLED: usize = usize::MAX;

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            let e = e.to_ascii_lowercase();
            e == "jpg" || e == "jpeg" || e == "png"
        })
        .unwrap_or(false)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        entries.push(e.path());
    }
    entries.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    Ok(entries)
}

/// Deepest folder nesting an image folder may have.
const MAX_DEPTH: usize = 32;

/// The walk over a class folder's subfolders: symbolic links to folders are followed as
/// torchvision does, but never around a cycle and never out of the root's tree (a link to
/// `/` would walk the whole file system).
struct Walk {
    /// The root, canonical: links must stay under it.
    root: PathBuf,
    /// The canonical paths of the folders being walked, outermost first: a link to one of
    /// them is a cycle.
    stack: Vec<PathBuf>,
    /// Skip a bad link instead of failing (`--skip-bad`).
    skip_bad: bool,
}

impl Walk {
    fn new(root: &Path, skip_bad: bool) -> Result<Walk> {
        let canon = root.canonicalize().map_err(|e| Error::io(root, e))?;
        Ok(Walk {
            root: canon.clone(),
            stack: vec![canon],
            skip_bad,
        })
    }

    /// Where `dir` leads when it is a folder to walk: its canonical path, `None` to pass it
    /// by (not a folder, a dangling link, or a bad link with `skip_bad`), an error for a bad
    /// link otherwise. `parent` is the canonical path of the folder holding it.
    fn follow(&self, dir: &Path, parent: &Path) -> Result<Option<PathBuf>> {
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            return Ok(None);
        };
        if !meta.is_symlink() {
            return Ok(meta
                .is_dir()
                .then(|| parent.join(dir.file_name().unwrap_or_default())));
        }
        let Ok(target) = dir.canonicalize() else {
            return Ok(None);
        };
        if !target.is_dir() {
            return Ok(None);
        }
        let problem = if self.stack.contains(&target) {
            format!("symbolic link to {} makes a cycle", target.display())
        } else if !target.starts_with(&self.root) {
            format!(
                "symbolic link to {}, outside the image folder {}",
                target.display(),
                self.root.display()
            )
        } else {
            return Ok(Some(target));
        };
        if self.skip_bad {
            return Ok(None);
        }
        Err(Error::dataset(
            dir,
            format!("{problem} (--skip-bad skips it)"),
        ))
    }

    /// All folders under `dir` (itself included; `canon` its canonical path) into `out`.
    fn walk(&mut self, dir: &Path, canon: PathBuf, out: &mut Vec<PathBuf>) -> Result<()> {
        if self.stack.len() > MAX_DEPTH {
            return Err(Error::dataset(
                dir,
                format!("folders nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        out.push(dir.to_path_buf());
        self.stack.push(canon);
        for p in read_dir_sorted(dir)? {
            let parent = self.stack.last().cloned().unwrap_or_default();
            if let Some(c) = self.follow(&p, &parent)? {
                self.walk(&p, c, out)?;
            }
        }
        self.stack.pop();
        Ok(())
    }
}

impl ImageFolder {
    /// Lists the images under `root` (see the type's documentation for order and labels).
    pub fn open(
        root: &Path,
        preprocess: &Preprocess,
        labels: Option<&[String]>,
    ) -> Result<ImageFolder> {
        Self::open_with(root, preprocess, labels, false)
    }

    /// [`Self::open`]; with `skip_bad_links`, a symbolic link that makes a cycle or leaves
    /// the root's tree is passed by instead of being an error.
    pub fn open_with(
        root: &Path,
        preprocess: &Preprocess,
        labels: Option<&[String]>,
        skip_bad_links: bool,
    ) -> Result<ImageFolder> {
        preprocess.validate().map_err(Error::InvalidArgument)?;
        let walk = Walk::new(root, skip_bad_links)?;
        let mut class_dirs = Vec::new();
        for p in read_dir_sorted(root)? {
            if let Some(canon) = walk.follow(&p, &walk.root)? {
                class_dirs.push((p, canon));
            }
        }
        if class_dirs.is_empty() {
            return Self::open_flat(root, preprocess);
        }
        let lookup: Option<HashMap<&str, usize>> = labels.map(|ls| {
            let mut m = HashMap::with_capacity(ls.len());
            for (i, l) in ls.iter().enumerate() {
                m.entry(l.as_str()).or_insert(i);
            }
            m
        });
        let mut items = Vec::new();
        let mut classes = Vec::with_capacity(class_dirs.len());
        let mut walk = walk;
        for (ci, (dir, canon)) in class_dirs.into_iter().enumerate() {
            let dir = &dir;
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::dataset(dir, "class folder name is not UTF-8"))?
                .to_string();
            let label = match &lookup {
                Some(m) => *m.get(name.as_str()).ok_or_else(|| {
                    Error::dataset(
                        dir,
                        format!("class folder `{name}` is not in the model's label list"),
                    )
                })?,
                None => ci,
            };
            let mut dirs = Vec::new();
            walk.walk(dir, canon, &mut dirs)?;
            dirs.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
            for d in dirs {
                for f in read_dir_sorted(&d)? {
                    if is_image(&f) && f.is_file() {
                        items.push((f, label));
                        if items.len() > MAX_IMAGES {
                            return Err(Error::Limits {
                                path: root.to_path_buf(),
                                message: format!("more than {MAX_IMAGES} images"),
                            });
                        }
                    }
                }
            }
            classes.push(name);
        }
        if items.is_empty() {
            return Err(Error::dataset(
                root,
                "no .jpg, .jpeg or .png image in the class subfolders",
            ));
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            items,
            classes,
            preprocess: preprocess.clone(),
            lut: preprocess.lut(),
        })
    }

    /// A folder of images without class subfolders: unlabelled (for calibration).
    fn open_flat(root: &Path, preprocess: &Preprocess) -> Result<ImageFolder> {
        let items: Vec<(PathBuf, usize)> = read_dir_sorted(root)?
            .into_iter()
            .filter(|f| is_image(f) && f.is_file())
            .map(|f| (f, UNLABELLED))
            .collect();
        if items.is_empty() {
            return Err(Error::dataset(
                root,
                "no images and no class subfolders (expected ROOT/<class>/<image>.jpg|.jpeg|.png, a flat folder of images, or a CIFAR-10 .bin file)",
            ));
        }
        if items.len() > MAX_IMAGES {
            return Err(Error::Limits {
                path: root.to_path_buf(),
                message: format!("more than {MAX_IMAGES} images"),
            });
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            items,
            classes: Vec::new(),
            preprocess: preprocess.clone(),
            lut: preprocess.lut(),
        })
    }

    /// Path of image `index`.
    pub fn path(&self, index: usize) -> &Path {
        &self.items[index].0
    }

    /// Class folder names in sorted order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn label(&self, index: usize) -> usize {
        self.items[index].1
    }

    fn item_name(&self, index: usize) -> String {
        self.items[index].0.display().to_string()
    }

    fn source(&self) -> &Path {
        &self.root
    }

    fn has_labels(&self) -> bool {
        !self.classes.is_empty()
    }

    fn load(&self, index: usize, out: &mut [f32]) -> Result<()> {
        check_out_len(&self.preprocess, out)?;
        let path = match self.items.get(index) {
            Some((p, _)) => p,
            None => {
                return Err(Error::dataset(
                    &self.root,
                    format!(
                        "image {index} is out of range ({} images)",
                        self.items.len()
                    ),
                ))
            }
        };
        let (rgb, w, h) = decode_rgb8(path)?;
        normalize_chw(&self.preprocess.geometry_rgb8(&rgb, w, h), &self.lut, out);
        Ok(())
    }
}
