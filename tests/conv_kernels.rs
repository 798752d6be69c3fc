//! The convolution-kernel interface from outside the crate: a kernel written here runs in a
//! plan in place of the dense one, HASTE put on a layer by hand is what `Compression` puts
//! there, and the library's compression makes the layer choices `haste eval` makes.

mod common;

use common::*;
use haste::{open_dataset, CompressOptions, Compression, HasteConfig, LayerChoice};
use haste::{ConvJob, ConvKernel, DenseConv, HasteKernel, Scratch};
use haste::{Model, ModelCard, Plan, PlanOptions};
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A variant written outside the crate: the dense convolution, counting the images it runs.
struct Counting {
    dense: DenseConv,
    images: AtomicUsize,
}

impl ConvKernel for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn run_image(&self, job: &ConvJob, out: &mut [f32], scratch: &mut Scratch) {
        self.images.fetch_add(1, Ordering::Relaxed);
        self.dense.run_image(job, out, scratch);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The first `n` CIFAR test images, and the plan's logits for them in batches of `batch`.
fn images(plan: &Plan, n: usize) -> Vec<f32> {
    let path = model("resnet20-cifar10");
    let card = ModelCard::beside_model(&path).unwrap().unwrap();
    let data = open_dataset(&cifar_first20(), &card.preprocess, None).unwrap();
    let per: usize = plan.image_shape().iter().product();
    let mut x = vec![0.0; n * per];
    haste::datasets::load_batch(data.as_ref(), 0, n, per, &mut x).unwrap();
    x
}

fn logits(plan: &mut Plan, x: &[f32], batch: usize) -> Vec<u32> {
    let per: usize = plan.image_shape().iter().product();
    let mut out = Vec::new();
    for chunk in x.chunks(batch * per) {
        let (_, y) = plan.run(chunk, chunk.len() / per).unwrap();
        out.extend(y.iter().map(|v| v.to_bits()));
    }
    out
}

fn conv_steps(plan: &Plan) -> Vec<usize> {
    plan.per_conv_macs().iter().map(|&(s, _)| s).collect()
}

#[test]
fn a_kernel_written_outside_the_crate_runs_in_place_of_the_dense_one() {
    let model = Model::load(&model("resnet20-cifar10")).unwrap();
    let mut plan = model
        .plan(PlanOptions {
            threads: 2,
            max_batch: 8,
        })
        .unwrap();
    let x = images(&plan, 8);
    // Batches of 8 run image by image, batches of 1 layer by layer with both threads.
    let dense = (logits(&mut plan, &x, 8), logits(&mut plan, &x, 1));
    let mut counters = Vec::new();
    for step in conv_steps(&plan) {
        let (op, _, _) = plan.conv_at(step).unwrap();
        let k = Arc::new(Counting {
            dense: DenseConv::new(op),
            images: AtomicUsize::new(0),
        });
        plan.set_conv_kernel(step, k.clone()).unwrap();
        assert!(!plan.runs_dense(step));
        assert_eq!(plan.conv_kernel(step).unwrap().name(), "counting");
        counters.push(k);
    }
    let custom = (logits(&mut plan, &x, 8), logits(&mut plan, &x, 1));
    assert_eq!(
        custom, dense,
        "the same kernel gives the same bits through the interface"
    );
    assert_eq!(counters.len(), 19);
    for k in &counters {
        assert_eq!(
            k.images.load(Ordering::Relaxed),
            16,
            "every image through every layer"
        );
    }
    plan.reset_conv_kernels();
    assert!(conv_steps(&plan).iter().all(|&s| plan.runs_dense(s)));
    // A step that is not a convolution is refused.
    let not_conv = (0..plan.num_steps())
        .find(|s| plan.conv_kernel(*s).is_none())
        .unwrap();
    let k = Arc::new(DenseConv::new(
        plan.conv_at(conv_steps(&plan)[0]).unwrap().0,
    ));
    assert!(plan.set_conv_kernel(not_conv, k).is_err());
}

#[test]
fn haste_put_on_layers_by_hand_is_what_compression_puts_there() {
    let model = Model::load(&model("resnet20-cifar10")).unwrap();
    let mut plan = model
        .plan(PlanOptions {
            threads: 2,
            max_batch: 8,
        })
        .unwrap();
    let x = images(&plan, 8);
    let config = HasteConfig {
        hyperplanes: 10,
        ..HasteConfig::default()
    };
    let options = CompressOptions::paper(config.clone());
    let c = Compression::apply(&mut plan, &options).unwrap();
    let by_compression = (logits(&mut plan, &x, 8), logits(&mut plan, &x, 1));
    let compressed = c.compressed(&plan);
    assert_eq!(compressed, 18, "every convolution but the first");
    let dense = {
        plan.reset_conv_kernels();
        logits(&mut plan, &x, 8)
    };
    assert_ne!(by_compression.0, dense, "HASTE changed the logits");
    for (k, step) in conv_steps(&plan).into_iter().enumerate().skip(1) {
        let (op, _, _) = plan.conv_at(step).unwrap();
        // The paper's settings, as `CompressOptions::paper` makes them.
        let kernel = HasteKernel::new(op, &options.config, k).unwrap();
        plan.set_conv_kernel(step, Arc::new(kernel)).unwrap();
    }
    let by_hand = (logits(&mut plan, &x, 8), logits(&mut plan, &x, 1));
    assert_eq!(by_hand, by_compression);
}

/// `haste eval` and the library's `compress_on` with the same options and data choose the
/// same layers: the data-dependent step is part of the library call, not only of the CLI.
#[test]
fn the_library_chooses_the_layers_haste_eval_chooses() {
    let path = model("resnet18-randominit-imagenet");
    let data_path = imagenet_val();
    let j = haste_json(
        "eval",
        &path,
        &data_path,
        &["--limit", "8", "--batch", "8", "--hyperplanes", "12"],
    );
    let model = Model::load(&path).unwrap();
    let card = ModelCard::beside_model(&path).unwrap().unwrap();
    let data = open_dataset(&data_path, &card.preprocess, None).unwrap();
    let mut plan = model
        .plan(PlanOptions {
            threads: 0,
            max_batch: 8,
        })
        .unwrap();
    let options = CompressOptions {
        config: HasteConfig {
            hyperplanes: 12,
            ..HasteConfig::default()
        },
        ..CompressOptions::default()
    };
    let c = haste::compress_on(&mut plan, &options, data.as_ref(), (8, Some(8), false)).unwrap();
    // The reports need a run for the statistics; choices do not depend on it.
    let per: usize = plan.image_shape().iter().product();
    let mut x = vec![0.0; 8 * per];
    haste::datasets::load_batch(data.as_ref(), 0, 8, per, &mut x).unwrap();
    plan.run(&x, 8).unwrap();
    let layers = c.reports(&plan);
    let count = |choice: LayerChoice| layers.iter().filter(|l| l.choice == choice).count();
    let compressed = count(LayerChoice::Compressed);
    let few_merged = count(LayerChoice::DenseFewMerged);
    assert_eq!(j["compressed_convs"].as_u64(), Some(compressed as u64));
    assert_eq!(
        j["few_merged_dense_convs"].as_u64(),
        Some(few_merged as u64)
    );
    assert_eq!(
        j["overhead_dense_convs"].as_u64(),
        Some(count(LayerChoice::DenseOverhead) as u64)
    );
    assert!(
        compressed > 0,
        "some layer is compressed, so the choice is not trivial"
    );
}

/// On two or three threads a batch of one image runs each layer with every thread: HASTE
/// splits its patches into runs of about equal area (a patch row may be shared), and an
/// image with fewer patch rows than threads (ResNet-18's 7 x 7 layers at tile 8) its filter
/// panels, each part hashing every patch itself. Either way the logits are those of the
/// same images run whole, one image per thread, bit for bit.
#[test]
fn haste_split_over_threads_gives_the_whole_images_bits() {
    let path = model("resnet18-randominit-imagenet");
    let m = Model::load(&path).unwrap();
    let card = ModelCard::beside_model(&path).unwrap().unwrap();
    let data = open_dataset(&imagenet_val(), &card.preprocess, None).unwrap();
    let mut plan = m
        .plan(PlanOptions {
            threads: 2,
            max_batch: 2,
        })
        .unwrap();
    let per: usize = plan.image_shape().iter().product();
    let mut x = vec![0.0; 2 * per];
    haste::datasets::load_batch(data.as_ref(), 0, 2, per, &mut x).unwrap();
    // Three threads too: shares that start and end inside patch rows.
    let mut three = m
        .plan(PlanOptions {
            threads: 3,
            max_batch: 2,
        })
        .unwrap();
    // Tile 8: the 56 x 56 layers' seven patch rows split 25 patches to 24, a row shared;
    // tile 16: a shared row with one patch of the share before it.
    for tile in [8, 16] {
        let config = HasteConfig {
            hyperplanes: 14,
            tile,
            ..HasteConfig::default()
        };
        Compression::apply(&mut plan, &CompressOptions::paper(config.clone())).unwrap();
        Compression::apply(&mut three, &CompressOptions::paper(config)).unwrap();
        let whole = logits(&mut plan, &x, 2);
        let split = logits(&mut plan, &x, 1);
        assert_eq!(whole, split, "tile {tile}");
        assert_eq!(
            whole,
            logits(&mut three, &x, 1),
            "tile {tile}, three threads"
        );
        let dense = {
            plan.reset_conv_kernels();
            logits(&mut plan, &x, 2)
        };
        assert_ne!(whole, dense, "HASTE changed the logits");
    }
}
