//! Hostile and broken inputs: malformed ONNX models built from the real ResNet-20, corrupt
//! images with and without `--skip-bad`, models producing NaN, atomic output files, and the
//! inputs the fuzzers found. Every failure must be an `Err` (exit code 2 on the command line
//! with one line naming the file), never a panic.

mod common;

use common::*;
use haste::eval::{evaluate, evaluate_haste, EvalOptions};
use haste::haste::HasteConfig;
use haste::{CompressOptions, Model, PlanOptions};
use onnx_protobuf::{
    tensor_proto::DataLocation, Message, ModelProto, StringStringEntryProto, TensorProto,
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> TempDir {
    TempDir::new("robust", name)
}

fn resnet20() -> ModelProto {
    let bytes = std::fs::read(model("resnet20-cifar10")).expect("model bytes");
    ModelProto::parse_from_bytes(&bytes).expect("resnet20 parses")
}

fn bytes(m: &ModelProto) -> Vec<u8> {
    m.write_to_bytes().expect("serializes")
}

/// Load + plan + run of one image; `Ok(())` only if all three succeed. A panic fails the test.
fn load_plan_run(path: &Path) -> Result<(), String> {
    let r = catch_unwind(AssertUnwindSafe(|| -> haste::Result<()> {
        let m = Model::load(path)?;
        let mut plan = m.plan(PlanOptions {
            threads: 1,
            max_batch: 1,
        })?;
        let x = vec![0.5f32; m.image_shape.iter().product()];
        plan.run(&x, 1)?;
        Ok(())
    }));
    match r {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => panic!("{}: load/plan/run panicked", path.display()),
    }
}

/// Writes `bytes` as `dir/name`, asserts that the library refuses it (no panic) and that
/// `haste eval` exits with 2 and one line naming the file. Returns the library's message.
fn assert_refused(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write model");
    let msg = match load_plan_run(&p) {
        Ok(()) => panic!("{name}: accepted"),
        Err(m) => m,
    };
    assert!(
        msg.contains(name),
        "{name}: message should name the file: {msg}"
    );
    assert!(!msg.contains('\n'), "{name}: one line: {msg}");
    let data = cifar_first20();
    let (code, _, err) = run_haste(&[
        "eval",
        "--model",
        p.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--mean",
        "0,0,0",
        "--std",
        "1,1,1",
        "--limit",
        "2",
    ]);
    assert_eq!(code, 2, "{name}: exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "{name}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{name}: one line: {err}");
    assert!(err.contains(name), "{name}: {err}");
    msg
}

fn first_conv(m: &mut ModelProto) -> &mut onnx_protobuf::NodeProto {
    m.graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Conv")
        .expect("a Conv")
}

fn set_ints(node: &mut onnx_protobuf::NodeProto, attr: &str, v: Vec<i64>) {
    let a = node
        .attribute
        .iter_mut()
        .find(|a| a.name == attr)
        .unwrap_or_else(|| panic!("attribute {attr}"));
    a.ints = v;
}

#[test]
fn truncated_random_and_non_model_bytes_are_refused() {
    let dir = temp_dir("bytes");
    let good = std::fs::read(model("resnet20-cifar10")).unwrap();
    for cut in [
        1,
        7,
        100,
        1000,
        good.len() / 3,
        good.len() / 2,
        good.len() - 1,
    ] {
        let msg = assert_refused(&dir, &format!("cut{cut}.onnx"), &good[..cut]);
        assert!(!msg.is_empty());
    }
    let mut state = 0x1234_5678_9abc_def0u64;
    for (i, len) in [1usize, 16, 300, 5000, 100_000].into_iter().enumerate() {
        let random: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        assert_refused(&dir, &format!("random{i}.onnx"), &random);
    }
    // Valid protobuf messages that are not models.
    let mut t = TensorProto::new();
    t.name = "x".into();
    t.dims = vec![2, 2];
    t.float_data = vec![1.0; 4];
    assert_refused(&dir, "tensor.onnx", &t.write_to_bytes().unwrap());
    let mut only_header = ModelProto::new();
    only_header.ir_version = 8;
    only_header.producer_name = "nobody".into();
    let msg = assert_refused(&dir, "nograph.onnx", &bytes(&only_header));
    assert!(msg.contains("no graph"), "{msg}");
    let mut empty_graph = resnet20();
    empty_graph.graph.as_mut().unwrap().node.clear();
    assert_refused(&dir, "nonodes.onnx", &bytes(&empty_graph));
}

#[test]
fn inconsistent_graphs_are_refused() {
    let dir = temp_dir("graphs");
    // A cycle: the first node reads the output of the second.
    let mut m = resnet20();
    let g = m.graph.as_mut().unwrap();
    let second_out = g.node[1].output[0].clone();
    g.node[0].input[0] = second_out;
    assert_refused(&dir, "cycle.onnx", &bytes(&m));

    // A missing initializer: the first conv's weight is gone.
    let mut m = resnet20();
    let w = first_conv(&mut m).input[1].clone();
    let g = m.graph.as_mut().unwrap();
    g.initializer.retain(|t| t.name != w);
    g.input.retain(|i| i.name != w);
    assert_refused(&dir, "noweight.onnx", &bytes(&m));

    // An input rank the model cannot take.
    let mut m = resnet20();
    let dims = input_dims(&mut m);
    dims.truncate(3);
    let msg = assert_refused(&dir, "rank3.onnx", &bytes(&m));
    assert!(msg.contains("input"), "{msg}");

    // An input with 5 channels for a conv made for 3.
    let mut m = resnet20();
    let dims = input_dims(&mut m);
    dims[1].set_dim_value(5);
    assert_refused(&dir, "fivechannels.onnx", &bytes(&m));

    // A declared image so large that the plan's buffers would not fit in memory.
    let mut m = resnet20();
    let dims = input_dims(&mut m);
    dims[2].set_dim_value(1_000_000);
    dims[3].set_dim_value(1_000_000);
    let msg = assert_refused(&dir, "hugeimage.onnx", &bytes(&m));
    assert!(msg.contains("limit") || msg.contains("too large"), "{msg}");

    // An output nobody produces.
    let mut m = resnet20();
    m.graph.as_mut().unwrap().output[0].name = "nowhere".into();
    assert_refused(&dir, "nooutput.onnx", &bytes(&m));
}

#[test]
fn unsupported_ops_and_bad_attributes_are_named() {
    let dir = temp_dir("ops");
    let mut m = resnet20();
    let node = first_conv(&mut m);
    node.op_type = "FancyConv".into();
    node.name = "my_fancy_node".into();
    let msg = assert_refused(&dir, "fancy.onnx", &bytes(&m));
    assert!(
        msg.contains("FancyConv") && msg.contains("my_fancy_node"),
        "{msg}"
    );

    // Many nodes of one unsupported op: one entry with the count and the first node, in a
    // line a person can read; `--verbose` lists every node.
    let mut m = resnet20();
    let mut convs = 0;
    for n in m.graph.as_mut().unwrap().node.iter_mut() {
        if n.op_type == "Conv" {
            n.op_type = "FancyConv".into();
            convs += 1;
        }
    }
    let msg = assert_refused(&dir, "fancy_all.onnx", &bytes(&m));
    assert!(msg.contains(&format!("FancyConv x{convs}")), "{msg}");
    assert!(msg.len() < 300, "{} characters: {msg}", msg.len());
    let (code, _, err) = run_haste(&[
        "eval",
        "--verbose",
        "--model",
        dir.join("fancy_all.onnx").to_str().unwrap(),
        "--data",
        cifar_first20().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    let listed = err
        .lines()
        .filter(|l| l.trim_start().starts_with("FancyConv '"))
        .count();
    assert_eq!(listed, convs, "{err}");

    let mut m = resnet20();
    set_ints(first_conv(&mut m), "strides", vec![0, 0]);
    let msg = assert_refused(&dir, "stride0.onnx", &bytes(&m));
    assert!(msg.contains("stride"), "{msg}");

    let mut m = resnet20();
    set_ints(first_conv(&mut m), "pads", vec![-1, -1, -1, -1]);
    let msg = assert_refused(&dir, "negpad.onnx", &bytes(&m));
    assert!(msg.contains("pad"), "{msg}");

    let mut m = resnet20();
    set_ints(first_conv(&mut m), "pads", vec![1 << 40; 4]);
    assert_refused(&dir, "hugepad.onnx", &bytes(&m));

    let mut m = resnet20();
    set_ints(first_conv(&mut m), "kernel_shape", vec![7, 7]);
    assert_refused(&dir, "kernel.onnx", &bytes(&m));
}

#[test]
fn hostile_tensors_are_refused_before_allocating() {
    let dir = temp_dir("tensors");
    // 10^12 elements claimed by a real initializer.
    let mut m = resnet20();
    m.graph.as_mut().unwrap().initializer[0].dims = vec![1_000_000, 1_000_000];
    let msg = assert_refused(&dir, "huge.onnx", &bytes(&m));
    assert!(msg.contains("limit"), "{msg}");
    // Dimensions whose product overflows u64.
    let mut m = resnet20();
    m.graph.as_mut().unwrap().initializer[0].dims = vec![i64::MAX, i64::MAX, 4];
    assert_refused(&dir, "overflow.onnx", &bytes(&m));
    // A negative dimension.
    let mut m = resnet20();
    m.graph.as_mut().unwrap().initializer[0].dims = vec![-3, 2];
    assert_refused(&dir, "negdim.onnx", &bytes(&m));
    // Data of the wrong length for the shape.
    let mut m = resnet20();
    let t = &mut m.graph.as_mut().unwrap().initializer[0];
    let n = t.raw_data.len();
    t.raw_data.truncate(n - 4);
    assert_refused(&dir, "short.onnx", &bytes(&m));

    // External data outside the model's folder: relative escape and absolute path.
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(dir.join("outside.bin"), vec![0u8; 1 << 16]).unwrap();
    for (name, location) in [
        ("escape.onnx", "../outside.bin"),
        ("absolute.onnx", "/etc/hostname"),
    ] {
        let mut m = resnet20();
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        let len = t.raw_data.len();
        t.raw_data.clear();
        t.data_location = DataLocation::EXTERNAL.into();
        for (k, v) in [("location", location), ("length", &len.to_string())] {
            let mut e = StringStringEntryProto::new();
            e.key = k.into();
            e.value = v.into();
            t.external_data.push(e);
        }
        let msg = assert_refused(&sub, name, &bytes(&m));
        assert!(
            msg.contains("outside") || msg.contains("No such file"),
            "{msg}"
        );
    }
    // External data beside the model but with a range beyond the file.
    std::fs::write(sub.join("weights.bin"), vec![0u8; 100]).unwrap();
    let mut m = resnet20();
    let t = &mut m.graph.as_mut().unwrap().initializer[0];
    t.raw_data.clear();
    t.data_location = DataLocation::EXTERNAL.into();
    for (k, v) in [
        ("location", "weights.bin"),
        ("offset", "18446744073709551615"),
        ("length", "64"),
    ] {
        let mut e = StringStringEntryProto::new();
        e.key = k.into();
        e.value = v.into();
        t.external_data.push(e);
    }
    let msg = assert_refused(&sub, "range.onnx", &bytes(&m));
    assert!(msg.contains("range"), "{msg}");
}

/// ResNet-20 with the second convolution's weights set to +inf: activations become infinite
/// and then NaN.
fn nan_model(dir: &Path) -> PathBuf {
    let mut m = resnet20();
    let g = m.graph.as_mut().unwrap();
    let convs: Vec<String> = g
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(|n| n.input[1].clone())
        .collect();
    let w = &convs[1];
    let t = g.initializer.iter_mut().find(|t| &t.name == w).unwrap();
    let n = t.dims.iter().product::<i64>() as usize;
    // All +inf: activations become +inf (inf * 0 gives NaN) and stay non-finite through ReLU
    // (which maps NaN to 0, so alternating signs would be washed out).
    let vals = vec![f32::INFINITY; n];
    t.float_data.clear();
    t.raw_data = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let p = dir.join("nan-resnet20.onnx");
    std::fs::write(&p, bytes(&m)).unwrap();
    std::fs::copy(
        model("resnet20-cifar10").with_extension("json"),
        p.with_extension("json"),
    )
    .unwrap();
    p
}

#[test]
fn nan_activations_are_counted_and_reported() {
    let dir = temp_dir("nan");
    let p = nan_model(&dir);
    let m = Model::load(&p).unwrap();
    let card = haste::datasets::ModelCard::beside_model(&p)
        .unwrap()
        .unwrap();
    let data = haste::datasets::open_dataset(&cifar_first20(), &card.preprocess, None).unwrap();
    let mut plan = m
        .plan(PlanOptions {
            threads: 0,
            max_batch: 10,
        })
        .unwrap();
    let o = EvalOptions {
        limit: None,
        batch: 10,
        skip_bad: false,
    };
    let dense = evaluate(&mut plan, data.as_ref(), o, &mut |_| {}).unwrap();
    assert_eq!(dense.images, 20);
    assert!(dense.nonfinite_logits > 0, "{dense:?}");
    let c = CompressOptions {
        config: HasteConfig {
            hyperplanes: 12,
            ..HasteConfig::default()
        },
        // ResNet-20's layers are too small for the cost-aware default to compress any.
        cost_aware: false,
        ..CompressOptions::default()
    };
    let h = evaluate_haste(&mut plan, data.as_ref(), o, &c, &mut |_| {}).unwrap();
    assert!(h.eval.nonfinite_logits > 0);
    assert!(h.nonfinite_inputs() > 0);

    let all = ["--hyperplanes", "12", "--all-layers"];
    let j = haste_json("eval", &p, &cifar_first20(), &all);
    assert!(j["nonfinite_logits"].as_u64().unwrap() > 0, "{j}");
    assert!(j["nonfinite_logits_dense"].as_u64().unwrap() > 0, "{j}");
    assert!(j["nonfinite_inputs"].as_u64().unwrap() > 0, "{j}");
    let j = haste_json("inspect", &p, &cifar_first20(), &all);
    assert!(j["nonfinite_inputs"].as_u64().unwrap() > 0, "{j}");
    assert!(j["nonfinite_logits"].as_u64().unwrap() > 0, "{j}");
    for sub in ["eval", "inspect"] {
        let (code, out, err) = run_haste(&[
            sub,
            "--model",
            p.to_str().unwrap(),
            "--data",
            cifar_first20().to_str().unwrap(),
            "--hyperplanes",
            "12",
            "--all-layers",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("non-finite logit"), "{sub}: {out}");
        assert!(out.contains("non-finite convolution input"), "{sub}: {out}");
    }
}

/// An ImageFolder of copies of real ImageNet JPEGs in two classes, plus one corrupt file.
fn folder_with_one_bad_image(dir: &Path) -> (PathBuf, usize) {
    let root = dir.join("val");
    let src = imagenet_val();
    let mut classes: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    classes.sort();
    let mut good = 0;
    for class in classes.iter().take(2) {
        let dst = root.join(class.file_name().unwrap());
        std::fs::create_dir_all(&dst).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(class)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for (i, f) in files.iter().take(2).enumerate() {
            for copy in 0..2 {
                std::fs::copy(f, dst.join(format!("img{i}_{copy}.JPEG"))).unwrap();
                good += 1;
            }
        }
    }
    let first = root.join(classes[0].file_name().unwrap());
    std::fs::write(
        first.join("img0_1x_broken.JPEG"),
        b"\xff\xd8\xffnot a jpeg at all",
    )
    .unwrap();
    (root, good)
}

#[test]
fn skip_bad_skips_counts_and_names_corrupt_images() {
    let dir = temp_dir("skipbad");
    let (root, good) = folder_with_one_bad_image(&dir);
    let m = model("tiny-darknet-imagenet");
    let (ms, ds) = (m.to_str().unwrap(), root.to_str().unwrap());
    // By default the run stops with an error naming the image.
    for sub in ["eval", "inspect"] {
        let (code, _, err) = run_haste(&[sub, "--model", ms, "--data", ds, "--batch", "4"]);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("img0_1x_broken.JPEG"), "{err}");
    }
    // With --skip-bad it is skipped, counted and named.
    let j = haste_json(
        "eval",
        &m,
        &root,
        &["--skip-bad", "--batch", "4", "--hyperplanes", "12"],
    );
    assert_eq!(j["images"], good as u64, "{j}");
    let skipped = j["skipped_images"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{j}");
    assert!(skipped[0].as_str().unwrap().contains("img0_1x_broken.JPEG"));
    let j = haste_json("inspect", &m, &root, &["--skip-bad", "--batch", "4"]);
    assert_eq!(j["images"], good as u64, "{j}");
    assert_eq!(j["skipped_images"].as_array().unwrap().len(), 1);
    let j = haste_json(
        "sweep",
        &m,
        &root,
        &["--skip-bad", "--batch", "4", "--hyperplanes", "12,16"],
    );
    assert_eq!(j["images"], good as u64, "{j}");
    assert_eq!(j["skipped_images"].as_array().unwrap().len(), 1);
    let (code, out, err) = run_haste(&[
        "eval",
        "--model",
        ms,
        "--data",
        ds,
        "--skip-bad",
        "--batch",
        "4",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("skipped 1 unreadable image") && out.contains("img0_1x_broken.JPEG"),
        "{out}"
    );
    // bench fills its batch with the loadable images.
    let (code, out, err) = run_haste(&[
        "bench",
        "--model",
        ms,
        "--data",
        ds,
        "--skip-bad",
        "--batch",
        "4",
        "--runs",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["skipped_images"].as_array().unwrap().len(), 1, "{j}");
    let (code, _, err) = run_haste(&[
        "bench", "--model", ms, "--data", ds, "--batch", "4", "--runs", "1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("img0_1x_broken.JPEG"), "{err}");
}

#[test]
fn skip_bad_accuracy_ignores_skipped_images() {
    let dir = temp_dir("skipacc");
    let (root, good) = folder_with_one_bad_image(&dir);
    let p = model("tiny-darknet-imagenet");
    let m = Model::load(&p).unwrap();
    let card = haste::datasets::ModelCard::beside_model(&p)
        .unwrap()
        .unwrap();
    let data =
        haste::datasets::open_dataset(&root, &card.preprocess, card.labels.as_deref()).unwrap();
    assert_eq!(data.len(), good + 1);
    let mut plan = m
        .plan(PlanOptions {
            threads: 0,
            max_batch: 3,
        })
        .unwrap();
    let o = EvalOptions {
        limit: None,
        batch: 3,
        skip_bad: true,
    };
    let r = evaluate(&mut plan, data.as_ref(), o, &mut |_| {}).unwrap();
    assert_eq!(r.images, good);
    assert_eq!(r.predictions.len(), good);
    assert_eq!(r.skipped.len(), 1);
    // The same images without the broken one, image by image, give the same predictions.
    let good_labels: Vec<usize> = (0..data.len())
        .filter(|&i| !data.item_name(i).contains("broken"))
        .map(|i| data.label(i))
        .collect();
    assert_eq!(r.predictions.labels, good_labels);
    let e = evaluate(
        &mut plan,
        data.as_ref(),
        EvalOptions {
            skip_bad: false,
            ..o
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("img0_1x_broken.JPEG"), "{e}");
}

#[test]
fn write_atomic_keeps_the_old_file_and_leaves_no_temp_files() {
    use haste::report::write_atomic;
    let dir = temp_dir("atomic");
    let target = dir.join("out.csv");
    write_atomic(&target, b"old\n").unwrap();
    write_atomic(&target, b"new\n").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new\n");
    let leftovers = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    };
    assert!(leftovers(&dir).is_empty());

    // The temporary file cannot be created (its name is taken by a folder): error, old file
    // intact.
    let tmp = dir.join(format!(".out.csv.{}.tmp", std::process::id()));
    std::fs::create_dir(&tmp).unwrap();
    let e = write_atomic(&target, b"broken").unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("out.csv"), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"new\n");
    std::fs::remove_dir(&tmp).unwrap();

    // The rename fails (the target is a non-empty folder): the temporary file is removed.
    let folder = dir.join("taken");
    std::fs::create_dir_all(folder.join("inside")).unwrap();
    assert!(write_atomic(&folder, b"x").is_err());
    assert!(folder.join("inside").is_dir());
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

    // The folder does not exist.
    assert!(write_atomic(&dir.join("missing/out.csv"), b"x").is_err());

    // A read-only folder (only meaningful when not running as root).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.join("ro");
        std::fs::create_dir(&ro).unwrap();
        let file = ro.join("out.json");
        std::fs::write(&file, b"old").unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        if std::fs::write(ro.join("probe"), b"").is_err() {
            assert!(write_atomic(&file, b"new").is_err());
            assert_eq!(std::fs::read(&file).unwrap(), b"old");
            assert!(leftovers(&ro).is_empty());
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    // A sweep whose output folder is missing fails before running, naming the file.
    let m = model("resnet20-cifar10");
    let (code, _, err) = run_haste(&[
        "sweep",
        "--model",
        m.to_str().unwrap(),
        "--data",
        cifar_first20().to_str().unwrap(),
        "--hyperplanes",
        "12",
        "--csv",
        dir.join("missing/out.csv").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("out.csv"), "{err}");
}

/// The first onnx_loader finding: a node whose output list is empty panicked in the fusion
/// pass (index out of bounds); now refused at load time.
#[test]
fn fuzz_finding_node_without_output() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions/onnx_loader-crash-8f4d00d9fff45ad28384d6888f8797a58c60f82e");
    let e = Model::from_bytes(&p, &std::fs::read(&p).unwrap()).unwrap_err();
    assert!(e.to_string().contains("has no output"), "{e}");
    let mut m = resnet20();
    m.graph.as_mut().unwrap().node[3].output.clear();
    let e = Model::from_bytes(Path::new("m.onnx"), &bytes(&m)).unwrap_err();
    assert!(e.to_string().contains("has no output"), "{e}");
    let mut m = resnet20();
    m.graph.as_mut().unwrap().node[3].input.clear();
    let e = Model::from_bytes(Path::new("m.onnx"), &bytes(&m)).unwrap_err();
    assert!(e.to_string().contains("has no input"), "{e}");
}

/// Inputs found by the fuzzers (fuzz/), kept as regression tests: each must be refused or
/// accepted without a panic.
#[test]
fn fuzz_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&p).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            if name.starts_with("onnx_loader") {
                if let Ok(m) = Model::from_bytes(Path::new("/nonexistent/fuzz.onnx"), &data) {
                    if m.image_shape.iter().product::<usize>() <= 1 << 16 {
                        if let Ok(mut plan) = m.plan(PlanOptions {
                            threads: 1,
                            max_batch: 1,
                        }) {
                            let x = vec![0.5f32; m.image_shape.iter().product()];
                            let _ = plan.run(&x, 1);
                        }
                    }
                }
            } else if name.starts_with("model_card") {
                if let Ok(text) = std::str::from_utf8(&data) {
                    let _ = haste::datasets::ModelCard::parse(
                        Path::new("/nonexistent/fuzz.json"),
                        text,
                    );
                }
            } else if name.starts_with("cifar_reader") {
                let pre = haste::datasets::Preprocess::new(32, 32);
                if let Ok(c) =
                    haste::datasets::CifarBinary::from_bytes(Path::new("f.bin"), data, &pre)
                {
                    use haste::datasets::Dataset;
                    let mut out = vec![0f32; pre.input_len()];
                    for i in 0..c.len() {
                        c.load(i, &mut out).unwrap();
                    }
                }
            }
        }));
        assert!(r.is_ok(), "{name} panicked");
    }
}

use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_shape_proto::Dimension, AttributeProto, GraphProto,
    NodeProto, OperatorSetIdProto, TypeProto, ValueInfoProto,
};
fn tensor(name: &str, dims: &[i64], seed: f32) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = 1;
    let n = dims.iter().product::<i64>() as usize;
    t.float_data = (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect();
    t
}
fn ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}
fn node(op: &str, ins: &[&str], out: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = format!("{op}_0");
    n.input = ins.iter().map(|s| s.to_string()).collect();
    n.output = vec![out.into()];
    n.attribute = attrs;
    n
}
fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    let mut t = TypeProto::new();
    let tt = t.mut_tensor_type();
    tt.elem_type = 1;
    for &d in dims {
        let mut dim = Dimension::new();
        dim.set_dim_value(d);
        tt.shape.mut_or_insert_default().dim.push(dim);
    }
    v.type_ = Some(t).into();
    v
}

/// The bytes of a model holding `g`, opset 13.
fn opset13_model(g: GraphProto) -> Vec<u8> {
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut op = OperatorSetIdProto::new();
    op.version = 13;
    m.opset_import.push(op);
    m.graph = Some(g).into();
    bytes(&m)
}

/// A tiny valid model (Conv 3->4, Relu, MaxPool, GlobalAveragePool, Flatten, Gemm 4->3 on
/// 3x8x8 images): the fuzzers' seed (`HASTE_WRITE_FUZZ_SEED=1` writes it to
/// `fuzz/seeds/onnx_loader/tiny.onnx`).
fn tiny_model() -> Vec<u8> {
    let mut g = GraphProto::new();
    g.name = "tiny".into();
    g.initializer = vec![
        tensor("w", &[4, 3, 3, 3], 0.0),
        tensor("b", &[4], 1.0),
        tensor("fw", &[3, 4], 2.0),
        tensor("fb", &[3], 3.0),
    ];
    g.node = vec![
        node(
            "Conv",
            &["x", "w", "b"],
            "c",
            vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])],
        ),
        node("Relu", &["c"], "r", vec![]),
        node(
            "MaxPool",
            &["r"],
            "p",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ),
        node("GlobalAveragePool", &["p"], "g", vec![]),
        node("Flatten", &["g"], "f", vec![]),
        node("Gemm", &["f", "fw", "fb"], "y", vec![]),
    ];
    // Gemm computes f x fw^T: fw is [3, 4] with transB.
    let mut tb = AttributeProto::new();
    tb.name = "transB".into();
    tb.type_ = AttributeType::INT.into();
    tb.i = 1;
    g.node[5].attribute.push(tb);
    g.input = vec![value("x", &[1, 3, 8, 8])];
    g.output = vec![value("y", &[1, 3])];
    opset13_model(g)
}

/// A second seed with BatchNormalization, a residual Add, Pad, Concat, Reshape and Gemm.
fn tiny_model2() -> Vec<u8> {
    let mut g = GraphProto::new();
    g.name = "tiny2".into();
    let mut pads = TensorProto::new();
    pads.name = "pads".into();
    pads.dims = vec![8];
    pads.data_type = 7;
    pads.int64_data = vec![0, 0, 1, 1, 0, 0, 1, 1];
    let mut shape = TensorProto::new();
    shape.name = "shape".into();
    shape.dims = vec![2];
    shape.data_type = 7;
    shape.int64_data = vec![0, -1];
    let mut var = tensor("var", &[3], 4.0);
    var.float_data.iter_mut().for_each(|v| *v = v.abs() + 0.5);
    g.initializer = vec![
        tensor("w", &[3, 3, 3, 3], 0.0),
        tensor("scale", &[3], 1.0),
        tensor("bias", &[3], 2.0),
        tensor("mean", &[3], 3.0),
        var,
        pads,
        shape,
        tensor("fw", &[3, 150], 5.0),
        tensor("fb", &[3], 6.0),
    ];
    let mut concat = node("Concat", &["m", "m"], "cat", vec![]);
    let mut axis = AttributeProto::new();
    axis.name = "axis".into();
    axis.type_ = AttributeType::INT.into();
    axis.i = 1;
    concat.attribute.push(axis);
    let mut gemm = node("Gemm", &["fl", "fw", "fb"], "y", vec![]);
    let mut tb = AttributeProto::new();
    tb.name = "transB".into();
    tb.type_ = AttributeType::INT.into();
    tb.i = 1;
    gemm.attribute.push(tb);
    g.node = vec![
        node("Conv", &["x", "w"], "c", vec![ints("pads", &[1, 1, 1, 1])]),
        node(
            "BatchNormalization",
            &["c", "scale", "bias", "mean", "var"],
            "bn",
            vec![],
        ),
        node("Add", &["bn", "x"], "a", vec![]),
        node("Relu", &["a"], "r", vec![]),
        node("Pad", &["r", "pads"], "pd", vec![]),
        node(
            "MaxPool",
            &["pd"],
            "m",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ),
        concat,
        node("Reshape", &["cat", "shape"], "fl", vec![]),
        gemm,
    ];
    g.input = vec![value("x", &[1, 3, 8, 8])];
    g.output = vec![value("y", &[1, 3])];
    opset13_model(g)
}

#[test]
fn tiny_model_loads_and_runs() {
    let b = tiny_model();
    let m = Model::from_bytes(Path::new("tiny.onnx"), &b).unwrap();
    assert_eq!(m.image_shape, vec![3, 8, 8]);
    let mut plan = m
        .plan(PlanOptions {
            threads: 1,
            max_batch: 2,
        })
        .unwrap();
    let (shape, out) = plan.run(&vec![0.25f32; 2 * 3 * 64], 2).unwrap();
    assert_eq!(shape, vec![2, 3]);
    assert!(out.iter().all(|v| v.is_finite()));
    let b2 = tiny_model2();
    let m = Model::from_bytes(Path::new("tiny2.onnx"), &b2).unwrap();
    let mut plan = m
        .plan(PlanOptions {
            threads: 1,
            max_batch: 2,
        })
        .unwrap();
    let (shape, out) = plan.run(&vec![0.25f32; 2 * 3 * 64], 2).unwrap();
    assert_eq!(shape, vec![2, 3]);
    assert!(out.iter().all(|v| v.is_finite()));
    if std::env::var_os("HASTE_WRITE_FUZZ_SEED").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/onnx_loader");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tiny.onnx"), &b).unwrap();
        std::fs::write(dir.join("tiny2.onnx"), &b2).unwrap();
    }
}

/// The declared dimensions of the model's first input (batch axis included).
fn input_dims(m: &mut ModelProto) -> &mut Vec<onnx_protobuf::tensor_shape_proto::Dimension> {
    &mut m.graph.as_mut().unwrap().input[0]
        .type_
        .as_mut()
        .unwrap()
        .mut_tensor_type()
        .shape
        .as_mut()
        .unwrap()
        .dim
}

/// Conv 1x1 (3 -> 5, bias, `between` op after it if any) -> GlobalAveragePool -> Flatten on one
/// 3x4x4 image.
fn pointwise_then_pool(between: Option<&str>) -> Vec<u8> {
    let mut g = GraphProto::new();
    g.name = "pointwise_then_pool".into();
    g.initializer = vec![tensor("w", &[5, 3, 1, 1], 0.0), tensor("b", &[5], 1.0)];
    g.node = vec![node("Conv", &["x", "w", "b"], "c", vec![])];
    let pooled_from = match between {
        Some(op) => {
            g.node.push(node(op, &["c"], "a", vec![]));
            "a"
        }
        None => "c",
    };
    g.node
        .push(node("GlobalAveragePool", &[pooled_from], "g", vec![]));
    g.node.push(node("Flatten", &["g"], "y", vec![]));
    g.input = vec![value("x", &[1, 3, 4, 4])];
    g.output = vec![value("y", &[1, 5])];
    opset13_model(g)
}

/// A global average pooling after a linear 1x1 convolution runs first, and the convolution on
/// the one pooled pixel (`mean_p(W x_p + b) = W mean_p(x_p) + b`); with a ReLU between them
/// the order stays. Both give the convolution-then-pooling values.
#[test]
fn global_pooling_moves_before_a_linear_pointwise_conv() {
    let x: Vec<f32> = (0..3 * 16).map(|i| ((i * 7 % 11) as f32) - 5.0).collect();
    let w = tensor("w", &[5, 3, 1, 1], 0.0).float_data;
    let b = tensor("b", &[5], 1.0).float_data;
    for (between, first_kind) in [(None, "GlobalAveragePool"), (Some("Relu"), "Conv")] {
        let m = Model::from_bytes(Path::new("p.onnx"), &pointwise_then_pool(between)).unwrap();
        let mut plan = m
            .plan(PlanOptions {
                threads: 1,
                max_batch: 1,
            })
            .unwrap();
        assert_eq!(plan.step_kind(0), first_kind, "{between:?}");
        let (shape, y) = plan.run(&x, 1).unwrap();
        assert_eq!(shape, vec![1, 5]);
        for co in 0..5 {
            let at = |p: usize| {
                let v: f32 = (0..3)
                    .map(|ci| w[co * 3 + ci] * x[ci * 16 + p])
                    .sum::<f32>()
                    + b[co];
                if between.is_some() {
                    v.max(0.0)
                } else {
                    v
                }
            };
            let want = (0..16).map(at).sum::<f32>() / 16.0;
            assert!(
                (y[co] - want).abs() < 1e-5,
                "{between:?} {co}: {} vs {want}",
                y[co]
            );
        }
    }
}

/// `y1 = relu(conv3x3(x) + x)`, `y = x + conv1x1(y1)` on 4x6x6 images: two residual
/// additions a ResNet block has, one with the convolution as the Add's second operand.
fn residual_blocks() -> Vec<u8> {
    let mut g = GraphProto::new();
    g.name = "residual_blocks".into();
    g.initializer = vec![
        tensor("w3", &[4, 4, 3, 3], 0.0),
        tensor("b3", &[4], 1.0),
        tensor("w1", &[4, 4, 1, 1], 2.0),
        tensor("b1", &[4], 3.0),
    ];
    g.node = vec![
        node(
            "Conv",
            &["x", "w3", "b3"],
            "c3",
            vec![ints("pads", &[1, 1, 1, 1])],
        ),
        node("Add", &["c3", "x"], "s1", vec![]),
        node("Relu", &["s1"], "y1", vec![]),
        node("Conv", &["y1", "w1", "b1"], "c1", vec![]),
        node("Add", &["x", "c1"], "y", vec![]),
    ];
    g.input = vec![value("x", &[1, 4, 6, 6])];
    g.output = vec![value("y", &[1, 4, 6, 6])];
    opset13_model(g)
}

/// Both residual additions run inside their convolutions (no Add step is left) and give the
/// Conv, Add, Relu values, image by image, on two threads at batch 1 (each image's rows
/// split between them) and at batch 2.
#[test]
fn residual_additions_fuse_into_their_convolutions() {
    let m = Model::from_bytes(Path::new("r.onnx"), &residual_blocks()).unwrap();
    let (w3, b3) = (
        tensor("w3", &[4, 4, 3, 3], 0.0).float_data,
        tensor("b3", &[4], 1.0).float_data,
    );
    let (w1, b1) = (
        tensor("w1", &[4, 4, 1, 1], 2.0).float_data,
        tensor("b1", &[4], 3.0).float_data,
    );
    let x: Vec<f32> = (0..2 * 4 * 36)
        .map(|i| ((i * 13 % 17) as f32) * 0.25 - 2.0)
        .collect();
    let at = |c: usize, y: isize, x_: isize, img: &[f32]| -> f32 {
        if (0..6).contains(&y) && (0..6).contains(&x_) {
            img[c * 36 + y as usize * 6 + x_ as usize]
        } else {
            0.0
        }
    };
    let mut want = vec![0.0f32; x.len()];
    for (img, out) in x.chunks(144).zip(want.chunks_mut(144)) {
        let mut y1 = vec![0.0f32; 144];
        for co in 0..4 {
            for p in 0..36 {
                let (py, px) = ((p / 6) as isize, (p % 6) as isize);
                let mut s = b3[co];
                for ci in 0..4 {
                    for k in 0..9 {
                        let (ky, kx) = ((k / 3) as isize - 1, (k % 3) as isize - 1);
                        s += w3[(co * 4 + ci) * 9 + k] * at(ci, py + ky, px + kx, img);
                    }
                }
                y1[co * 36 + p] = (s + img[co * 36 + p]).max(0.0);
            }
        }
        for co in 0..4 {
            for p in 0..36 {
                let s: f32 = (0..4)
                    .map(|ci| w1[co * 4 + ci] * y1[ci * 36 + p])
                    .sum::<f32>()
                    + b1[co];
                out[co * 36 + p] = img[co * 36 + p] + s;
            }
        }
    }
    for (threads, batch) in [(1, 2), (2, 1), (2, 2)] {
        let mut plan = m
            .plan(PlanOptions {
                threads,
                max_batch: batch,
            })
            .unwrap();
        let kinds: Vec<&str> = (0..plan.num_steps()).map(|i| plan.step_kind(i)).collect();
        assert_eq!(kinds, ["Conv", "Conv"], "{threads} threads");
        for (k, img) in x.chunks(144 * batch).enumerate() {
            let (_, y) = plan.run(img, batch).unwrap();
            for (i, (&got, &w)) in y.iter().zip(&want[k * 144 * batch..]).enumerate() {
                assert!(
                    (got - w).abs() < 1e-4 * (1.0 + w.abs()),
                    "{threads} threads, batch {batch}, value {i}: {got} vs {w}"
                );
            }
        }
    }
}

/// An Add that broadcasts (a convolution's output plus its input's per-channel means) is not a
/// residual connection: it stays a step of its own, and the values are the broadcast sums.
#[test]
fn a_broadcasting_add_is_not_fused_into_the_convolution() {
    let mut g = GraphProto::new();
    g.name = "broadcast_add".into();
    g.initializer = vec![tensor("w", &[4, 4, 3, 3], 0.0)];
    g.node = vec![
        node("Conv", &["x", "w"], "c", vec![ints("pads", &[1, 1, 1, 1])]),
        node("GlobalAveragePool", &["x"], "m", vec![]),
        node("Add", &["c", "m"], "y", vec![]),
    ];
    g.input = vec![value("x", &[1, 4, 6, 6])];
    g.output = vec![value("y", &[1, 4, 6, 6])];
    let model = Model::from_bytes(Path::new("b.onnx"), &opset13_model(g)).unwrap();
    let mut plan = model.plan(PlanOptions::default()).unwrap();
    let kinds: Vec<&str> = (0..plan.num_steps()).map(|i| plan.step_kind(i)).collect();
    assert!(kinds.contains(&"Add"), "{kinds:?}");
    let x: Vec<f32> = (0..144).map(|i| ((i * 5 % 9) as f32) - 4.0).collect();
    let (_, y) = plan.run(&x, 1).unwrap();
    let y = y.to_vec();
    // Every output is the convolution there plus its channel's mean of `x`.
    let w = tensor("w", &[4, 4, 3, 3], 0.0).float_data;
    for co in 0..4 {
        let mean: f32 = x[co * 36..(co + 1) * 36].iter().sum::<f32>() / 36.0;
        for p in 0..36 {
            let (py, px) = ((p / 6) as isize, (p % 6) as isize);
            let mut c = 0.0f32;
            for ci in 0..4 {
                for k in 0..9 {
                    let (y, xx) = (py + (k / 3) as isize - 1, px + (k % 3) as isize - 1);
                    if (0..6).contains(&y) && (0..6).contains(&xx) {
                        c += w[(co * 4 + ci) * 9 + k] * x[ci * 36 + (y * 6 + xx) as usize];
                    }
                }
            }
            let got = y[co * 36 + p];
            assert!(
                (got - (c + mean)).abs() < 1e-4,
                "{co} {p}: {got} vs {}",
                c + mean
            );
        }
    }
}
