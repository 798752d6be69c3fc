//! Command-line arguments (clap derive), shared by the subcommands.

use super::haste_args::HasteKnobs;
use crate::datasets::{load_labels, ModelCard, Preprocess};
use crate::error::{Error, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// haste: make pretrained CNNs cheaper at inference with LSH channel merging (HASTE).
#[derive(Parser, Debug)]
#[command(name = "haste", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// On an error, print everything it has to say (for example every node of an op haste
    /// does not support, not one per op type).
    #[arg(long, global = true)]
    pub verbose: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Evaluate a model on a dataset: accuracy, FLOPs, images per second; with
    /// --hyperplanes, dense and HASTE side by side on the same images.
    Eval(EvalArgs),
    /// Run several L values (dense once): table, CSV/JSON and the trade-off plot.
    Sweep(SweepArgs),
    /// Per-layer diagnostics of HASTE: buckets, bucket sizes, FLOPs, error against dense.
    Inspect(InspectArgs),
    /// Time the dense and the HASTE network on one batch: median, spread, ratio, peak memory.
    Bench(BenchArgs),
    /// Choose HASTE's settings layer by layer from unlabelled images, for a bound on the
    /// predicted top-1 drop or a FLOPs reduction, and write them as a policy file.
    Calibrate(CalibrateArgs),
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images to calibrate on: a flat folder, an ImageFolder tree or a CIFAR file (labels
    /// are never read).
    #[arg(long)]
    pub data: PathBuf,
    /// Use the first N images.
    #[arg(long, default_value_t = 128)]
    pub images: usize,
    /// The largest saving whose predicted top-1 drop stays within this many points.
    #[arg(long, conflicts_with = "flops_reduction")]
    pub max_drop: Option<f64>,
    /// At least this many percent fewer FLOPs (overhead included), at the least predicted drop.
    #[arg(long)]
    pub flops_reduction: Option<f64>,
    /// What a layer's saving counts: `flops` (overhead included) or `time` (the cost model's
    /// predicted time).
    #[arg(long, default_value = "flops", value_parser = ["flops", "time"])]
    pub objective: String,
    /// The L values each layer may take (default 6,8,10,12,16,20,24,32).
    #[arg(long, value_delimiter = ',')]
    pub hyperplanes: Option<Vec<usize>>,
    /// Seed of the random hyperplanes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Probability that a hyperplane entry is zero.
    #[arg(long, default_value_t = 2.0 / 3.0)]
    pub sparsity: f32,
    /// Output patch side P in pixels, or `auto`: every L of the grid is tried at tiles 4
    /// and 8 on each layer (twice the forward passes of one tile).
    #[arg(long, default_value = "auto", value_parser = super::haste_args::parse_tile)]
    pub tile: super::haste_args::TileArg,
    /// Write the policy here (JSON; replaced atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Skip images that cannot be loaded instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

impl CalibrateArgs {
    pub fn objective_time(&self) -> bool {
        self.objective == "time"
    }
}

/// The model and how to feed it.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// ONNX model file (its card NAME.json beside it supplies preprocessing and labels).
    #[arg(long)]
    pub model: PathBuf,
    /// Per-channel mean after scaling, e.g. 0.485,0.456,0.406 (overrides the card).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std after scaling, e.g. 0.229,0.224,0.225 (overrides the card).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub std: Option<Vec<f32>>,
    /// Network input side in pixels (square), overrides the card.
    #[arg(long)]
    pub size: Option<usize>,
    /// Resize the shorter image side to this before cropping (overrides the card).
    #[arg(long)]
    pub resize: Option<usize>,
    /// Center-crop side after resizing (default: --size when --resize is given).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Text file of class names, one per line, in the model's output order.
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

/// The data and how to run over it.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// CIFAR-10 binary file (or a folder holding test_batch.bin) or an ImageFolder root.
    #[arg(long)]
    pub data: PathBuf,
    /// Only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Skip images that cannot be loaded (counted and listed at the end) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Leave out the first N images (for example those a calibration used), then --limit.
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of LSH hyperplanes L (1 to 64): also run HASTE and compare with dense.
    #[arg(long, conflicts_with = "policy")]
    pub hyperplanes: Option<usize>,
    /// A policy from `haste calibrate`: run HASTE with its per-layer settings and compare
    /// with dense (and with the drop it predicted).
    #[arg(long, conflicts_with = "max_drop")]
    pub policy: Option<PathBuf>,
    /// Calibrate first, then evaluate: the policy `haste calibrate --max-drop POINTS` would
    /// write, chosen on the first --calibration-images images (labels unread), scored on the
    /// images after them (--skip below that count is raised to it).
    #[arg(long, conflicts_with = "hyperplanes")]
    pub max_drop: Option<f64>,
    /// With --max-drop: what the calibration saves, FLOPs (overhead included) or the cost
    /// model's predicted time.
    #[arg(long, default_value = "flops", value_parser = ["flops", "time"], requires = "max_drop")]
    pub objective: String,
    /// With --max-drop: images the policy is chosen on (from the start of --data).
    #[arg(long, default_value_t = 128, requires = "max_drop")]
    pub calibration_images: usize,
    /// With --max-drop: also write the calibrated policy here.
    #[arg(long, requires = "max_drop")]
    pub save_policy: Option<PathBuf>,
    #[command(flatten)]
    pub knobs: HasteKnobs,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Comma-separated L values, e.g. 8,10,12,14,16,20.
    #[arg(long, value_delimiter = ',')]
    pub hyperplanes: Vec<usize>,
    /// Comma-separated bounds on the predicted top-1 drop, e.g. 0.25,0.5,1,2,4: one
    /// calibrated policy each (`haste calibrate` on the first --calibration-images images,
    /// labels unread), scored on the data (add --skip to leave those images out).
    #[arg(long, value_delimiter = ',')]
    pub max_drop: Vec<f64>,
    /// Images the calibrated policies are chosen on (from the start of --data).
    #[arg(long, default_value_t = 128)]
    pub calibration_images: usize,
    #[command(flatten)]
    pub knobs: HasteKnobs,
    /// Write the trade-off plot here (.svg or .png).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the table as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long = "json-out")]
    pub json_out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of LSH hyperplanes L (1 to 64).
    #[arg(long, default_value_t = 14, conflicts_with = "policy")]
    pub hyperplanes: usize,
    /// A policy from `haste calibrate`: inspect HASTE with its per-layer settings instead
    /// of one L for every layer.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub knobs: HasteKnobs,
}

impl DataArgs {
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::InvalidArgument("--batch must be at least 1".into()));
        }
        if self.limit == Some(0) {
            return Err(Error::InvalidArgument("--limit must be at least 1".into()));
        }
        Ok(())
    }
}

impl ModelArgs {
    /// Preprocessing and labels: the card beside the model, overridden by flags.
    pub fn resolve(&self, image_shape: &[usize]) -> Result<(Preprocess, Option<Vec<String>>)> {
        let card = ModelCard::beside_model(&self.model)?;
        let flags_given = self.mean.is_some() || self.std.is_some() || self.size.is_some();
        let mut pre = match &card {
            Some(c) => c.preprocess.clone(),
            None if flags_given => match *image_shape {
                [_, h, w] => Preprocess::new(h, w),
                _ => Preprocess::new(self.size.unwrap_or(0), self.size.unwrap_or(0)),
            },
            None => {
                return Err(Error::InvalidArgument(format!(
                    "no model card {} beside the model: give --mean and --std (and --size, --resize, --labels as needed)",
                    self.model.with_extension("json").display()
                )))
            }
        };
        if let Some(s) = self.size {
            pre.height = s;
            pre.width = s;
        }
        if let Some(m) = &self.mean {
            pre.mean = three("--mean", m)?;
        }
        if let Some(s) = &self.std {
            pre.std = three("--std", s)?;
        }
        if self.resize.is_some() {
            pre.resize_shorter_side = self.resize;
            pre.center_crop = self.crop.or(Some(pre.height));
        } else if self.crop.is_some() {
            pre.center_crop = self.crop;
        }
        pre.validate().map_err(|m| {
            Error::InvalidArgument(format!("{}: preprocessing: {m}", self.model.display()))
        })?;
        if image_shape.len() == 3 && (pre.height, pre.width) != (image_shape[1], image_shape[2]) {
            return Err(Error::InvalidArgument(format!(
                "preprocessing produces {}x{} images but {} takes {}x{}",
                pre.height,
                pre.width,
                self.model.display(),
                image_shape[1],
                image_shape[2]
            )));
        }
        let labels = match &self.labels {
            Some(p) => Some(load_labels(p)?),
            None => card.and_then(|c| c.labels),
        };
        Ok((pre, labels))
    }
}

fn three(flag: &str, v: &[f32]) -> Result<[f32; 3]> {
    match v {
        [a, b, c] => Ok([*a, *b, *c]),
        _ => Err(Error::InvalidArgument(format!(
            "{flag} needs 3 comma-separated values, got {}",
            v.len()
        ))),
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images to time on (the first --batch of them); synthetic images when absent.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Also time HASTE with L hyperplanes.
    #[arg(long, conflicts_with = "policy")]
    pub hyperplanes: Option<usize>,
    /// Also time HASTE with a policy from `haste calibrate`.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub knobs: HasteKnobs,
    /// Images per run.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Skip images of --data that cannot be loaded (the next ones are used instead).
    #[arg(long)]
    pub skip_bad: bool,
    /// Timed runs (after warm-up runs filling at least 0.3 s).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Also time every HASTE layer against its dense kernel (best of --runs runs each, at
    /// least two) and print the per-layer picture (with --hyperplanes).
    #[arg(long)]
    pub layers: bool,
    /// With --layers: also time each step of every HASTE layer (hashing, grouping, merges,
    /// kernel) and print it per input channel and window pixel.
    #[arg(long, requires = "layers")]
    pub steps: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}
