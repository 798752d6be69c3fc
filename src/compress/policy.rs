//! A per-layer compression policy: which convolutions run HASTE and with which settings, as
//! a JSON file a person can read and edit. [`crate::calibration::calibrate`] writes one;
//! [`Compression::apply_policy`] puts it on a plan (any number of times, without reloading
//! the model: one loaded network, several operating points).

use super::variants;
use super::{CompressOptions, Compression};
use crate::error::{Error, Result};
use crate::haste::cost::MAX_PREDICTED_TIME_RATIO;
use crate::haste::HasteConfig;
use crate::plan::Plan;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `format` every policy file carries.
pub const POLICY_FORMAT: &str = "haste-policy/1";

/// Largest policy file read (a policy lists a few hundred layers at most).
const MAX_POLICY_BYTES: u64 = 16 << 20;

/// A compression policy for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// [`POLICY_FORMAT`].
    pub format: String,
    /// The model's file name (for people; the hash is what is checked).
    pub model: String,
    /// SHA-256 of the model file, hex: a policy is refused for any other model.
    pub model_sha256: String,
    /// Seed of every layer's hyperplanes.
    pub seed: u64,
    /// Sparsity of the hyperplanes, shared by the layers, and the output tile of the layers
    /// that do not give their own.
    pub sparsity: f32,
    pub tile: usize,
    /// What the calibration was asked and what it predicts (absent in a hand-written file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationSummary>,
    /// One entry per convolution, in execution order.
    pub layers: Vec<LayerPolicy>,
}

/// One convolution's setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPolicy {
    /// The plan's name for the convolution step (the ONNX node names it fuses).
    pub name: String,
    /// `"haste"` or `"dense"`.
    pub kernel: String,
    /// L, for a HASTE layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperplanes: Option<usize>,
    /// The output tile of a HASTE layer, when not the policy's `tile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tile: Option<usize>,
    /// Magnitude-bin step (log2 of the channel norm), for a HASTE layer that uses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magnitude_bins: Option<f32>,
    /// Dense and predicted FLOPs of the layer per image (overhead included), from the
    /// calibration images.
    #[serde(default)]
    pub dense_flops: u64,
    #[serde(default)]
    pub flops: u64,
}

/// What a calibration was asked for, what it used and what it predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSummary {
    /// `"max_drop"` or `"flops_reduction"`, and its value (points, percent).
    pub target: String,
    pub target_value: f64,
    /// `"flops"` or `"time"`.
    pub objective: String,
    pub images: usize,
    pub forward_passes: usize,
    /// Predicted top-1 drop (points) and its standard error over the images.
    pub predicted_top1_drop: f64,
    pub predicted_top1_drop_se: f64,
    /// The two estimates the prediction is the larger of ([`crate::calibration::score`]):
    /// the label belief's, and the fall in mean confidence (absent in older files).
    #[serde(default)]
    pub belief_drop: f64,
    #[serde(default)]
    pub confidence_drop: f64,
    /// Share of the images whose top-1 class is the dense network's.
    pub top1_agreement: f64,
    /// FLOPs reduction (percent, overhead included) on the calibration images.
    pub flops_reduction: f64,
    /// Predicted time over dense of the convolutions (cost model).
    pub predicted_time_ratio: f64,
    /// Layers that saved (in the objective's terms) at some setting of the grid when run
    /// alone: the ones the policy could choose from (absent in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_saving_alone: Option<usize>,
}

impl LayerPolicy {
    pub fn is_haste(&self) -> bool {
        self.kernel == "haste"
    }
}

impl Policy {
    /// Reads a policy and checks it is for the model file `model` (by hash) and well formed.
    pub fn load(path: &Path, model: &Path) -> Result<Policy> {
        let bytes = crate::files::read_regular(path, MAX_POLICY_BYTES, "policy file")?;
        let policy = Self::parse(path, &bytes)?;
        let hash = file_sha256(model)?;
        if policy.model_sha256 != hash {
            return Err(Error::dataset(
                path,
                format!(
                    "this policy is for another model ({}, SHA-256 {}), not {}",
                    policy.model,
                    short(&policy.model_sha256),
                    model.display()
                ),
            ));
        }
        Ok(policy)
    }

    /// Parses a policy file's bytes (`path` names it in errors) and checks its format; the
    /// model hash is checked by [`Self::load`], the layers against a plan when applied.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Policy> {
        let policy: Policy = serde_json::from_slice(bytes)
            .map_err(|e| Error::dataset(path, format!("not a haste policy file: {e}")))?;
        if policy.format != POLICY_FORMAT {
            return Err(Error::dataset(
                path,
                format!(
                    "policy format `{}`; this haste reads `{POLICY_FORMAT}`",
                    policy.format
                ),
            ));
        }
        Ok(policy)
    }

    /// Writes the policy as pretty JSON, through a temporary file renamed over `path`, so an
    /// interrupted write never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Internal(format!("policy to JSON: {e}")))?;
        text.push('\n');
        crate::files::write_atomic(path, text.as_bytes())
    }

    /// Number of layers on HASTE.
    pub fn haste_layers(&self) -> usize {
        self.layers.iter().filter(|l| l.is_haste()).count()
    }

    /// Why a calibrated policy keeps every layer dense, in one sentence; `None` when some
    /// layer runs HASTE or the file does not say (older files, hand-written ones).
    pub fn why_all_dense(&self) -> Option<String> {
        let c = self.calibration.as_ref()?;
        let saving = c.layers_saving_alone?;
        if self.haste_layers() > 0 {
            return None;
        }
        if saving > 0 && c.target != "max_drop" {
            // A FLOPs floor met by the dense network (0 %): nothing to explain.
            return None;
        }
        Some(match (saving, c.objective.as_str()) {
            (0, "time") => format!(
                "no layer is predicted at most {MAX_PREDICTED_TIME_RATIO}x dense (the time model's margin) at any L and tile on these images: the channels HASTE merges here do not pay for its per-patch work (`--objective flops` counts FLOPs instead)"
            ),
            (0, _) => "no layer saves FLOPs at any L and tile on these images: its hashing costs more than its merges save".into(),
            (1, _) => "1 layer saves on its own (at some L and tile), but every policy with it predicts a larger drop than the bound (a larger --max-drop may let it in)".into(),
            (n, _) => format!(
                "{n} layers save on their own (at some L and tile), but every policy tried from them predicts a larger drop than the bound (a larger --max-drop may let them in)"
            ),
        })
    }

    /// Checks the policy against the plan's convolutions and settings.
    fn check(&self, plan: &Plan) -> Result<()> {
        let convs = plan.per_conv_macs();
        let bad = |m: String| Error::InvalidArgument(format!("policy: {m}"));
        if convs.len() != self.layers.len() {
            return Err(bad(format!(
                "{} layers, the model has {} convolutions",
                self.layers.len(),
                convs.len()
            )));
        }
        for (k, (&(step, _), l)) in convs.iter().zip(&self.layers).enumerate() {
            if l.name != plan.step_name(step) {
                return Err(bad(format!(
                    "layer {k} is `{}`, the model's is `{}`",
                    l.name,
                    plan.step_name(step)
                )));
            }
            match (l.kernel.as_str(), l.hyperplanes) {
                ("dense", _) => {}
                ("haste", Some(_)) => {
                    let (op, h, w) = plan.conv_at(step).ok_or_else(|| bad("conv step".into()))?;
                    let p = &op.params;
                    if k == 0 || p.groups != 1 || p.dilation != (1, 1) || h * w == 1 {
                        return Err(bad(format!(
                            "layer {k} (`{}`) cannot run HASTE (the first, a grouped or dilated \
                             convolution, or one on a single pixel)",
                            l.name
                        )));
                    }
                }
                ("haste", None) => {
                    return Err(bad(format!("layer {k} is HASTE without hyperplanes")))
                }
                (other, _) => {
                    return Err(bad(format!(
                        "layer {k}: kernel `{other}` (expected `haste` or `dense`)"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The HASTE settings of layer `k` (`None` when it is dense).
    pub fn layer_config(&self, k: usize) -> Option<HasteConfig> {
        let l = self.layers.get(k).filter(|l| l.is_haste())?;
        Some(HasteConfig {
            hyperplanes: l.hyperplanes?,
            sparsity: self.sparsity,
            tile: l.tile.unwrap_or(self.tile),
            seed: self.seed,
            magnitude_bins: l.magnitude_bins,
            ..HasteConfig::default()
        })
    }
}

impl Compression {
    /// Puts `policy` on the plan: HASTE with each layer's settings where it says so, the
    /// dense kernel elsewhere. Deterministic; can be called again with another policy.
    pub fn apply_policy(plan: &mut Plan, policy: &Policy) -> Result<Compression> {
        Self::apply_policy_probed(plan, policy, false)
    }

    /// [`Self::apply_policy`]; with `measure_error`, each HASTE layer also measures its
    /// output's relative error against the dense one ([`super::ConvLayerReport`]'s
    /// `relative_error`, what `inspect` shows), at the cost of running both.
    pub fn apply_policy_probed(
        plan: &mut Plan,
        policy: &Policy,
        measure_error: bool,
    ) -> Result<Compression> {
        policy.check(plan)?;
        let build = variants::find(variants::DEFAULT)?;
        plan.reset_conv_kernels();
        let steps: Vec<usize> = plan.per_conv_macs().iter().map(|&(s, _)| s).collect();
        let mut config = HasteConfig::default();
        for (k, &step) in steps.iter().enumerate() {
            let Some(c) = policy.layer_config(k) else {
                continue;
            };
            c.validate()?;
            let (op, _, _) = plan
                .conv_at(step)
                .ok_or_else(|| Error::Internal("conv step".into()))?;
            let kernel = if measure_error {
                super::probe::ErrorProbe::build(op, &c, k, build)?
            } else {
                build(op, &c, k)?
            };
            plan.set_conv_kernel(step, kernel)?;
            config = c;
        }
        let options = CompressOptions {
            config,
            start_layer: 1,
            skip_pointwise: false,
            cost_aware: false,
            measure_error,
            ..CompressOptions::default()
        };
        Ok(Compression::with_policy(plan, options))
    }
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = crate::files::read_regular(path, crate::files::MAX_MODEL_BYTES, "model file")?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(objective: &str, saving: Option<usize>, kernels: &[&str]) -> Policy {
        let layer = |kernel: &&str| LayerPolicy {
            name: "conv".into(),
            kernel: kernel.to_string(),
            hyperplanes: (*kernel == "haste").then_some(8),
            tile: None,
            magnitude_bins: None,
            dense_flops: 100,
            flops: 100,
        };
        Policy {
            format: POLICY_FORMAT.into(),
            model: "m.onnx".into(),
            model_sha256: String::new(),
            seed: 0,
            sparsity: 0.5,
            tile: 4,
            calibration: Some(CalibrationSummary {
                target: "max_drop".into(),
                target_value: 1.0,
                objective: objective.into(),
                images: 8,
                forward_passes: 1,
                predicted_top1_drop: 0.0,
                predicted_top1_drop_se: 0.0,
                belief_drop: 0.0,
                confidence_drop: 0.0,
                top1_agreement: 1.0,
                flops_reduction: 0.0,
                predicted_time_ratio: 1.0,
                layers_saving_alone: saving,
            }),
            layers: kernels.iter().map(layer).collect(),
        }
    }

    /// An all-dense calibrated policy says whether nothing could save (and, in time, the
    /// model's margin) or the bound kept the layers that could out; a policy with a HASTE
    /// layer, an older file or a hand-written one says nothing.
    #[test]
    fn an_all_dense_policy_says_why() {
        let why = |p: Policy| p.why_all_dense().unwrap_or_default();
        assert!(why(policy("time", Some(0), &["dense"; 3])).contains("0.9x dense"));
        assert!(why(policy("flops", Some(0), &["dense"; 3])).contains("saves FLOPs"));
        assert!(why(policy("time", Some(2), &["dense"; 3])).starts_with("2 layers save"));
        assert!(why(policy("flops", Some(1), &["dense"; 3])).contains("--max-drop"));
        assert_eq!(
            policy("time", Some(2), &["dense", "haste"]).why_all_dense(),
            None
        );
        assert_eq!(policy("time", None, &["dense"; 3]).why_all_dense(), None);
        let mut floor = policy("flops", Some(2), &["dense"; 3]);
        floor.calibration.as_mut().expect("summary").target = "flops_reduction".into();
        assert_eq!(floor.why_all_dense(), None);
        let mut hand_written = policy("time", Some(0), &["dense"; 3]);
        hand_written.calibration = None;
        assert_eq!(hand_written.why_all_dense(), None);
        // The count survives the file; an older file without it reads as unknown.
        let p = policy("time", Some(3), &["dense"]);
        let text = serde_json::to_string(&p).expect("serializes");
        assert_eq!(
            Policy::parse(Path::new("p.json"), text.as_bytes()).ok(),
            Some(p)
        );
        let older = text.replace(",\"layers_saving_alone\":3", "");
        assert_ne!(older, text);
        let read = Policy::parse(Path::new("p.json"), older.as_bytes()).expect("older file");
        assert_eq!(read.calibration.and_then(|c| c.layers_saving_alone), None);
    }
}
