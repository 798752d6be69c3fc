//! Model cards: the `NAME.json` beside `NAME.onnx` describing input preprocessing and labels.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

use super::preprocess::Preprocess;

/// A model card (`NAME.json`), e.g. `../shared/models/resnet20-cifar10.json`:
///
/// ```json
/// { "name": "resnet20-cifar10",
///   "input": { "channels": 3, "height": 32, "width": 32, "pixel_scale": 0.00392156862745098,
///              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
///              "resize_shorter_side": 256, "center_crop": 224, "interpolation": "bilinear" },
///   "labels": ["airplane", "..."],            // or
///   "labels_file": "NAME.labels.txt (free text after the file name is ignored)",
///   "measured_top1_on_test_batch_jpeg": 81.03, // or
///   "measured_on_imagenet_val_1300": { "top1": 69.92, "top5": 91.0 } }
/// ```
///
/// `input.channels/height/width/pixel_scale/mean/std` are required; `resize_shorter_side`,
/// `center_crop` and `interpolation` (only `"bilinear"` is accepted) are optional.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    /// The card file.
    pub path: PathBuf,
    /// `name`, or the file stem when absent.
    pub name: String,
    /// The `input` section.
    pub preprocess: Preprocess,
    /// Label names in the model's output order (`labels` or `labels_file`), if given.
    pub labels: Option<Vec<String>>,
    /// Reference top-1 accuracy in percent (`measured_top1_on_test_batch_jpeg` or
    /// `measured_on_imagenet_val_1300.top1`).
    pub reference_top1: Option<f64>,
    /// Reference top-5 accuracy in percent (`measured_on_imagenet_val_1300.top5`).
    pub reference_top5: Option<f64>,
}

/// Reads a label file: one label per line, surrounding whitespace trimmed, empty lines at the
/// end ignored; an empty line in the middle or no label at all is an error.
pub fn load_labels(path: &Path) -> Result<Vec<String>> {
    let text = crate::files::read_text(path, "label file")?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(|l| l.is_empty()) {
        labels.pop();
    }
    if labels.is_empty() {
        return Err(Error::dataset(path, "label file holds no label"));
    }
    if let Some(i) = labels.iter().position(|l| l.is_empty()) {
        return Err(Error::dataset(path, format!("line {} is empty", i + 1)));
    }
    Ok(labels)
}

struct Fields<'a> {
    path: &'a Path,
}

impl Fields<'_> {
    fn err(&self, field: &str, msg: impl std::fmt::Display) -> Error {
        Error::card(self.path, format!("field `{field}`: {msg}"))
    }

    fn get<'v>(&self, obj: &'v Value, field: &str) -> Result<&'v Value> {
        obj.get(field.rsplit('.').next().unwrap_or(field))
            .filter(|v| !v.is_null())
            .ok_or_else(|| self.err(field, "missing"))
    }

    fn size(&self, v: &Value, field: &str) -> Result<usize> {
        let n = v
            .as_u64()
            .ok_or_else(|| self.err(field, format!("{v} is not a whole number")))?;
        if n == 0 {
            return Err(self.err(field, "must be > 0"));
        }
        usize::try_from(n).map_err(|_| self.err(field, "too large"))
    }

    fn float(&self, v: &Value, field: &str) -> Result<f64> {
        let x = v
            .as_f64()
            .ok_or_else(|| self.err(field, format!("{v} is not a number")))?;
        if !x.is_finite() {
            return Err(self.err(field, "is not finite"));
        }
        Ok(x)
    }

    fn triple(&self, v: &Value, field: &str) -> Result<[f32; 3]> {
        let arr = v
            .as_array()
            .filter(|a| a.len() == 3)
            .ok_or_else(|| self.err(field, "must be a list of 3 numbers"))?;
        let mut out = [0f32; 3];
        for (i, x) in arr.iter().enumerate() {
            let f = self.float(x, &format!("{field}[{i}]"))? as f32;
            if !f.is_finite() {
                return Err(self.err(&format!("{field}[{i}]"), "is not finite in f32"));
            }
            out[i] = f;
        }
        Ok(out)
    }

    fn opt_size(&self, obj: &Value, field: &str) -> Result<Option<usize>> {
        match obj.get(field.rsplit('.').next().unwrap_or(field)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.size(v, field).map(Some),
        }
    }

    fn opt_float(&self, v: Option<&Value>, field: &str) -> Result<Option<f64>> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.float(v, field).map(Some),
        }
    }
}

impl ModelCard {
    /// Parses a model card. Broken JSON, a missing or wrong required field, `std == 0`,
    /// non-finite values, zero sizes or a crop bigger than the resize give an [`Error::Card`]
    /// naming the file and the field; an unreadable label file gives the error of
    /// [`load_labels`].
    pub fn load(path: &Path) -> Result<ModelCard> {
        let text = crate::files::read_text(path, "model card")?;
        ModelCard::parse(path, &text)
    }

    /// Parses the text of a model card; `path` names it in messages and locates a
    /// `labels_file`.
    pub fn parse(path: &Path, text: &str) -> Result<ModelCard> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::card(path, format!("invalid JSON: {e}")))?;
        if !root.is_object() {
            return Err(Error::card(path, "not a JSON object"));
        }
        let f = Fields { path };
        let input = f.get(&root, "input")?;
        if !input.is_object() {
            return Err(f.err("input", "must be an object"));
        }
        let channels = f.size(f.get(input, "input.channels")?, "input.channels")?;
        let height = f.size(f.get(input, "input.height")?, "input.height")?;
        let width = f.size(f.get(input, "input.width")?, "input.width")?;
        let pixel_scale = f.float(f.get(input, "input.pixel_scale")?, "input.pixel_scale")?;
        let mean = f.triple(f.get(input, "input.mean")?, "input.mean")?;
        let std = f.triple(f.get(input, "input.std")?, "input.std")?;
        let resize_shorter_side = f.opt_size(input, "input.resize_shorter_side")?;
        let center_crop = f.opt_size(input, "input.center_crop")?;
        match input.get("interpolation") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.eq_ignore_ascii_case("bilinear") => {}
            Some(v) => {
                return Err(f.err(
                    "input.interpolation",
                    format!("{v} unsupported (bilinear only)"),
                ))
            }
        }
        let preprocess = Preprocess {
            channels,
            height,
            width,
            pixel_scale: pixel_scale as f32,
            mean,
            std,
            resize_shorter_side,
            center_crop,
        };
        if let Err(msg) = preprocess.validate() {
            return Err(f.err("input", msg));
        }

        let name = match root.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None | Some(Value::Null) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Some(v) => return Err(f.err("name", format!("{v} is not a non-empty string"))),
        };

        let labels = match (root.get("labels"), root.get("labels_file")) {
            (Some(v), _) if !v.is_null() => {
                let arr = v
                    .as_array()
                    .ok_or_else(|| f.err("labels", "must be a list"))?;
                let mut labels = Vec::with_capacity(arr.len());
                for (i, l) in arr.iter().enumerate() {
                    let s = l
                        .as_str()
                        .ok_or_else(|| f.err(&format!("labels[{i}]"), "not a string"))?;
                    labels.push(s.to_string());
                }
                if labels.is_empty() {
                    return Err(f.err("labels", "is empty"));
                }
                Some(labels)
            }
            (_, Some(v)) if !v.is_null() => {
                let s = v
                    .as_str()
                    .ok_or_else(|| f.err("labels_file", "not a string"))?;
                let file = s
                    .split_whitespace()
                    .next()
                    .ok_or_else(|| f.err("labels_file", "is empty"))?;
                let dir = path.parent().unwrap_or_else(|| Path::new(""));
                Some(load_labels(&dir.join(file))?)
            }
            _ => None,
        };

        let mut reference_top1 = f.opt_float(
            root.get("measured_top1_on_test_batch_jpeg"),
            "measured_top1_on_test_batch_jpeg",
        )?;
        let mut reference_top5 = None;
        if let Some(m) = root
            .get("measured_on_imagenet_val_1300")
            .filter(|v| !v.is_null())
        {
            if !m.is_object() {
                return Err(f.err("measured_on_imagenet_val_1300", "must be an object"));
            }
            if reference_top1.is_none() {
                reference_top1 =
                    f.opt_float(m.get("top1"), "measured_on_imagenet_val_1300.top1")?;
            }
            reference_top5 = f.opt_float(m.get("top5"), "measured_on_imagenet_val_1300.top5")?;
        }

        Ok(ModelCard {
            path: path.to_path_buf(),
            name,
            preprocess,
            labels,
            reference_top1,
            reference_top5,
        })
    }

    /// The card beside a model: `dir/NAME.onnx` -> `dir/NAME.json`, loaded if that file exists
    /// (`Ok(None)` if it does not; an error if it exists but is unusable).
    pub fn beside_model(model: &Path) -> Result<Option<ModelCard>> {
        let card = model.with_extension("json");
        if card == model || !card.is_file() {
            return Ok(None);
        }
        ModelCard::load(&card).map(Some)
    }
}
