//! The dense engine against onnxruntime's logits and the model cards' accuracies, on the real
//! models and data in ../shared.

mod common;

use common::*;
use haste::datasets::{open_dataset, ModelCard};
use haste::eval::{evaluate, EvalOptions};
use haste::{Model, PlanOptions};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits of the first `n` items of `data` through `model`, batched, on 2 threads.
fn logits(
    model_path: &std::path::Path,
    data: &std::path::Path,
    n: usize,
    batch: usize,
) -> Vec<Vec<f32>> {
    let model = Model::load(model_path).expect("model loads");
    let card = ModelCard::beside_model(model_path)
        .expect("card parses")
        .expect("card exists");
    let data = open_dataset(data, &card.preprocess, None).expect("dataset opens");
    let mut plan = model
        .plan(PlanOptions {
            threads: 2,
            max_batch: batch,
        })
        .expect("plan");
    let per: usize = model.image_shape.iter().product();
    let mut out = Vec::new();
    let mut buf = vec![0.0; batch * per];
    let mut start = 0;
    while start < n {
        let k = batch.min(n - start);
        haste::eval::load_batch(data.as_ref(), start, k, per, &mut buf).expect("images load");
        let (shape, y) = plan.run(&buf[..k * per], k).expect("runs");
        let classes = shape[1];
        out.extend(y.chunks(classes).map(<[f32]>::to_vec));
        start += k;
    }
    out
}

#[test]
fn cifar_resnets_match_onnxruntime_logits() {
    let reference = read_json(shared().join("models/reference_logits_first20.json"));
    for name in ["resnet20-cifar10", "resnet32-cifar10", "resnet56-cifar10"] {
        let want = &reference["logits"][name];
        // Batch 7 exercises a partial last batch; batch 1 the split-image path.
        for batch in [7, 1] {
            let got = logits(&model(name), &cifar_first20(), 20, batch);
            for (i, row) in got.iter().enumerate() {
                let d = max_abs_diff(row, &floats(&want[i]));
                assert!(d < 1e-3, "{name} image {i} batch {batch}: max |diff| {d}");
            }
        }
    }
}

#[test]
fn resnet18_randominit_matches_onnxruntime_logits() {
    let reference = read_json(shared().join("models/reference_logits_resnet18_randominit.json"));
    let images = reference["images"].as_array().expect("images");
    // Batch 2: one image per thread; batch 1: each image split over the threads.
    for batch in [2, 1] {
        let got = logits(
            &model("resnet18-randominit-imagenet"),
            &imagenet_val(),
            images.len(),
            batch,
        );
        for (i, row) in got.iter().enumerate() {
            let d = max_abs_diff(row, &floats(&reference["logits"][i]));
            assert!(
                d < 1e-3,
                "image {i} ({}) batch {batch}: max |diff| {d}",
                images[i]
            );
        }
    }
}

fn card_accuracy(name: &str, data: &std::path::Path) -> (f64, f64, f64, f64) {
    let path = model(name);
    let model = Model::load(&path).expect("model");
    let card = ModelCard::beside_model(&path)
        .expect("card")
        .expect("card exists");
    let data = open_dataset(data, &card.preprocess, card.labels.as_deref()).expect("dataset");
    let mut plan = model
        .plan(PlanOptions {
            threads: 0,
            max_batch: 100,
        })
        .expect("plan");
    let r = evaluate(
        &mut plan,
        data.as_ref(),
        EvalOptions {
            limit: None,
            batch: 100,
            skip_bad: false,
        },
        &mut |_| {},
    )
    .expect("eval");
    (
        r.top1,
        r.top5,
        card.reference_top1.expect("card top1"),
        card.reference_top5.unwrap_or(f64::NAN),
    )
}

#[test]
fn cifar_resnets_reach_the_cards_top1_on_the_full_test_file() {
    for name in ["resnet20-cifar10", "resnet32-cifar10", "resnet56-cifar10"] {
        let (top1, _, want, _) = card_accuracy(name, &cifar_test());
        assert!(
            (top1 - want).abs() < 0.005,
            "{name}: top-1 {top1} vs card {want}"
        );
    }
}

#[test]
fn tiny_darknet_reaches_the_cards_accuracy_on_imagenet_val_1300() {
    let (top1, top5, want1, want5) = card_accuracy("tiny-darknet-imagenet", &imagenet_val());
    // Exactly the card's numbers (one image of 1300 is 0.077 point): JPEGs decode to Pillow's
    // pixels bit for bit and the resize is Pillow's, so no borderline image can flip.
    assert!((top1 - want1).abs() < 0.005, "top-1 {top1} vs card {want1}");
    assert!((top5 - want5).abs() < 0.005, "top-5 {top5} vs card {want5}");
}

#[test]
fn flops_of_resnet20_match_the_published_count() {
    let model = Model::load(&model("resnet20-cifar10")).expect("model");
    let plan = model.plan(PlanOptions::default()).expect("plan");
    // 40.55 M multiply-accumulates is the figure the CIFAR ResNet papers give for ResNet-20
    // (19 convolutions + the 64x10 classifier).
    assert_eq!(plan.dense_macs(), 40_551_040);
}

#[test]
fn activations_between_convolutions_stay_pixel_major() {
    // Residual adds, the CIFAR shortcut's slice and channel pad, LeakyReLU and max pooling
    // all keep the pixel-major layout, so no convolution of these networks transposes its
    // input or output; the network's output is NCHW.
    for name in [
        "resnet56-cifar10",
        "tiny-darknet-imagenet",
        "resnet18-randominit-imagenet",
    ] {
        let model = Model::load(&model(name)).expect("model");
        let plan = model
            .plan(PlanOptions {
                threads: 1,
                max_batch: 1,
            })
            .expect("plan");
        let convs = plan.per_conv_macs();
        assert!(!convs.is_empty());
        for (step, _) in convs {
            assert!(
                plan.output_is_pixel_major(step),
                "{name}: conv step {step} ({}) is NCHW",
                plan.step_name(step)
            );
        }
        let last = plan.num_steps() - 1;
        assert!(!plan.output_is_pixel_major(last), "{name}: output");
    }
}
