//! Helpers shared by the integration tests: paths into ../shared and JSON fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod edit;

/// A fresh, empty folder under the system temp dir for one test (`haste-{kind}-{pid}-{name}`),
/// removed with everything in it when dropped, whether the test passed or not.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(kind: &str, name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("haste-{kind}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `../shared` beside the project root.
pub fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared"))
}

pub fn model(name: &str) -> PathBuf {
    shared().join("models").join(format!("{name}.onnx"))
}

pub fn cifar_test() -> PathBuf {
    shared().join("data/cifar10/test_batch_jpeg.bin")
}

pub fn cifar_first20() -> PathBuf {
    shared().join("data/cifar10/test_first20_lossless.bin")
}

pub fn imagenet_val() -> PathBuf {
    shared().join("data/imagenet-val-1300/val")
}

pub fn read_json(path: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// The `haste` binary built for this test run.
pub fn haste_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_haste"))
}

/// Runs haste with `args`; returns (exit code, stdout, stderr).
pub fn run_haste(args: &[&str]) -> (i32, String, String) {
    let out = haste_bin().args(args).output().expect("haste runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `haste SUB --model MODEL --data DATA EXTRA... --json`, asserts success and parses
/// stdout as one JSON object.
pub fn haste_json(
    sub: &str,
    model: &std::path::Path,
    data: &std::path::Path,
    extra: &[&str],
) -> serde_json::Value {
    let (m, d) = (model.to_string_lossy(), data.to_string_lossy());
    let mut args = vec![sub, "--model", &m, "--data", &d, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = run_haste(&args);
    assert_eq!(code, 0, "haste {args:?} failed: {err}");
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("stdout of {args:?} is not one JSON object ({e}): {out}"))
}
