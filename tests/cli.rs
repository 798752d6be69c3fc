//! The command line: bad input gives a one-line error naming the file, exit code 2, no panic.

mod common;

use common::*;

fn temp_dir(name: &str) -> TempDir {
    TempDir::new("cli", name)
}

fn assert_clean_error(args: &[&str], must_name: &str) {
    let (code, _, err) = run_haste(args);
    assert_eq!(code, 2, "exit code for {args:?}; stderr: {err}");
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line for {args:?}: {err}"
    );
    assert!(
        err.contains(must_name),
        "error for {args:?} should name {must_name}: {err}"
    );
}

#[test]
fn eval_json_has_the_documented_keys() {
    let m = model("resnet20-cifar10");
    let d = cifar_test();
    let (code, out, err) = run_haste(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        d.to_str().unwrap(),
        "--limit",
        "64",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).expect("stdout is one JSON object");
    for key in [
        "model",
        "images",
        "top1",
        "top5",
        "dense_flops",
        "seconds",
        "images_per_second",
    ] {
        assert!(j.get(key).is_some(), "missing {key} in {j}");
    }
    assert_eq!(j["images"], 64);
    assert_eq!(j["dense_flops"], 40_551_040);
}

#[test]
fn bad_models_are_clean_errors() {
    let dir = temp_dir("models");
    let data = cifar_first20();
    let data = data.to_str().unwrap();
    let good = std::fs::read(model("resnet20-cifar10")).expect("model bytes");
    for (name, bytes) in [
        ("truncated.onnx", good[..good.len() / 2].to_vec()),
        (
            "random.onnx",
            (0..5000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("empty.onnx", vec![]),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        assert_clean_error(
            &[
                "eval",
                "--model",
                p.to_str().unwrap(),
                "--data",
                data,
                "--mean",
                "0,0,0",
                "--std",
                "1,1,1",
            ],
            name,
        );
    }
    assert_clean_error(
        &["eval", "--model", "/nonexistent/model.onnx", "--data", data],
        "/nonexistent/model.onnx",
    );
}

#[test]
fn bad_data_and_flags_are_clean_errors() {
    let dir = temp_dir("data");
    let m = model("resnet20-cifar10");
    let m = m.to_str().unwrap();
    let bad = dir.join("bad.bin");
    std::fs::write(&bad, vec![0u8; 3073 * 2 + 5]).expect("write");
    assert_clean_error(
        &["eval", "--model", m, "--data", bad.to_str().unwrap()],
        "bad.bin",
    );
    let d = cifar_first20();
    assert_clean_error(
        &[
            "eval",
            "--model",
            m,
            "--data",
            d.to_str().unwrap(),
            "--batch",
            "0",
        ],
        "batch",
    );
}

#[test]
fn a_model_without_card_needs_flags() {
    let dir = temp_dir("nocard");
    let p = dir.join("copy.onnx");
    std::fs::copy(model("resnet20-cifar10"), &p).expect("copy");
    let d = cifar_first20();
    assert_clean_error(
        &[
            "eval",
            "--model",
            p.to_str().unwrap(),
            "--data",
            d.to_str().unwrap(),
        ],
        "copy.json",
    );
    let (code, out, err) = run_haste(&[
        "eval",
        "--model",
        p.to_str().unwrap(),
        "--data",
        d.to_str().unwrap(),
        "--mean",
        "0.485,0.456,0.406",
        "--std",
        "0.229,0.224,0.225",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"images\":20"), "{out}");
}

#[test]
fn bench_reports_dense_and_haste_timings_and_memory() {
    let m = model("resnet20-cifar10");
    let d = cifar_first20();
    let (code, out, err) = run_haste(&[
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--data",
        d.to_str().unwrap(),
        "--batch",
        "8",
        "--runs",
        "2",
        "--hyperplanes",
        "12",
        "--all-layers",
        "--layers",
        "--steps",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    // Every HASTE layer's time, step by step; the fixed work is the sum of its steps.
    let steps = j["steps"].as_array().expect("per-step rows");
    assert_eq!(steps.len(), 17, "{j}");
    for row in steps {
        let per = &row["per_channel_pixel"];
        let v = |k: &str| per[k].as_f64().unwrap_or_else(|| panic!("{k} in {row}"));
        assert!(v("kernel") > 0.0 && v("project") > 0.0, "{row}");
        let parts = ["window_copy", "project", "code", "group", "input_merge"];
        let rest = ["row_table", "bookkeeping", "layout"];
        let sum: f64 = parts.iter().chain(&rest).map(|k| v(k)).sum();
        assert!((sum - v("fixed")).abs() <= 1e-9 * sum.max(1.0), "{row}");
        assert!(
            row["channel_pixels"].as_u64().is_some_and(|n| n > 0),
            "{row}"
        );
        // The reduced convolution's multiply-add rate over the dense layer's, for every timed
        // layer (its value is a timing: the unit test in `bench_steps` checks the formula).
        let rate = row["kernel_rate_vs_dense"].as_f64().expect("a kernel rate");
        assert!(rate.is_finite() && rate > 0.0, "{row}");
    }
    for key in [
        "dense_seconds_median",
        "haste_seconds_median",
        "speedup",
        "flops_reduction",
        "peak_rss_bytes",
    ] {
        assert!(j.get(key).is_some(), "missing {key}: {j}");
    }
    assert!(j["dense_seconds_min"].as_f64() <= j["dense_seconds_max"].as_f64());
    // Every compressed layer is timed against its dense kernel: ResNet-20 has 19
    // convolutions; with --all-layers all but the first two get HASTE.
    let layers = j["layers"].as_array().expect("per-layer rows");
    assert_eq!(layers.len(), 17, "{j}");
    // How close the time model came, over the same layers (the text output's last line).
    let check = &j["model_check"];
    assert_eq!(check["layers"].as_u64(), Some(17), "{j}");
    assert!(check["within_10_percent"].as_u64() <= Some(17), "{j}");
    assert!(
        check["mean_error"].as_f64().is_some_and(|e| e >= 0.0),
        "{j}"
    );
    for l in layers {
        assert!(l["dense_seconds"].as_f64().is_some_and(|t| t > 0.0), "{l}");
        assert!(l["haste_seconds"].as_f64().is_some_and(|t| t > 0.0), "{l}");
        assert!(l["flops_reduction"].as_f64().is_some(), "{l}");
        // The cost model's terms, to refit it (bench/fit_cost_model.py): the prediction adds
        // the fixed work to the share of channels kept.
        let kept = l["cost_terms"]["kept"].as_f64().expect("cost terms");
        assert!((0.0..=1.0).contains(&kept), "{l}");
        // ResNet-20's layers finish with a ReLU and read no folded scale; every 3x3 output
        // is finished once (a term per dense multiply-add: 1 / (9 c_in)).
        let term = |k: &str| l["cost_terms"][k].as_f64().expect("a term");
        let c_in = l["c_in"].as_f64().expect("c_in");
        assert!((term("finish") * 9.0 * c_in - 1.0).abs() < 1e-9, "{l}");
        assert_eq!(
            (term("finish_exp"), term("scaled_input")),
            (0.0, 0.0),
            "{l}"
        );
        assert!(term("multi") >= 0.0, "{l}");
        assert!(
            l["predicted_time_ratio"].as_f64().is_some_and(|p| p > kept),
            "{l}"
        );
    }
    // Without --all-layers, only the layers predicted at most 0.9 of dense on the first
    // batch keep HASTE, and the first layers of ResNet-20 (16 channels at 32 x 32) are too
    // small for it. The report's prediction comes from the final network's merging, where
    // the layers that went back to dense feed a layer other inputs than in the choice (run
    // with every candidate on HASTE), so it is close to the choice's, not equal: on these
    // synthetic images one 32-channel layer chosen at 0.9 or less reports 1.02.
    let quick = [
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--batch",
        "2",
        "--runs",
        "1",
        "--hyperplanes",
        "12",
        "--layers",
    ];
    let (code, out, err) = run_haste(&[&quick[..], &["--json"]].concat());
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("bench --json");
    let layers = j["layers"].as_array().expect("per-layer rows");
    assert!(layers.len() < 17, "{j}");
    for l in layers {
        let predicted = l["predicted_time_ratio"].as_f64().expect("predicted");
        assert!(predicted < 1.1, "{l}");
        assert!(l["c_in"].as_u64() > Some(16), "{l}");
    }
    // As text, the per-layer table ends with how close the time model came on the layers
    // timed: every HASTE layer counted.
    let (code, out, err) = run_haste(&[&quick[..], &["--all-layers"]].concat());
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("model   predicted time within 10 %"))
        .unwrap_or_else(|| panic!("no model line: {out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    // "... on N of M layers (...".
    let at = words
        .iter()
        .position(|&w| w == "layers")
        .expect("N of M layers");
    let (n, total): (usize, usize) = (
        words[at - 3].parse().expect("N"),
        words[at - 1].parse().expect("M"),
    );
    assert!(total == 17 && n <= total, "{line}");
    assert_clean_error(
        &["bench", "--model", m.to_str().unwrap(), "--runs", "0"],
        "runs",
    );
    // --steps needs --layers (a usage error from the argument parser).
    let (code, _, err) = run_haste(&["bench", "--model", m.to_str().unwrap(), "--steps"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--layers") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn cifar_data_for_an_imagenet_model_is_refused() {
    let m = model("tiny-darknet-imagenet");
    let d = cifar_first20();
    assert_clean_error(
        &[
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data",
            d.to_str().unwrap(),
        ],
        "10 classes",
    );
}

/// `HASTE_ISA` forces a kernel tier: `bench --json` names the tier it ran (the same logits
/// on every tier are checked by the kernel and engine tests, which `.ci/run` repeats per
/// tier); an unknown tier, or one this CPU lacks, is a one-line error with exit code 2.
#[test]
fn the_kernel_tier_is_forced_by_haste_isa_and_refused_when_unknown() {
    use haste::kernels::isa::Isa;
    let m = model("resnet20-cifar10");
    let m = m.to_str().unwrap();
    let args = [
        "bench", "--model", m, "--batch", "2", "--runs", "1", "--json",
    ];
    for isa in Isa::available() {
        let out = haste_bin()
            .args(args)
            .env("HASTE_ISA", isa.name())
            .output()
            .expect("haste runs");
        assert!(
            out.status.success(),
            "{isa}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(j["isa"], isa.name());
    }
    let unsupported = Isa::ALL.into_iter().find(|i| !i.supported());
    for name in ["sse9"].into_iter().chain(unsupported.map(|i| i.name())) {
        let out = haste_bin()
            .args(args)
            .env("HASTE_ISA", name)
            .output()
            .expect("haste runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(
            err.contains("HASTE_ISA") && err.contains(name),
            "{name}: {err}"
        );
    }
}

/// `HASTE_COST_MODEL` names a refitted cost model file (as `bench/fit_cost_model.py --out`
/// writes): its constants decide where HASTE runs. A model that makes every patch dear keeps
/// every layer dense by the data-free gate; the built-in one lets some of ResNet-18's layers
/// through; a file that is not a cost model is a one-line error naming it, exit 2.
#[test]
fn a_refitted_cost_model_file_decides_the_layers() {
    let dir = temp_dir("cost-model");
    let m = model("resnet18-randominit-imagenet");
    let d = imagenet_val();
    let (m, d) = (m.to_string_lossy(), d.to_string_lossy());
    let args = [
        "inspect", "--model", &m, "--data", &d, "--limit", "2", "--batch", "2", "--json",
    ];
    let dear = haste::haste::cost::CostModel {
        per_input_channel: 1e9,
        ..haste::haste::cost::CostModel::AVX512
    };
    let tiers: serde_json::Map<String, serde_json::Value> = haste::kernels::isa::Isa::ALL
        .iter()
        .map(|i| (i.name().to_string(), serde_json::json!({ "spatial": dear })))
        .collect();
    let file = dir.join("dear.json");
    let text = serde_json::json!({ "format": "haste-cost-model/1", "tiers": tiers });
    std::fs::write(&file, text.to_string()).expect("write");
    let modes = |env: Option<&std::path::Path>| -> Vec<String> {
        let mut cmd = haste_bin();
        if let Some(f) = env {
            cmd.env("HASTE_COST_MODEL", f);
        }
        let out = cmd
            .args(args)
            .args(["--hyperplanes", "14"])
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        j["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["mode"].to_string())
            .collect()
    };
    let built_in = modes(None);
    assert!(built_in.iter().any(|m| m.contains("HASTE")), "{built_in:?}");
    let refitted = modes(Some(&file));
    assert!(
        !refitted.iter().any(|m| m.contains("HASTE")),
        "{refitted:?}"
    );
    assert!(
        refitted.iter().any(|m| m.contains("overhead")),
        "{refitted:?}"
    );
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"format\": \"haste-cost-model/1\"}").expect("write");
    let out = haste_bin()
        .env("HASTE_COST_MODEL", &bad)
        .args(args)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.json") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A policy file cut short, of another format or not JSON at all is a one-line error naming
/// it (exit 2), for every command that takes `--policy`; the whole file loads.
#[test]
fn a_corrupt_or_truncated_policy_is_a_one_line_error() {
    let dir = temp_dir("policy");
    let m = model("resnet20-cifar10");
    let d = cifar_first20();
    let (m, d) = (m.to_str().unwrap(), d.to_str().unwrap());
    let good = dir.join("good.json");
    let g = good.to_str().unwrap();
    let (code, _, err) = run_haste(&[
        "calibrate",
        "--model",
        m,
        "--data",
        d,
        "--images",
        "8",
        "--max-drop",
        "1",
        "--out",
        g,
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read(&good).expect("policy written");
    let cases = [
        ("truncated.json", text[..text.len() / 2].to_vec()),
        ("garbage.json", b"\x00\x01 not json".to_vec()),
        (
            "other-format.json",
            String::from_utf8_lossy(&text)
                .replace("haste-policy/1", "haste-policy/9")
                .into_bytes(),
        ),
    ];
    for (name, bytes) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        let p = p.to_str().unwrap();
        for sub in ["eval", "inspect"] {
            let args = [
                sub, "--model", m, "--data", d, "--limit", "4", "--policy", p,
            ];
            assert_clean_error(&args, name);
        }
        let bench = [
            "bench", "--model", m, "--batch", "2", "--runs", "1", "--policy", p,
        ];
        assert_clean_error(&bench, name);
    }
    let (code, _, err) = run_haste(&[
        "eval", "--model", m, "--data", d, "--limit", "4", "--policy", g,
    ]);
    assert_eq!(code, 0, "{err}");
    // inspect shows the policy's layers: HASTE exactly where it says so, with their errors.
    let policy: serde_json::Value = serde_json::from_slice(&text).expect("policy json");
    let on_haste: Vec<bool> = policy["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["kernel"] == "haste")
        .collect();
    assert!(on_haste.iter().any(|&h| h), "{policy}");
    let (code, out, err) = run_haste(&[
        "inspect", "--model", m, "--data", d, "--limit", "4", "--policy", g, "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
    let layers = j["layers"].as_array().expect("layers");
    let compressed: Vec<bool> = layers.iter().map(|l| l["compressed"] == true).collect();
    assert_eq!(compressed, on_haste, "{j}");
    for l in layers.iter().filter(|l| l["compressed"] == true) {
        assert!(l["relative_error"].as_f64().is_some_and(|e| e > 0.0), "{l}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
