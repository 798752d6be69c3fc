//! The time model's constants refitted on the user's machine, read from the file the
//! environment variable `HASTE_COST_MODEL` names.
//!
//! haste's built-in constants ([`CostModel::of`]) were fitted on one machine per tier; on
//! another, `haste bench --layers --json` times the layers and `bench/fit_cost_model.py
//! --out FILE` refits them. Pointing `HASTE_COST_MODEL` at that file makes every choice that
//! reads the model (the data-free gate, the tile, the layers kept, `calibrate --objective
//! time`) use the refitted constants, without rebuilding haste. The file is JSON:
//!
//! ```json
//! {"format": "haste-cost-model/1",
//!  "tiers": {"avx2": {"spatial": {"kept": 1.05, "fixed": 9.6, "input_merge": 14.9,
//!                                 "per_input_channel": 1400, "per_output_channel": 254,
//!                                 "merge": 2.7, "merge_per_mb": 0.34}}}}
//! ```
//!
//! A tier or kind (`spatial`, `pointwise`) the file leaves out keeps its built-in constants.
//! The terms added later (`multi`, `finish`, `finish_exp`, `scaled_input`) may be left out,
//! as a file fitted by an older haste does: they are then 0.
//! The same file gives the same choices. A file that cannot be read, is not this JSON, or
//! has a constant below 0 or not finite (or `kept` at 0) is a one-line error when a command
//! starts or HASTE is put on a plan.

use super::cost::CostModel;
use crate::error::{Error, Result};
use crate::kernels::isa::Isa;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The environment variable naming a refitted cost model file.
pub const COST_MODEL_VARIABLE: &str = "HASTE_COST_MODEL";

/// The `format` a cost model file declares.
pub const COST_MODEL_FORMAT: &str = "haste-cost-model/1";

/// A cost model file: constants per tier (by [`Isa::name`]) and kind.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CostFile {
    pub format: String,
    pub tiers: BTreeMap<String, TierModels>,
}

/// The constants of one tier for spatial (K > 1) and 1x1 convolutions.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierModels {
    #[serde(default)]
    pub spatial: Option<CostModel>,
    #[serde(default)]
    pub pointwise: Option<CostModel>,
}

impl CostFile {
    /// Parses and checks the text of a cost model file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<CostFile> {
        let bad = |what: String| Error::InvalidArgument(format!("{origin}: {what}"));
        let file: CostFile = serde_json::from_str(text)
            .map_err(|e| bad(format!("not a haste cost model file ({e})")))?;
        if file.format != COST_MODEL_FORMAT {
            return Err(bad(format!(
                "format `{}`, expected `{COST_MODEL_FORMAT}`",
                file.format
            )));
        }
        for (tier, models) in &file.tiers {
            if Isa::from_name(tier).is_none() {
                let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
                return Err(bad(format!(
                    "unknown tier `{tier}` (one of {})",
                    names.join(", ")
                )));
            }
            for (kind, m) in [
                ("spatial", &models.spatial),
                ("pointwise", &models.pointwise),
            ] {
                if let Some(m) = m {
                    if !m.constants().iter().all(|v| v.is_finite() && *v >= 0.0) {
                        return Err(bad(format!(
                            "{tier} {kind}: every constant must be a finite number at least 0"
                        )));
                    }
                    // The break-even share (`overhead_share`) divides by it.
                    if m.kept <= 0.0 {
                        return Err(bad(format!("{tier} {kind}: `kept` must be above 0")));
                    }
                }
            }
        }
        Ok(file)
    }

    /// The file's constants for `isa` and the kind, if it has them.
    pub fn model(&self, isa: Isa, pointwise: bool) -> Option<CostModel> {
        let models = self.tiers.get(isa.name())?;
        if pointwise {
            models.pointwise
        } else {
            models.spatial
        }
    }
}

/// Reads the file `HASTE_COST_MODEL` names; `None` when the variable is unset or empty.
pub fn from_environment() -> Result<Option<CostFile>> {
    let Ok(path) = std::env::var(COST_MODEL_VARIABLE) else {
        return Ok(None);
    };
    let path = path.trim();
    if path.is_empty() {
        return Ok(None);
    }
    let origin = format!("{COST_MODEL_VARIABLE}={path}");
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidArgument(format!("{origin}: cannot read it ({e})")))?;
    CostFile::parse(&text, &origin).map(Some)
}

/// Fails with a one-line message when `HASTE_COST_MODEL` names a file that is not a valid
/// cost model.
pub fn check_environment() -> Result<()> {
    from_environment().map(|_| ())
}

/// The file `HASTE_COST_MODEL` names, read once per process (`None` when unset, or invalid:
/// commands and plans refuse an invalid one before any model is asked).
pub fn loaded() -> Option<&'static CostFile> {
    static LOADED: OnceLock<Option<CostFile>> = OnceLock::new();
    LOADED
        .get_or_init(|| from_environment().ok().flatten())
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_the_tiers_and_kinds_it_names() {
        let m = CostModel::AVX2;
        let spatial = serde_json::to_string(&m).expect("json");
        let text = format!(
            r#"{{"format": "{COST_MODEL_FORMAT}", "tiers": {{"avx2": {{"spatial": {spatial}}}}}}}"#
        );
        let file = CostFile::parse(&text, "f.json").expect("valid");
        assert_eq!(file.model(Isa::Avx2, false), Some(m));
        assert_eq!(file.model(Isa::Avx2, true), None);
        assert_eq!(file.model(Isa::Avx512, false), None);
    }

    /// A file of the seven constants an older haste fitted loads, its later terms at 0.
    #[test]
    fn an_older_file_leaves_the_later_terms_at_zero() {
        let text = r#"{"format": "haste-cost-model/1", "tiers": {"avx512": {"pointwise":
            {"kept": 1.2, "fixed": 20, "input_merge": 1, "per_input_channel": 500,
            "per_output_channel": 300, "merge": 4, "merge_per_mb": 0}}}}"#;
        let m = CostFile::parse(text, "old.json")
            .expect("valid")
            .model(Isa::Avx512, true)
            .expect("pointwise");
        assert_eq!((m.kept, m.per_input_channel), (1.2, 500.0));
        assert_eq!([m.multi, m.finish, m.finish_exp, m.scaled_input], [0.0; 4]);
    }

    #[test]
    fn bad_files_are_one_line_errors_naming_the_file() {
        let cases = [
            ("{", "not a haste cost model file"),
            (r#"{"format": "other/1", "tiers": {}}"#, "format"),
            (
                r#"{"format": "haste-cost-model/1", "tiers": {"avx9": {}}}"#,
                "unknown tier",
            ),
            (
                r#"{"format": "haste-cost-model/1", "tiers": {"sse2": {"spatial": {"kept": -1,
                "fixed": 1, "input_merge": 0, "per_input_channel": 0, "per_output_channel": 0,
                "merge": 0, "merge_per_mb": 0}}}}"#,
                "at least 0",
            ),
            (
                r#"{"format": "haste-cost-model/1", "tiers": {"sse2": {"spatial": {"kept": 1}}}}"#,
                "not a haste cost model file",
            ),
            (
                r#"{"format": "haste-cost-model/1", "tiers": {"avx2": {"pointwise": {"kept": 0,
                "fixed": 1, "input_merge": 0, "per_input_channel": 0, "per_output_channel": 0,
                "merge": 0, "merge_per_mb": 0}}}}"#,
                "`kept` must be above 0",
            ),
        ];
        for (text, what) in cases {
            let e = CostFile::parse(text, "HASTE_COST_MODEL=m.json").expect_err(text);
            let msg = e.to_string();
            assert!(msg.contains("m.json") && msg.contains(what), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}
