//! Label-free calibration on the real shared models: the policy meets its target on images
//! it did not see, is deterministic, is refused for another model, and switches a loaded plan
//! between operating points.

mod common;

use common::*;
use haste::datasets::{load_batch, open_dataset, ModelCard};
use haste::{calibrate, CalibrateOptions, Compression, Model, Plan, PlanOptions, Policy, Target};
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> TempDir {
    TempDir::new("calib", name)
}

/// The first `n` CIFAR test images of ResNet-20's preprocessing, and its plan.
fn resnet20(n: usize) -> (PathBuf, Plan, Vec<f32>) {
    let path = model("resnet20-cifar10");
    let m = Model::load(&path).expect("model");
    let card = ModelCard::beside_model(&path).expect("card").expect("card");
    let data = open_dataset(&cifar_test(), &card.preprocess, None).expect("data");
    let per: usize = m.image_shape.iter().product();
    let mut x = vec![0.0; n * per];
    load_batch(data.as_ref(), 0, n, per, &mut x).expect("images");
    let plan = m
        .plan(PlanOptions {
            threads: 2,
            max_batch: 32,
        })
        .expect("plan");
    (path, plan, x)
}

fn options(target: Target) -> CalibrateOptions {
    CalibrateOptions {
        target,
        hyperplanes: vec![8, 12, 16, 24],
        steps: 8,
        ..CalibrateOptions::default()
    }
}

fn logits(plan: &mut Plan, x: &[f32], n: usize) -> Vec<f32> {
    plan.run(x, n).expect("run").1.to_vec()
}

#[test]
fn a_flops_target_is_met_on_the_calibration_images_and_an_unreachable_one_is_refused() {
    let (path, mut plan, x) = resnet20(64);
    let p = calibrate(
        &mut plan,
        &path,
        &x,
        64,
        &options(Target::FlopsReduction(5.0)),
        &mut |_, _| {},
    )
    .expect("calibrate");
    let c = p.calibration.as_ref().expect("summary");
    assert!(c.flops_reduction >= 5.0, "{c:?}");
    assert!(p.haste_layers() > 0 && p.layers.len() == plan.num_convs());
    // The first convolution and the dense layers carry no setting.
    assert!(!p.layers[0].is_haste());
    assert!(p
        .layers
        .iter()
        .all(|l| l.is_haste() == l.hyperplanes.is_some()));
    // The plan is left dense.
    assert!((0..plan.num_steps()).all(|s| plan.conv_kernel(s).is_none() || plan.runs_dense(s)));
    let err = calibrate(
        &mut plan,
        &path,
        &x,
        64,
        &options(Target::FlopsReduction(95.0)),
        &mut |_, _| {},
    )
    .expect_err("95 % is out of reach");
    assert!(err.to_string().contains("no policy reaches 95"), "{err}");
}

#[test]
fn calibration_is_deterministic_and_a_policy_switches_a_loaded_plan() {
    let (path, mut plan, x) = resnet20(48);
    let o = options(Target::MaxDrop(1.0));
    let a = calibrate(&mut plan, &path, &x, 48, &o, &mut |_, _| {}).expect("calibrate");
    let b = calibrate(&mut plan, &path, &x, 48, &o, &mut |_, _| {}).expect("again");
    let dir = temp_dir("determinism");
    let (pa, pb) = (dir.join("a.json"), dir.join("b.json"));
    a.save(&pa).expect("save");
    b.save(&pb).expect("save");
    assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
    assert_eq!(Policy::load(&pa, &path).expect("load"), a);

    // One loaded plan, several operating points: dense, the policy, a global L, the policy
    // again, dense again; each gives the logits it gives alone.
    let dense = logits(&mut plan, &x[..x.len() / 48 * 8], 8);
    let small = &x[..x.len() / 48 * 8];
    Compression::apply_policy(&mut plan, &a).expect("apply");
    let with_policy = logits(&mut plan, small, 8);
    let global = haste::CompressOptions::paper(haste::HasteConfig {
        hyperplanes: 8,
        ..Default::default()
    });
    Compression::apply(&mut plan, &global).expect("global");
    let with_global = logits(&mut plan, small, 8);
    Compression::apply_policy(&mut plan, &a).expect("apply again");
    assert_eq!(logits(&mut plan, small, 8), with_policy);
    plan.reset_conv_kernels();
    assert_eq!(logits(&mut plan, small, 8), dense);
    if a.haste_layers() > 0 {
        assert_ne!(with_policy, dense);
    }
    assert_ne!(with_global, with_policy);
}

#[test]
fn a_policy_is_refused_for_another_model_and_when_it_does_not_fit() {
    let (path, mut plan, x) = resnet20(32);
    let p = calibrate(
        &mut plan,
        &path,
        &x,
        32,
        &options(Target::MaxDrop(2.0)),
        &mut |_, _| {},
    )
    .expect("calibrate");
    let dir = temp_dir("refused");
    let file = dir.join("policy.json");
    p.save(&file).expect("save");
    let other = model("resnet32-cifar10");
    let err = Policy::load(&file, &other).expect_err("another model");
    assert!(err.to_string().contains("another model"), "{err}");
    // Edited by hand: HASTE on the first convolution is not possible.
    let mut edited = p.clone();
    edited.layers[0].kernel = "haste".into();
    edited.layers[0].hyperplanes = Some(8);
    let err = Compression::apply_policy(&mut plan, &edited).expect_err("first conv");
    assert!(err.to_string().contains("cannot run HASTE"), "{err}");
    let mut edited = p;
    edited.layers.pop();
    assert!(Compression::apply_policy(&mut plan, &edited).is_err());
}

/// A layer's own tile overrides the policy's; a layer without one (a hand-written or older
/// policy) takes the policy's, and the calibration writes one for each HASTE layer.
#[test]
fn a_policy_layer_runs_at_its_own_tile() {
    let (path, mut plan, x) = resnet20(16);
    let p = calibrate(
        &mut plan,
        &path,
        &x,
        16,
        &options(Target::FlopsReduction(5.0)),
        &mut |_, _| {},
    )
    .expect("calibrate");
    assert!(p.layers.iter().all(|l| l.is_haste() == l.tile.is_some()));
    let small = &x[..x.len() / 16 * 4];
    let run = |plan: &mut Plan, policy: &Policy| {
        let c = Compression::apply_policy(plan, policy).expect("apply");
        let y = logits(plan, small, 4);
        let tiles: Vec<_> = c.reports(plan).iter().map(|r| r.tile).collect();
        (y, tiles)
    };
    let at = |tile: Option<usize>| {
        let mut q = p.clone();
        q.tile = 4;
        for l in q.layers.iter_mut().filter(|l| l.is_haste()) {
            l.tile = tile;
        }
        q
    };
    let (by_default, tiles) = run(&mut plan, &at(None));
    assert!(tiles.iter().flatten().all(|&t| t == 4), "{tiles:?}");
    assert_eq!(run(&mut plan, &at(Some(4))).0, by_default);
    let (eight, tiles) = run(&mut plan, &at(Some(8)));
    assert!(tiles.iter().flatten().all(|&t| t == 8), "{tiles:?}");
    assert_ne!(eight, by_default);
}

/// The command line end to end: calibrate on a flat folder of unlabelled images (copies of
/// ImageNet validation images, no class folders), then score the policy with --skip on the
/// labelled tree; the predicted drop is printed beside the measured one, and the measured
/// drop stays within the bound.
#[test]
fn calibrate_on_unlabelled_images_then_eval_the_policy_on_the_rest() {
    let m = model("tiny-darknet-imagenet");
    let val = imagenet_val();
    let flat = temp_dir("flat");
    let mut images: Vec<PathBuf> = walk(&val);
    images.sort();
    for (i, f) in images.iter().take(24).enumerate() {
        std::fs::copy(f, flat.join(format!("{i:03}.jpg"))).expect("copy");
    }
    let out = flat.join("policy.json");
    let j = haste_json(
        "calibrate",
        &m,
        &flat,
        &[
            "--images",
            "24",
            "--max-drop",
            "2",
            "--hyperplanes",
            "12,24",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(j["images"], 24);
    assert!(j["forward_passes"].as_u64().unwrap() > 2);
    assert!(j["predicted_top1_drop"].as_f64().unwrap() <= 2.0);
    // The prediction is the larger of its two estimates, both reported.
    let estimate = |k: &str| j[k].as_f64().expect(k);
    assert_eq!(
        estimate("predicted_top1_drop"),
        estimate("belief_drop").max(estimate("confidence_drop"))
    );
    let e = haste_json(
        "eval",
        &m,
        &val,
        &[
            "--policy",
            out.to_str().unwrap(),
            "--skip",
            "24",
            "--limit",
            "64",
        ],
    );
    assert_eq!(e["images"], 64);
    assert!(e["predicted_top1_drop"].is_number(), "{e}");
    assert_eq!(e["policy_haste_layers"], j["haste_layers"]);
    // A flat folder has no labels to score with.
    let (code, _, err) = run_haste(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        flat.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("has no labels"), "{err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The calibration never reads labels: the same CIFAR records with their labels permuted, or
/// all set to one class, give a byte-identical policy file.
#[test]
fn relabelled_images_give_the_same_policy() {
    const RECORD: usize = 3073;
    let bytes = std::fs::read(cifar_test()).expect("cifar file");
    let first: Vec<u8> = bytes[..40 * RECORD].to_vec();
    let dir = temp_dir("labels");
    let relabel = |name: &str, label: &dyn Fn(u8) -> u8| {
        let mut b = first.clone();
        for r in b.chunks_exact_mut(RECORD) {
            r[0] = label(r[0]);
        }
        let f = dir.join(format!("{name}.bin"));
        std::fs::write(&f, b).expect("write");
        f
    };
    let files = [
        relabel("original", &|l| l),
        relabel("permuted", &|l| (l + 3) % 10),
        relabel("one-class", &|_| 0),
    ];
    let mut policies = Vec::new();
    for (i, data) in files.iter().enumerate() {
        let out = dir.join(format!("policy{i}.json"));
        let (code, _, err) = run_haste(&[
            "calibrate",
            "--model",
            model("resnet20-cifar10").to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--images",
            "40",
            "--max-drop",
            "2",
            "--hyperplanes",
            "8,16",
            "--tile",
            "4",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        policies.push(std::fs::read(&out).expect("policy"));
    }
    assert_eq!(policies[0], policies[1]);
    assert_eq!(policies[0], policies[2]);
}

/// The premise of the calibration's skipping: at a fixed tile, more hyperplanes never merge
/// more (the first L of them are the same, so buckets only split) and cost more hashing, so
/// once an L saves nothing on a layer no larger L can. Checked on every layer of ResNet-20,
/// with magnitude bins where inputs can be negative, as the calibration hashes.
#[test]
fn more_hyperplanes_never_save_more_flops_on_a_layer() {
    let (_, mut plan, x) = resnet20(16);
    let mut previous: Option<Vec<u64>> = None;
    for l in [6, 8, 10, 12, 16, 20, 24, 32] {
        let mut o = haste::CompressOptions::default();
        o.config.hyperplanes = l;
        o.config.tile = 4;
        o.tile_choices.clear();
        o.start_layer = 1;
        o.cost_aware = false;
        let c = Compression::apply(&mut plan, &o).expect("compress");
        logits(&mut plan, &x, 16);
        let flops: Vec<u64> = c.reports(&plan).iter().map(|r| r.flops).collect();
        plan.reset_conv_kernels();
        if let Some(p) = &previous {
            for (k, (a, b)) in p.iter().zip(&flops).enumerate() {
                assert!(
                    a <= b,
                    "conv {k}: {a} FLOPs below L = {l}'s {b} at a smaller L"
                );
            }
            assert!(p.iter().sum::<u64>() < flops.iter().sum::<u64>());
        }
        previous = Some(flops);
    }
}

/// `eval --max-drop` in one command: the policy `calibrate` writes from the same first
/// images, scored on the images after them (a smaller --skip is raised, a larger one kept),
/// with the numbers `eval --policy` gives for that file.
#[test]
fn eval_calibrates_on_the_first_images_and_scores_the_rest() {
    let m = model("resnet20-cifar10");
    let data = cifar_test();
    let dir = temp_dir("eval-max-drop");
    let (written, saved) = (dir.join("calibrate.json"), dir.join("eval.json"));
    let common = ["--max-drop", "2", "--objective", "time", "--batch", "20"];
    let c = haste_json(
        "calibrate",
        &m,
        &data,
        &[
            &common[..],
            &["--images", "40", "--out", written.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(c["objective"], "time");
    // The policy chooses among the layers that save alone, and an all-dense one says why.
    let (chosen, saving) = (&c["haste_layers"], &c["layers_saving_alone"]);
    assert!(
        chosen.as_u64() <= saving.as_u64(),
        "{chosen} chosen of {saving}"
    );
    assert_eq!(
        c["why_dense"].is_string(),
        chosen == 0,
        "{}",
        c["why_dense"]
    );
    let one = |skip: &str| {
        let extra = [
            "--calibration-images",
            "40",
            "--skip",
            skip,
            "--limit",
            "60",
            "--save-policy",
            saved.to_str().unwrap(),
        ];
        haste_json("eval", &m, &data, &[&common[..], &extra[..]].concat())
    };
    let e = one("10");
    assert_eq!(e["first_image"], 40);
    assert_eq!(e["images"], 60);
    assert_eq!(e["calibration_images"], 40);
    assert_eq!(e["objective"], "time");
    assert_eq!(e["policy_haste_layers"], c["haste_layers"]);
    assert_eq!(
        std::fs::read(&written).expect("calibrate's policy"),
        std::fs::read(&saved).expect("eval's policy"),
        "eval --max-drop chose another policy than calibrate"
    );
    let p = haste_json(
        "eval",
        &m,
        &data,
        &[
            "--policy",
            saved.to_str().unwrap(),
            "--skip",
            "40",
            "--limit",
            "60",
            "--batch",
            "20",
        ],
    );
    for k in ["top1", "top1_dense", "flops", "top1_disagreements"] {
        assert_eq!(e[k], p[k], "{k}");
    }
    assert_eq!(one("70")["first_image"], 70);
    // `eval --max-drop 1` on `data` with `images` calibration images: its exit code and stderr.
    let refused = |data: &Path, images: &str| {
        let (m, d) = (m.to_str().unwrap(), data.to_str().unwrap());
        let args = ["eval", "--model", m, "--data", d, "--max-drop", "1"];
        let (code, _, err) = run_haste(&[&args[..], &["--calibration-images", images]].concat());
        assert_eq!(code, 2, "{err}");
        err
    };
    // A bound needs something to calibrate on.
    let err = refused(&data, "0");
    assert!(
        err.contains("--calibration-images must be at least 1"),
        "{err}"
    );
    // Nothing left to score after the calibration's images: a one-line error naming the file.
    let err = refused(&cifar_first20(), "20");
    assert!(
        err.contains("leaves no image to score after the first 20"),
        "{err}"
    );
    assert!(err.contains("test_first20_lossless.bin"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
