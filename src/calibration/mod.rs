//! Label-free calibration: HASTE chooses its own settings, layer by layer, for the saving or
//! the accuracy asked for, from a few unlabelled images.
//!
//! 1. The dense network runs once on the images; its outputs are the reference.
//! 2. **Sensitivity** (`Search::profile_layers` in `search.rs`): every convolution that can run HASTE is
//!    compressed alone at each L of the grid and each tile; each run gives that setting's damage (mean KL
//!    divergence from the dense outputs, [`score`]) and its saving (FLOPs with the overhead,
//!    or predicted time, from the merging measured on those images). The runs start at the
//!    layer, from the dense activations there ([`crate::plan::Checkpoint`], carried from one
//!    layer to the next), which halves the stage's time on a chain of layers. Once an L
//!    saves nothing at a tile, no larger L at that tile is run (its buckets only split
//!    further and its hashing costs more).
//! 3. **Combination** (`Search::choose`): for a price `lambda` of damage, every layer takes
//!    the setting that maximizes `saving - lambda * damage` (dense when none is positive).
//!    A bisection over `lambda` runs each combined policy on the images and keeps the one
//!    that meets the target: the largest saving whose predicted top-1 drop ([`score`]: the
//!    larger of the label belief's estimate and the fall in confidence) stays within
//!    `--max-drop`, or the least predicted drop with at least `--flops-reduction` percent
//!    fewer FLOPs.
//!
//! Labels are never read. The same model, images, options and seed give the same policy:
//! no clock is read and every sum runs in a fixed order.

pub mod score;
mod search;

use crate::compress::{file_sha256, CalibrationSummary, Policy, POLICY_FORMAT};
use crate::error::{Error, Result};
use crate::plan::Plan;
use std::path::Path;

/// What the calibration aims for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The largest saving whose predicted top-1 drop stays within this many points.
    MaxDrop(f64),
    /// At least this many percent fewer FLOPs (overhead included), at the least predicted
    /// drop.
    FlopsReduction(f64),
}

/// What a layer's saving is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// FLOPs, HASTE's hashing and merging included.
    Flops,
    /// The wall-clock time the cost model ([`crate::haste::cost`]) predicts.
    Time,
}

/// The calibration's settings.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    pub target: Target,
    pub objective: Objective,
    /// The L values each layer may take.
    pub hyperplanes: Vec<usize>,
    pub seed: u64,
    pub sparsity: f32,
    /// The output tiles each layer may take (every L of the grid at each).
    pub tiles: Vec<usize>,
    /// Bisection steps over the price of damage.
    pub steps: usize,
}

/// The tiles calibration tries by default: 4 and 8, not 16 (which `--tile auto` also
/// offers), since every tile adds a pass per L of the grid and layer, and the CIFAR models'
/// calibration already takes 1-2.5 minutes; `--tile` can ask for others.
pub const CALIBRATION_TILES: [usize; 2] = [4, 8];

impl Default for CalibrateOptions {
    fn default() -> Self {
        let c = crate::haste::HasteConfig::default();
        CalibrateOptions {
            target: Target::MaxDrop(1.0),
            objective: Objective::Flops,
            hyperplanes: vec![6, 8, 10, 12, 16, 20, 24, 32],
            seed: c.seed,
            sparsity: c.sparsity,
            tiles: CALIBRATION_TILES.to_vec(),
            steps: 12,
        }
    }
}

impl CalibrateOptions {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        match self.target {
            Target::MaxDrop(d) if !(d.is_finite() && d >= 0.0) => {
                return bad("--max-drop must be a number of points >= 0")
            }
            Target::FlopsReduction(r) if !(r.is_finite() && r > 0.0 && r < 100.0) => {
                return bad("--flops-reduction must be a percentage between 0 and 100")
            }
            _ => {}
        }
        if self.hyperplanes.is_empty() || self.hyperplanes.iter().any(|&l| !(1..=64).contains(&l)) {
            return bad("the hyperplane grid needs values from 1 to 64");
        }
        if self.tiles.is_empty() || self.tiles.contains(&0) {
            return bad("the tiles need at least one side of at least 1 pixel");
        }
        Ok(())
    }

    /// Every setting a layer may take: each L of the grid at each tile.
    fn grid(&self) -> Vec<search::Setting> {
        self.tiles
            .iter()
            .flat_map(|&tile| {
                self.hyperplanes
                    .iter()
                    .map(move |&hyperplanes| search::Setting { hyperplanes, tile })
            })
            .collect()
    }
}

/// Progress of a calibration: forward passes done and the number planned.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Calibrates `plan` on `images` (`n` images, CHW floats; labels are never needed) and
/// returns the policy, for the model file `model` (its hash goes into the policy). The plan
/// is left dense.
pub fn calibrate(
    plan: &mut Plan,
    model: &Path,
    images: &[f32],
    n: usize,
    options: &CalibrateOptions,
    progress: Progress,
) -> Result<Policy> {
    options.validate()?;
    if n == 0 {
        return Err(Error::InvalidArgument(
            "calibration needs at least one image".into(),
        ));
    }
    let mut s = search::Search::new(plan, images, n, options)?;
    let profiles = s.profile_layers(progress)?;
    let chosen = s.choose(&profiles, progress)?;
    let names: Vec<String> = (0..s.plan.num_convs())
        .map(|k| s.plan.step_name(s.steps[k]).to_string())
        .collect();
    let file = model
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let summary = CalibrationSummary {
        target: match options.target {
            Target::MaxDrop(_) => "max_drop".into(),
            Target::FlopsReduction(_) => "flops_reduction".into(),
        },
        target_value: match options.target {
            Target::MaxDrop(v) | Target::FlopsReduction(v) => v,
        },
        objective: match options.objective {
            Objective::Flops => "flops".into(),
            Objective::Time => "time".into(),
        },
        images: n,
        forward_passes: s.passes,
        predicted_top1_drop: chosen.score.drop,
        predicted_top1_drop_se: chosen.score.drop_se,
        belief_drop: chosen.score.belief_drop,
        confidence_drop: chosen.score.confidence_drop,
        top1_agreement: chosen.score.agreement,
        flops_reduction: chosen.flops_reduction,
        predicted_time_ratio: chosen.time_ratio,
        layers_saving_alone: Some(profiles.iter().filter(|p| !p.is_empty()).count()),
    };
    s.plan.reset_conv_kernels();
    let mut layers = chosen.layers(&names);
    for (k, l) in layers.iter_mut().enumerate() {
        l.magnitude_bins = l.hyperplanes.and(s.magnitude(k));
    }
    Ok(Policy {
        format: POLICY_FORMAT.into(),
        model: file,
        model_sha256: file_sha256(model)?,
        seed: options.seed,
        sparsity: options.sparsity,
        tile: options.tiles[0],
        calibration: Some(summary),
        layers,
    })
}
