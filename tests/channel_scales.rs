//! Squeeze-excitation channel scales folded into the convolution after them
//! (`graph::passes::fold_channel_scales`): where they fold, what the dense kernel computes
//! with its weights scaled per image, and the plan's scaling of the input for a kernel that
//! does not take the scale.

mod common;

use common::*;
use haste::ops::{Activation, Conv2dParams, ConvOp, Op};
use haste::{scale_input, ConvJob, ConvKernel, DenseConv, IoLayout, Model, Plan, PlanOptions};
use haste::{Scratch, Scratches};
use std::any::Any;
use std::sync::Arc;

fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f32) / 1001.5 - 1.0)
        .collect()
}

fn b0_plan(threads: usize) -> Plan {
    let m = Model::load(&model("efficientnet_b0-randominit-imagenet")).expect("B0 loads");
    m.plan(PlanOptions {
        threads,
        max_batch: 4,
    })
    .expect("a plan")
}

/// The steps whose convolution takes a folded scale.
fn scaled_steps(plan: &Plan) -> Vec<usize> {
    (0..plan.num_steps())
        .filter(|&i| {
            plan.graph().nodes.iter().any(|n| {
                n.name == plan.step_name(i) && matches!(&n.op, Op::Conv(c) if c.input_scale)
            })
        })
        .collect()
}

#[test]
fn efficientnet_b0s_scales_fold_into_the_convolutions_after_them() {
    let plan = b0_plan(1);
    let kinds: Vec<&str> = (0..plan.num_steps()).map(|i| plan.step_kind(i)).collect();
    assert!(
        !kinds.contains(&"Mul"),
        "a scale still multiplies: {kinds:?}"
    );
    // Each squeeze-excitation pools its block's map once; the classifier's pooling is the
    // other one.
    let pools = kinds.iter().filter(|k| **k == "GlobalAveragePool").count();
    assert_eq!(scaled_steps(&plan).len(), pools - 1);
}

#[test]
fn a_scale_folded_into_the_weights_gives_the_sums_of_the_scaled_input() {
    let pixel_major = IoLayout::NHWC;
    let planar_in = IoLayout {
        input_nhwc: false,
        output_nhwc: true,
    };
    for (case, (c_in, c_out, k, io)) in [
        (40, 24, 1, pixel_major),
        (16, 70, 3, pixel_major),
        (16, 70, 3, planar_in),
        (96, 130, 1, IoLayout::NCHW),
    ]
    .into_iter()
    .enumerate()
    {
        let p = Conv2dParams::new(c_in, c_out, k, k).with_pads([k / 2; 4]);
        let op = ConvOp {
            params: p,
            weights: values(c_out * c_in * k * k, case),
            bias: Some(values(c_out, case + 1)),
            activation: Activation::Relu,
            residual: None,
            input_scale: true,
        };
        let dense = DenseConv::new(&op);
        assert!(dense.scales_input(), "{p:?}");
        let (h, w) = (9, 11);
        let x = values(c_in * h * w, case + 2);
        let mut scratch = Scratch::default();
        // Two images in a row: the second reuses the first's scaled copy of the weights.
        for image in 0..2 {
            let s = values(c_in, case + 3 + image);
            let job = ConvJob {
                x: &x,
                hw: (h, w),
                io,
                residual: None,
                in_scale: Some(&s),
            };
            let mut folded = vec![f32::NAN; c_out * h * w];
            dense.run_image(&job, &mut folded, &mut scratch);
            let mut buf = Vec::new();
            let scaled = scale_input(&job, &mut buf);
            assert!(scaled.in_scale.is_none());
            for (i, v) in scaled.x.iter().enumerate() {
                let ch = if io.input_nhwc { i % c_in } else { i / (h * w) };
                assert_eq!(*v, x[i] * s[ch], "{p:?}: value {i}");
            }
            let mut want = vec![f32::NAN; c_out * h * w];
            dense.run_image(&scaled, &mut want, &mut Scratch::default());
            for (i, (a, b)) in folded.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{p:?} {io:?} image {image} output {i}: {a} vs {b}"
                );
            }
        }
    }
}

/// A kernel written outside the crate that knows nothing of folded scales, taking a
/// thread's share of a batch in one call (`batches`, as HASTE does) or image by image.
struct Plain(DenseConv, bool);

impl ConvKernel for Plain {
    fn name(&self) -> &'static str {
        "plain"
    }

    fn run_image(&self, job: &ConvJob, out: &mut [f32], scratch: &mut Scratch) {
        assert!(job.in_scale.is_none(), "the plan scales the input first");
        self.0.run_image(job, out, scratch);
    }

    fn batches_images(&self) -> bool {
        self.1
    }

    fn run_image_parallel(
        &self,
        job: &ConvJob,
        out: &mut [f32],
        threads: usize,
        scratches: &dyn Scratches,
    ) {
        assert!(job.in_scale.is_none(), "the plan scales the input first");
        self.0.run_image_parallel(job, out, threads, scratches);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[test]
fn a_kernel_that_does_not_take_the_scale_gets_the_input_scaled() {
    for (threads, batches) in [(1, false), (2, false), (1, true), (2, true)] {
        let mut plan = b0_plan(threads);
        // Every step layer by layer at 4 images (two per thread on two threads), where
        // each thread takes its images' scales.
        plan.set_layer_from(0);
        let per: usize = plan.image_shape().iter().product();
        // (The random-weight B0 gives every image nearly the same squeeze-excitation
        // scales, so this checks that each thread's share is scaled, not which image's scales
        // it takes: `scale_images` is the only code that picks them.)
        let x = values(4 * per, 9);
        let logits = |plan: &mut Plan| -> Vec<f32> {
            [1, 2, 4]
                .iter()
                .flat_map(|&n| plan.run(&x[..n * per], n).expect("runs").1.to_vec())
                .collect()
        };
        let want = logits(&mut plan);
        let steps = scaled_steps(&plan);
        for &step in &steps {
            let op = plan
                .graph()
                .nodes
                .iter()
                .find_map(|n| match &n.op {
                    Op::Conv(c) if n.name == plan.step_name(step) => Some(c.clone()),
                    _ => None,
                })
                .expect("the step's op");
            let kernel = Arc::new(Plain(DenseConv::new(&op), batches));
            plan.set_conv_kernel(step, kernel).expect("a kernel");
        }
        let got = logits(&mut plan);
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);

        assert!(
            d < 1e-3,
            "{threads} threads, batches {batches}: max |diff| {d}"
        );
    }
}
