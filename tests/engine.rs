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
    logits_on(model_path, data, n, batch, 2)
}

/// [`logits`] on `threads` threads.
fn logits_on(
    model_path: &std::path::Path,
    data: &std::path::Path,
    n: usize,
    batch: usize,
    threads: usize,
) -> Vec<Vec<f32>> {
    let model = Model::load(model_path).expect("model loads");
    let card = ModelCard::beside_model(model_path)
        .expect("card parses")
        .expect("card exists");
    let data = open_dataset(data, &card.preprocess, None).expect("dataset opens");
    let mut plan = model
        .plan(PlanOptions {
            threads,
            max_batch: batch,
        })
        .expect("plan");
    let per: usize = model.image_shape.iter().product();
    let mut out = Vec::new();
    let mut buf = vec![0.0; batch * per];
    let mut start = 0;
    while start < n {
        let k = batch.min(n - start);
        haste::datasets::load_batch(data.as_ref(), start, k, per, &mut buf).expect("images load");
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

/// The shared model a reference file's note names: the notes spell some names shorter than
/// the files (`resnet18-randominit` for `resnet18-randominit-imagenet.onnx`), so the file
/// whose stem starts with the name, ignoring `-` and `_`.
fn model_named(note_name: &str) -> String {
    let plain = |s: &str| s.replace(['-', '_'], "");
    let stems: Vec<String> = std::fs::read_dir(shared().join("models"))
        .expect("models folder")
        .filter_map(|e| {
            let p = e.expect("entry").path();
            let is_onnx = p.extension()? == "onnx";
            is_onnx.then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))?
        })
        .filter(|stem| plain(stem).starts_with(&plain(note_name)))
        .collect();
    assert_eq!(stems.len(), 1, "{note_name}: {stems:?}");
    stems[0].clone()
}

/// Every `reference_logits_*.json` of ../shared for ImageNet images (the model is named in
/// its note), at a batch larger than the thread count (image by image) and at batch 1 (each
/// image split over the threads). `HASTE_REFERENCE_ONLY=name` keeps the files whose name
/// holds `name` (CI's emulated ARM run takes one model with depthwise layers and SiLU).
#[test]
fn imagenet_models_match_onnxruntime_logits() {
    let only = std::env::var("HASTE_REFERENCE_ONLY").ok();
    let mut files: Vec<_> = std::fs::read_dir(shared().join("models"))
        .expect("models folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("reference_logits_")
                && name != "reference_logits_first20.json"
                && only.as_deref().is_none_or(|o| name.contains(o))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= if only.is_some() { 1 } else { 5 },
        "{files:?}"
    );
    for file in files {
        let reference = read_json(file.clone());
        let note = reference["note"].as_str().expect("note");
        let onnx = note
            .split_whitespace()
            .next()
            .expect("model file in the note");
        let name = model_named(onnx.strip_suffix(".onnx").expect("an .onnx file"));
        let name = name.as_str();
        let images = reference["images"].as_array().expect("images");
        for batch in [4, 1] {
            let got = logits(&model(name), &imagenet_val(), images.len(), batch);
            for (i, row) in got.iter().enumerate() {
                let d = max_abs_diff(row, &floats(&reference["logits"][i]));
                assert!(
                    d < 1e-3,
                    "{name} image {i} ({}) batch {batch}: max |diff| {d}",
                    images[i]
                );
            }
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

/// EfficientNet-Lite1 (depthwise layers, ReLU6, asymmetric pads on its stride-2 layers, TF's
/// preprocessing) scores its card's numbers.
#[test]
fn efficientnet_lite1_reaches_the_cards_accuracy_on_imagenet_val_1300() {
    let (top1, top5, want1, want5) = card_accuracy("efficientnet-lite1-imagenet", &imagenet_val());
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
            // A convolution on one pixel (Tiny Darknet's classifier, after the global pooling
            // moved in front of it) has the same memory in both orders.
            let (_, h, w) = plan.conv_at(step).expect("a conv");
            assert!(
                plan.output_layout(step).is_pixel_major() || h * w == 1,
                "{name}: conv step {step} ({}) is NCHW",
                plan.step_name(step)
            );
        }
        let last = plan.num_steps() - 1;
        assert!(!plan.output_layout(last).is_pixel_major(), "{name}: output");
    }
}

/// The layout pass's contract (the module doc of `haste::plan::layout`), checked on real plans
/// from their graphs alone: a pixel-major value is read only by a convolution whose kernel
/// reads that order (as its data input, or as a fused residual in the order of its own
/// output), by global average pooling, or by a same-layout op
/// (elementwise, activation, pooling, Pad, Slice, Concat) whose own output is pixel-major;
/// such an op is pixel-major only when every operand is a pixel-major step output (never the
/// network input or a constant); only convolutions and those ops are ever pixel-major; the
/// step producing the network's output is NCHW. And what the pass should reach on these
/// networks: every value between the first convolution and the global average pooling feeds
/// only convolutions the direct kernel or one plain GEMM runs, same-layout ops or that
/// pooling, so every convolution (residual additions fused in), shortcut Slice and Pad and
/// max pooling is pixel-major (but a convolution on one pixel, after that pooling, whose two orders are the
/// same memory).
#[test]
fn pixel_major_values_are_read_only_where_the_layout_pass_allows() {
    use haste::kernels::DenseConv;
    use haste::ops::Op;
    use std::collections::HashMap;
    for (name, convs) in [("resnet56-cifar10", 55), ("tiny-darknet-imagenet", 16)] {
        let model = Model::load(&model(name)).expect("model");
        let plan = model
            .plan(PlanOptions {
                threads: 1,
                max_batch: 1,
            })
            .expect("plan");
        let g = plan.graph();
        // The plan runs the nodes in the graph's topological order, one step each.
        let order = g.topological_order().expect("order");
        assert_eq!(order.len(), plan.num_steps(), "{name}");
        for (i, &ni) in order.iter().enumerate() {
            assert_eq!(plan.step_name(i), g.nodes[ni].name, "{name}: step {i}");
        }
        let mut producer: HashMap<usize, usize> = HashMap::new();
        for (i, &ni) in order.iter().enumerate() {
            for &v in &g.nodes[ni].outputs {
                producer.insert(v, i);
            }
        }
        let pixel_major = |step: usize| plan.output_layout(step).is_pixel_major();
        let same_layout = |op: &Op| {
            matches!(
                op,
                Op::Relu
                    | Op::LeakyRelu { .. }
                    | Op::Clip { .. }
                    | Op::Add
                    | Op::AddActivation(_)
                    | Op::Sub
                    | Op::Mul
                    | Op::Div
                    | Op::MaxPool(_)
                    | Op::AveragePool(_)
                    | Op::Pad { .. }
                    | Op::Slice { .. }
                    | Op::Concat { .. }
            )
        };
        let out_step = producer[&g.outputs[0]];
        assert!(!pixel_major(out_step), "{name}: the network output is NCHW");
        let mut seen_convs = 0;
        for (j, &nj) in order.iter().enumerate() {
            let node = &g.nodes[nj];
            let what = format!("{name}: step {j} {} ({})", node.name, node.op.kind());
            if pixel_major(j) {
                assert!(
                    matches!(node.op, Op::Conv(_)) || same_layout(&node.op),
                    "{what} is pixel-major"
                );
            }
            for (k, v) in node.inputs.iter().enumerate() {
                let Some(&p) = producer.get(v) else {
                    // The network's input or a constant: NCHW, so a same-layout op reading
                    // it must be NCHW too.
                    assert!(
                        !(same_layout(&node.op) && pixel_major(j)),
                        "{what} is pixel-major with a non-step operand {k}"
                    );
                    continue;
                };
                let reads_pixel_major = match &node.op {
                    // A fused residual is read in the convolution's output order.
                    Op::Conv(c) if k == 1 && c.residual.is_some() => {
                        assert_eq!(pixel_major(p), pixel_major(j), "{what}: residual order");
                        pixel_major(j)
                    }
                    Op::Conv(c) => k == 0 && DenseConv::reads_pixel_major(&c.params),
                    Op::GlobalAveragePool => k == 0,
                    op => same_layout(op) && pixel_major(j),
                };
                if pixel_major(p) {
                    assert!(
                        reads_pixel_major,
                        "{what} reads the pixel-major output of step {p} ({}) as operand {k}",
                        plan.step_name(p)
                    );
                } else if same_layout(&node.op) {
                    assert!(!pixel_major(j), "{what}: operand {k} (step {p}) is NCHW");
                }
            }
            match &node.op {
                Op::Conv(_) => {
                    seen_convs += 1;
                    let (_, h, w) = plan.conv_at(j).expect("a conv");
                    let one_pixel = h * w == 1;
                    assert!(pixel_major(j) || one_pixel, "{what}: a convolution is NCHW");
                }
                Op::AddActivation(_) | Op::Add | Op::Slice { .. } | Op::Pad { .. } => {
                    assert!(pixel_major(j), "{what}: a residual-path op is NCHW");
                }
                Op::MaxPool(_) => assert!(pixel_major(j), "{what}: a max pooling is NCHW"),
                _ => {}
            }
        }
        assert_eq!(seen_convs, convs, "{name}: convolutions planned");
    }
}

/// Tiny Darknet's pixel-major plan run two ways on the same real images: a batch of 2 on 2
/// threads runs image by image (each thread the whole network on one image: `pool_hwc`, the
/// whole-image 1x1 GEMM and the sequential direct kernel), a batch of 1 runs layer by layer
/// with each image split over the threads (`pool_hwc_rows` bands, 1x1 GEMMs over pixel
/// ranges, `DirectConv::forward_parallel`). Max pooling and the direct kernel give the same
/// bits either way; the 1x1 GEMMs may round differently on a range of pixels, hence the
/// tolerance.
#[test]
fn tiny_darknet_gives_the_same_logits_image_by_image_and_split_over_threads() {
    let path = model("tiny-darknet-imagenet");
    let whole = logits(&path, &imagenet_val(), 4, 2);
    let split = logits(&path, &imagenet_val(), 4, 1);
    assert_eq!(whole.len(), 4);
    for (i, (a, b)) in whole.iter().zip(&split).enumerate() {
        assert_eq!(a.len(), 1000);
        let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(a, b);
        assert!(
            d <= 1e-4 * scale,
            "image {i}: max |diff| {d} (largest logit {scale})"
        );
    }
}

/// A one-thread plan runs its batches on the calling thread, not on its pool's: the same
/// kernels image by image, so the same bits as two threads taking one image each, at batch 1
/// and at a batch that leaves a thread one image more than the other.
#[test]
fn one_thread_on_the_calling_thread_gives_the_bits_of_two_threads() {
    let path = model("resnet20-cifar10");
    let two = logits_on(&path, &cifar_test(), 5, 5, 2);
    // One thread at batch 1 and 5; two at batch 1, each layer's rows (and its fused residual
    // additions) split between the threads.
    for (batch, threads) in [(1, 1), (5, 1), (1, 2)] {
        let other = logits_on(&path, &cifar_test(), 5, batch, threads);
        assert_eq!(other.len(), 5);
        for (i, (a, b)) in other.iter().zip(&two).enumerate() {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(a),
                bits(b),
                "batch {batch}, {threads} threads, image {i}"
            );
        }
    }
}

/// ResNet-18 at batch 1 on two threads splits each layer over the threads: by output rows,
/// and its 7 x 7 layers (7 rows, which do not split evenly) by output channels, each thread
/// computing every pixel of half the filter groups, fused residual additions included. It
/// gives the bits of batch 2, where each thread runs the whole network on one image.
#[test]
fn resnet18_split_by_rows_and_channels_gives_the_bits_of_image_by_image() {
    let path = model("resnet18-randominit-imagenet");
    let whole = logits_on(&path, &imagenet_val(), 2, 2, 2);
    let split = logits_on(&path, &imagenet_val(), 2, 1, 2);
    assert_eq!(split.len(), 2);
    for (i, (a, b)) in split.iter().zip(&whole).enumerate() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b), "image {i}");
    }
}

/// A plan on two threads counts the thread that built it as one of its workers, so a run
/// starts on that thread with no hand-off, and a second plan built there shares the pool.
/// The same plan run from another thread (where the builder cannot help) uses a pool of its
/// own: it finishes, with the same bits. A plan of another size gets a pool of its own.
#[test]
fn a_plan_works_on_the_thread_that_built_it_and_from_any_other() {
    std::thread::spawn(|| {
        let path = model("resnet20-cifar10");
        let m = Model::load(&path).expect("model");
        let card = ModelCard::beside_model(&path).expect("card").expect("card");
        let data = open_dataset(&cifar_test(), &card.preprocess, None).expect("dataset");
        let per: usize = m.image_shape.iter().product();
        let mut x = vec![0.0; 3 * per];
        haste::datasets::load_batch(data.as_ref(), 0, 3, per, &mut x).expect("images");
        let options = |threads| PlanOptions {
            threads,
            max_batch: 3,
        };
        let mut a = m.plan(options(2)).expect("plan");
        let b = m.plan(options(2)).expect("plan");
        let c = m.plan(options(3)).expect("plan");
        assert_eq!(a.thread_pool().current_thread_index(), Some(0));
        assert_eq!(b.thread_pool().current_thread_index(), Some(0));
        assert_eq!(c.thread_pool().current_thread_index(), None);
        let here: Vec<Vec<f32>> = [1, 3]
            .iter()
            .map(|&n| a.run(&x[..n * per], n).expect("runs").1.to_vec())
            .collect();
        let there = std::thread::spawn(move || {
            assert_eq!(a.thread_pool().current_thread_index(), None);
            [1, 3]
                .iter()
                .map(|&n| a.run(&x[..n * per], n).expect("runs").1.to_vec())
                .collect::<Vec<_>>()
        })
        .join()
        .expect("the other thread finishes");
        let bits = |v: &[Vec<f32>]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&there), bits(&here));
    })
    .join()
    .expect("test thread");
}

/// A run from a checkpoint gives the bits of a whole run: at the first convolution, inside
/// residual blocks (where the checkpoint must keep the shortcut), from a checkpoint taken from
/// an earlier one, and with HASTE set after the checkpoint's step (what the calibration does
/// to profile one layer at a time).
#[test]
fn a_run_from_a_checkpoint_gives_the_bits_of_a_whole_run() {
    let path = model("resnet20-cifar10");
    let model = Model::load(&path).expect("model loads");
    let card = ModelCard::beside_model(&path).expect("card").expect("card");
    let data = open_dataset(&cifar_test(), &card.preprocess, None).expect("dataset");
    let per: usize = model.image_shape.iter().product();
    let mut x = vec![0.0; 3 * per];
    haste::datasets::load_batch(data.as_ref(), 0, 3, per, &mut x).expect("images");
    let mut plan = model
        .plan(PlanOptions {
            threads: 2,
            max_batch: 4,
        })
        .expect("plan");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let whole = bits(plan.run(&x, 3).expect("runs").1);
    let convs: Vec<usize> = plan.per_conv_macs().iter().map(|&(s, _)| s).collect();
    let mut earlier = None;
    for &step in [convs[0], convs[3], convs[4], convs[9]].iter() {
        let direct = plan.checkpoint(&x, 3, step, None).expect("checkpoint");
        assert_eq!(bits(plan.run_from(&direct, &x).expect("resumes").1), whole);
        let chained = plan
            .checkpoint(&x, 3, step, earlier.as_ref())
            .expect("chained checkpoint");
        assert_eq!(bits(plan.run_from(&chained, &x).expect("resumes").1), whole);
        earlier = Some(chained);
    }
    // One image on two threads: its values sit centred in their slots (`plan::placement`),
    // and a checkpoint keeps them where they were.
    let one = bits(plan.run(&x[..per], 1).expect("runs").1);
    assert_eq!(one, whole[..one.len()]);
    for &step in [convs[3], convs[9]].iter() {
        let single = plan
            .checkpoint(&x[..per], 1, step, None)
            .expect("checkpoint");
        assert_eq!(
            bits(plan.run_from(&single, &x[..per]).expect("resumes").1),
            one
        );
    }
    // HASTE from the third convolution on, after a dense checkpoint at it.
    let at = plan.checkpoint(&x, 3, convs[2], None).expect("checkpoint");
    let mut options = haste::CompressOptions::default();
    options.config.hyperplanes = 8;
    options.start_layer = 2;
    options.cost_aware = false;
    haste::compress::Compression::apply(&mut plan, &options).expect("compresses");
    let compressed = bits(plan.run(&x, 3).expect("runs").1);
    assert_ne!(compressed, whole);
    assert_eq!(bits(plan.run_from(&at, &x).expect("resumes").1), compressed);
    // A checkpoint of another batch size is refused.
    assert!(plan.checkpoint(&x[..per], 1, convs[3], Some(&at)).is_err());
}

/// The shared model `name` planned for two threads and up to five images, and the first five
/// images of `data`, preprocessed as its card says.
fn two_thread_plan_and_five_images(name: &str, data: &std::path::Path) -> (haste::Plan, Vec<f32>) {
    let path = model(name);
    let model = Model::load(&path).expect("model loads");
    let card = ModelCard::beside_model(&path)
        .expect("card")
        .expect("card exists");
    let data = open_dataset(data, &card.preprocess, None).expect("dataset opens");
    let plan = model
        .plan(PlanOptions {
            threads: 2,
            max_batch: 5,
        })
        .expect("plan");
    let per: usize = model.image_shape.iter().product();
    let mut x = vec![0.0; 5 * per];
    haste::datasets::load_batch(data.as_ref(), 0, 5, per, &mut x).expect("images load");
    (plan, x)
}

/// A batch of at least one image per thread runs image by image up to `Plan::layer_from`
/// and layer by layer from there (RegNetX-400MF: from inside the network, where its filter
/// banks outweigh its activations). Wherever the switch is, the logits have the same bits,
/// dense and with HASTE on every eligible layer (whose kernels then also run layer by layer).
#[test]
fn a_batch_gives_the_same_bits_wherever_it_switches_to_layer_by_layer() {
    use haste::{CompressOptions, Compression, HasteConfig};
    let cases = [
        ("regnet_x_400mf-randominit-imagenet", imagenet_val(), false),
        ("resnet20-cifar10", cifar_test(), true),
    ];
    for (name, data, compressed) in cases {
        let (mut plan, x) = two_thread_plan_and_five_images(name, &data);
        if compressed {
            let options = CompressOptions {
                config: HasteConfig {
                    hyperplanes: 10,
                    ..HasteConfig::default()
                },
                cost_aware: false,
                ..CompressOptions::default()
            };
            Compression::apply(&mut plan, &options).expect("HASTE applies");
        }
        let chosen = plan.layer_from();
        let steps = plan.num_steps();
        assert!(
            0 < chosen && chosen < steps,
            "{name}: switch at step {chosen} of {steps}"
        );
        // Two threads: one image runs layer by layer, split over them; two or three, image
        // by image throughout (no thread would take two images past the switch); four, up
        // to the switch.
        let order: Vec<usize> = (1..=4).map(|n| plan.image_steps(n)).collect();
        assert_eq!(order, [0, steps, steps, chosen], "{name}");
        let mut bits = |from: usize| {
            plan.set_layer_from(from);
            let (_, y) = plan.run(&x, 5).expect("runs");
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let at_chosen = bits(chosen);
        for from in [0, chosen / 2, steps] {
            assert!(
                bits(from) == at_chosen,
                "{name}: switching at step {from} changed the logits"
            );
        }
    }
}

/// An expansion and the depthwise convolution after it run band by band
/// (`Plan::fused_pairs`, `src/plan/fuse.rs`) where the widened image outgrows the L2 cache:
/// the logits have the bits of the two steps run apart, one image split over two threads in
/// parts of rows and five image by image (and past the switch layer by layer), dense and with
/// HASTE on EfficientNet-Lite1's 1x1 layers (a pair whose expansion runs HASTE stays two
/// steps).
#[test]
fn expansion_and_depthwise_pairs_give_the_bits_of_the_two_steps_apart() {
    use haste::{CompressOptions, Compression, HasteConfig};
    let cases = [
        ("efficientnet-lite1-imagenet", false),
        ("efficientnet-lite1-imagenet", true),
        ("mobilenet_v2-randominit-imagenet", false),
        ("regnet_x_400mf-randominit-imagenet", false),
    ];
    for (name, compressed) in cases {
        let (mut plan, x) = two_thread_plan_and_five_images(name, &imagenet_val());
        let per = x.len() / 5;
        let dense_pairs = plan.fused_pairs();
        assert!(!dense_pairs.is_empty(), "{name}: no pairs");
        if compressed {
            let options = CompressOptions {
                config: HasteConfig {
                    hyperplanes: 24,
                    ..HasteConfig::default()
                },
                skip_pointwise: false,
                cost_aware: false,
                ..CompressOptions::default()
            };
            Compression::apply(&mut plan, &options).expect("HASTE applies");
            let left = plan.fused_pairs();
            assert!(
                left.len() < dense_pairs.len(),
                "{name}: HASTE left {left:?}"
            );
        }
        for n in [1, 5] {
            let mut bits = |fused: bool| {
                plan.set_fused_pairs(fused);
                let (_, y) = plan.run(&x[..n * per], n).expect("runs");
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let apart = bits(false);
            assert!(
                bits(true) == apart,
                "{name} (HASTE {compressed}), batch {n}: the pairs changed the logits"
            );
        }
    }
}
