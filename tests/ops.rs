//! ONNX ops and export patterns the shared models do not use, checked on edits of the real
//! ResNet-20 whose result is known from the unedited model: a ReduceMean over the image in
//! place of its global average pooling, a Softmax after its classifier, and shapes computed
//! at run time from the input (`x.view(x.size(0), -1)`, TF-style padding).

mod common;

use common::*;
use haste::{Model, ModelCard, PlanOptions};
use onnx_protobuf::{AttributeProto, Message, ModelProto, NodeProto, TensorProto};
use std::path::{Path, PathBuf};

fn resnet20() -> ModelProto {
    let bytes = std::fs::read(model("resnet20-cifar10")).expect("model bytes");
    ModelProto::parse_from_bytes(&bytes).expect("resnet20 parses")
}

fn write(m: &ModelProto, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("haste-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, m.write_to_bytes().expect("serializes")).expect("write model");
    p
}

/// The logits of the first 8 CIFAR test images through `path`, at batch 8 and batch 1.
fn logits(path: &Path) -> Vec<Vec<f32>> {
    let card = ModelCard::beside_model(&model("resnet20-cifar10"))
        .unwrap()
        .unwrap();
    let data = haste::open_dataset(&cifar_first20(), &card.preprocess, None).unwrap();
    let model = Model::load(path).expect("model loads");
    let mut plan = model
        .plan(PlanOptions {
            threads: 2,
            max_batch: 8,
        })
        .unwrap();
    let per: usize = plan.image_shape().iter().product();
    let mut x = vec![0.0; 8 * per];
    haste::datasets::load_batch(data.as_ref(), 0, 8, per, &mut x).unwrap();
    let mut rows = Vec::new();
    for batch in [8, 1] {
        for chunk in x.chunks(batch * per) {
            let (shape, y) = plan.run(chunk, chunk.len() / per).unwrap();
            rows.extend(y.chunks(shape[1]).map(<[f32]>::to_vec));
        }
    }
    rows
}

/// Per convolution of the plan of `path` (2 threads, batch 8): whether it writes its output
/// pixel-major.
fn pixel_major_convs(path: &Path) -> Vec<bool> {
    let plan = Model::load(path)
        .expect("model loads")
        .plan(PlanOptions {
            threads: 2,
            max_batch: 8,
        })
        .unwrap();
    let convs = plan.per_conv_macs();
    convs
        .iter()
        .map(|&(step, _)| plan.output_layout(step).is_pixel_major())
        .collect()
}

fn ints(name: &str, v: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v,
        type_: onnx_protobuf::attribute_proto::AttributeType::INTS.into(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        type_: onnx_protobuf::attribute_proto::AttributeType::INT.into(),
        ..Default::default()
    }
}

#[test]
fn reduce_mean_over_the_image_equals_global_average_pooling() {
    let want = logits(&model("resnet20-cifar10"));
    let want_layouts = pixel_major_convs(&model("resnet20-cifar10"));
    assert!(want_layouts.iter().all(|&p| p), "{want_layouts:?}");
    for (keepdims, axes) in [(1, vec![2, 3]), (0, vec![-1, -2])] {
        let mut m = resnet20();
        let g = m.graph.as_mut().unwrap();
        let pool = g
            .node
            .iter_mut()
            .find(|n| n.op_type == "GlobalAveragePool")
            .expect("ResNet-20 pools globally");
        pool.op_type = "ReduceMean".into();
        pool.attribute = vec![ints("axes", axes.clone()), int("keepdims", keepdims)];
        let path = write(&m, &format!("reduce_mean_{keepdims}.onnx"));
        // It runs as the pooling did: the convolutions keep their pixel-major outputs (a
        // ReduceMean reading only planar values turned the last block's back to NCHW).
        assert_eq!(
            pixel_major_convs(&path),
            want_layouts,
            "keepdims {keepdims}"
        );
        let got = logits(&path);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g.iter().zip(w) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "keepdims {keepdims} {axes:?}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn softmax_after_the_classifier_gives_the_logits_probabilities() {
    let want = logits(&model("resnet20-cifar10"));
    let mut m = resnet20();
    let g = m.graph.as_mut().unwrap();
    let logits_name = g.output[0].name.clone();
    g.node.push(NodeProto {
        op_type: "Softmax".into(),
        name: "probs".into(),
        input: vec![logits_name],
        output: vec!["probs".into()],
        attribute: vec![int("axis", 1)],
        ..Default::default()
    });
    g.output[0].name = "probs".into();
    let got = logits(&write(&m, "softmax.onnx"));
    for (p, l) in got.iter().zip(&want) {
        let max = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = l.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (&p, &v) in p.iter().zip(l) {
            let q = (v as f64 - max).exp() / sum;
            assert!((p as f64 - q).abs() < 1e-6, "{p} vs {q}");
        }
        let total: f32 = p.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("runtime_shape/{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn int64s(name: &str, dims: Vec<i64>, v: Vec<i64>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims,
        data_type: 7,
        int64_data: v,
        ..Default::default()
    }
}

/// ResNet-20 with the Flatten before its classifier replaced by the nodes `chain` builds
/// from the Flatten's input and output names, with `initializers` added.
fn with_flatten_replaced(
    initializers: Vec<TensorProto>,
    chain: impl FnOnce(&str, &str) -> Vec<NodeProto>,
) -> ModelProto {
    let mut m = resnet20();
    let g = m.graph.as_mut().unwrap();
    let at = g
        .node
        .iter()
        .position(|n| n.op_type == "Flatten")
        .expect("a Flatten");
    let flatten = g.node.remove(at);
    g.initializer.extend(initializers);
    let nodes = chain(&flatten.input[0], &flatten.output[0]);
    for (k, n) in nodes.into_iter().enumerate() {
        g.node.insert(at + k, n);
    }
    m
}

/// `x.view(x.size(0), -1)` as PyTorch exports it with a dynamic batch, in place of the
/// Flatten before the classifier: Shape -> Gather(0) -> Unsqueeze -> Concat(-1) -> Reshape.
#[test]
fn a_reshape_to_the_runtime_batch_size_folds_to_copying_it() {
    let want = logits(&model("resnet20-cifar10"));
    let initializers = vec![
        int64s("rs_zero", vec![], vec![0]),
        int64s("rs_axes", vec![1], vec![0]),
        int64s("rs_minus1", vec![1], vec![-1]),
    ];
    let m = with_flatten_replaced(initializers, |x, out| {
        let axis0 = int("axis", 0);
        vec![
            node("Shape", &[x], "rs_shape", vec![]),
            node(
                "Gather",
                &["rs_shape", "rs_zero"],
                "rs_n",
                vec![axis0.clone()],
            ),
            node("Unsqueeze", &["rs_n", "rs_axes"], "rs_n1", vec![]),
            node("Concat", &["rs_n1", "rs_minus1"], "rs_target", vec![axis0]),
            node("Reshape", &[x, "rs_target"], out, vec![]),
        ]
    });
    let got = logits(&write(&m, "view_batch.onnx"));
    assert_eq!(got, want, "the same logits at batch 8 and 1");
}

/// The nodes padding `input` by the scalar `k` on both sides of its height and width, into
/// `padded` (initializers `{prefix}_axes = [0]` and `{prefix}_zeros = [0, 0]`).
fn pad_hw_by(k: &str, prefix: &str, input: &str) -> Vec<NodeProto> {
    let (axes, zeros) = (format!("{prefix}_axes"), format!("{prefix}_zeros"));
    let (k1, pads) = (format!("{prefix}_k1"), format!("{prefix}_pads"));
    let pads_of = [&zeros, &k1, &k1, &zeros, &k1, &k1].map(String::as_str);
    vec![
        node("Unsqueeze", &[k, &axes], &k1, vec![]),
        node("Concat", &pads_of, &pads, vec![int("axis", 0)]),
        node("Pad", &[input, &pads], "padded", vec![]),
    ]
}

/// ResNet-20 with its first convolution's padding computed at run time: the convolution
/// loses its pads and reads `padded`, which `chain` (inserted before it, given the graph
/// input's name) computes. Returns the logits against the unedited model's, within 1e-4.
fn assert_first_pads_computed_by(
    name: &str,
    initializers: Vec<TensorProto>,
    chain: impl FnOnce(&str) -> Vec<NodeProto>,
) {
    let want = logits(&model("resnet20-cifar10"));
    let mut m = resnet20();
    let g = m.graph.as_mut().unwrap();
    let input = g.input[0].name.clone();
    let at = g
        .node
        .iter()
        .position(|n| n.op_type == "Conv")
        .expect("a Conv");
    for a in g.node[at].attribute.iter_mut() {
        if a.name == "pads" {
            a.ints = vec![0; 4];
        }
    }
    g.node[at].input[0] = "padded".into();
    g.initializer.extend(initializers);
    for (k, n) in chain(&input).into_iter().enumerate() {
        g.node.insert(at + k, n);
    }
    let got = logits(&write(&m, name));
    for (g, w) in got.iter().zip(&want) {
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() < 1e-4, "{name}: {a} vs {b}");
        }
    }
}

/// TF-style "same" padding computed from the input's height: the first convolution loses its
/// pads and a Pad in front of it gets `pads` from `Shape(x)[2] - 31` (1 for 32x32 images).
#[test]
fn pads_computed_from_the_input_shape_fold_to_constants() {
    let initializers = vec![
        int64s("tf_two", vec![], vec![2]),
        int64s("tf_31", vec![], vec![31]),
        int64s("tf_axes", vec![1], vec![0]),
        int64s("tf_zeros", vec![2], vec![0, 0]),
    ];
    assert_first_pads_computed_by("tf_pads.onnx", initializers, |input| {
        let mut chain = vec![
            node("Shape", &[input], "tf_shape", vec![]),
            node(
                "Gather",
                &["tf_shape", "tf_two"],
                "tf_h",
                vec![int("axis", 0)],
            ),
            node("Sub", &["tf_h", "tf_31"], "tf_k", vec![]),
        ];
        chain.extend(pad_hw_by("tf_k", "tf", input));
        chain
    });
}

/// A shape computation that scales the batch (here a Reshape to `[2 * n, -1]`) cannot be
/// folded: a one-line load-time error names the node.
#[test]
fn a_shape_computed_from_the_batch_otherwise_is_refused_by_name() {
    let initializers = vec![
        int64s("bd_zero", vec![], vec![0]),
        int64s("bd_axes", vec![1], vec![0]),
        int64s("bd_two", vec![], vec![2]),
        int64s("bd_minus1", vec![1], vec![-1]),
    ];
    let m = with_flatten_replaced(initializers, |x, out| {
        let axis0 = int("axis", 0);
        vec![
            node("Shape", &[x], "bd_shape", vec![]),
            node(
                "Gather",
                &["bd_shape", "bd_zero"],
                "bd_n",
                vec![axis0.clone()],
            ),
            node("Mul", &["bd_n", "bd_two"], "bd_2n", vec![]),
            node("Unsqueeze", &["bd_2n", "bd_axes"], "bd_n1", vec![]),
            node("Concat", &["bd_n1", "bd_minus1"], "bd_target", vec![axis0]),
            node("Reshape", &[x, "bd_target"], out, vec![]),
        ]
    });
    let path = write(&m, "batch_dependent.onnx");
    let err = match Model::load(&path) {
        Ok(_) => panic!("a batch-dependent reshape was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("batch_dependent.onnx") && err.contains("batch size"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
}

fn floats(name: &str, v: f32) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: 1,
        float_data: vec![v],
        ..Default::default()
    }
}

/// TF-style padding arithmetic on the input's height, through every shape op TF exports use:
/// `k = Cast(Neg(Neg(Min(Max(Ceil(h / 40), Floor(h / 64)), 5))))`, 1 for 32x32 images, as
/// the first convolution's padding.
#[test]
fn shape_arithmetic_with_max_min_neg_ceil_floor_folds() {
    let mut initializers = vec![
        int64s("ar_two", vec![], vec![2]),
        int64s("ar_axes", vec![1], vec![0]),
        int64s("ar_zeros", vec![2], vec![0, 0]),
    ];
    for (name, v) in [("ar_40", 40.0), ("ar_64", 64.0), ("ar_5", 5.0)] {
        initializers.push(floats(name, v));
    }
    let to = |t: i64| vec![int("to", t)];
    assert_first_pads_computed_by("tf_arith.onnx", initializers, |input| {
        let mut chain = vec![
            node("Shape", &[input], "ar_shape", vec![]),
            node(
                "Gather",
                &["ar_shape", "ar_two"],
                "ar_h",
                vec![int("axis", 0)],
            ),
            node("Cast", &["ar_h"], "ar_hf", to(1)),
            node("Div", &["ar_hf", "ar_40"], "ar_q", vec![]),
            node("Ceil", &["ar_q"], "ar_c", vec![]),
            node("Div", &["ar_hf", "ar_64"], "ar_r", vec![]),
            node("Floor", &["ar_r"], "ar_f", vec![]),
            node("Max", &["ar_c", "ar_f"], "ar_m", vec![]),
            node("Min", &["ar_m", "ar_5"], "ar_m2", vec![]),
            node("Neg", &["ar_m2"], "ar_n", vec![]),
            node("Neg", &["ar_n"], "ar_nn", vec![]),
            node("Cast", &["ar_nn"], "ar_k", to(7)),
        ];
        chain.extend(pad_hw_by("ar_k", "ar", input));
        chain
    });
}

/// A Split along the channels and a Concat of its parts, after the first ReLU: the same
/// network. With the sizes as an input (opset 13 and later) and as equal parts.
#[test]
fn split_into_parts_and_concatenated_again_is_the_same_network() {
    let want = logits(&model("resnet20-cifar10"));
    for sizes in [Some(vec![6, 10]), None] {
        let mut m = resnet20();
        let g = m.graph.as_mut().unwrap();
        let at = g
            .node
            .iter()
            .position(|n| n.op_type == "Relu")
            .expect("a Relu");
        let v = g.node[at].output[0].clone();
        for n in g.node.iter_mut() {
            n.input
                .iter_mut()
                .filter(|i| **i == v)
                .for_each(|i| *i = "sp_cat".into());
        }
        let mut split = node("Split", &[&v], "sp_a", vec![int("axis", 1)]);
        split.output.push("sp_b".into());
        if let Some(s) = &sizes {
            g.initializer.push(int64s("sp_sizes", vec![2], s.clone()));
            split.input.push("sp_sizes".into());
        }
        let cat = node("Concat", &["sp_a", "sp_b"], "sp_cat", vec![int("axis", 1)]);
        g.node.insert(at + 1, split);
        g.node.insert(at + 2, cat);
        let got = logits(&write(&m, "split.onnx"));
        assert_eq!(got, want, "sizes {sizes:?}");
    }
}

fn floats_of(name: &str, dims: Vec<i64>, v: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims,
        data_type: 1,
        float_data: v,
        ..Default::default()
    }
}

/// ConvNeXt's ops after the classifier: `Erf(LayerNormalization(Sqrt(Pow(logits, 2))))`
/// (the magnitudes of the logits, normalized over the ten classes with a scale and a bias,
/// through the error function), against the same arithmetic on the unedited logits.
#[test]
fn pow_sqrt_layer_norm_and_erf_after_the_classifier() {
    let want = logits(&model("resnet20-cifar10"));
    let scale: Vec<f32> = (0..10).map(|k| 0.5 + 0.1 * k as f32).collect();
    let bias: Vec<f32> = (0..10).map(|k| 0.05 * k as f32 - 0.2).collect();
    let mut m = resnet20();
    let g = m.graph.as_mut().unwrap();
    let out = g.output[0].name.clone();
    g.initializer.push(floats("ln_two", 2.0));
    g.initializer
        .push(floats_of("ln_scale", vec![10], scale.clone()));
    g.initializer
        .push(floats_of("ln_bias", vec![10], bias.clone()));
    g.node.extend([
        node("Pow", &[&out, "ln_two"], "ln_sq", vec![]),
        node("Sqrt", &["ln_sq"], "ln_abs", vec![]),
        node(
            "LayerNormalization",
            &["ln_abs", "ln_scale", "ln_bias"],
            "ln_norm",
            vec![int("axis", -1)],
        ),
        node("Erf", &["ln_norm"], "ln_erf", vec![]),
    ]);
    g.output[0].name = "ln_erf".into();
    let got = logits(&write(&m, "layer_norm.onnx"));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        let a: Vec<f64> = w.iter().map(|&v| (v as f64).abs()).collect();
        let mean = a.iter().sum::<f64>() / 10.0;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 10.0;
        for k in 0..10 {
            let y = (a[k] - mean) / (var + 1e-5).sqrt() * scale[k] as f64 + bias[k] as f64;
            let e = haste::ops::erf(y as f32);
            assert!((g[k] - e).abs() < 1e-5, "class {k}: {} vs {e}", g[k]);
        }
        // Not the identity: the chain changed the values.
        assert!(g.iter().zip(w).any(|(a, b)| (a - b).abs() > 0.1));
    }
}

/// A pre-activation pair as DenseNet begins each layer, `BatchNormalization -> Relu`, on a
/// value two ops read (so no convolution absorbs it): ResNet-20's stem output `x >= 0` goes
/// through `BN(0.5^k)(Relu(BN(2^k)(x)))`, per-channel powers of two, which gives `x` back
/// exactly. The Relu runs inside the first BN and both keep the pixel-major layout, so the
/// network's steps are the unedited ones plus the two BNs.
#[test]
fn a_standalone_batch_norm_runs_pixel_major_with_its_relu() {
    let want = logits(&model("resnet20-cifar10"));
    let want_layouts = pixel_major_convs(&model("resnet20-cifar10"));
    let mut m = resnet20();
    let g = m.graph.as_mut().unwrap();
    let at = g
        .node
        .iter()
        .position(|n| n.op_type == "Relu")
        .expect("the stem's Relu");
    let stem = g.node[at].output[0].clone();
    g.node[at].output[0] = "stem_raw".into();
    let c = 16;
    let gamma = |up: bool| {
        (0..c)
            .map(|k| 2f32.powi(if up { k % 3 } else { -(k % 3) }))
            .collect::<Vec<_>>()
    };
    let bn = |name: &str, input: &str, output: &str, up: bool| {
        let p = |what: &str| format!("{name}_{what}");
        let params = [
            floats_of(&p("gamma"), vec![c as i64], gamma(up)),
            floats_of(&p("beta"), vec![c as i64], vec![0.0; c as usize]),
            floats_of(&p("mean"), vec![c as i64], vec![0.0; c as usize]),
            floats_of(&p("var"), vec![c as i64], vec![1.0; c as usize]),
        ];
        let names: Vec<String> = params.iter().map(|t| t.name.clone()).collect();
        let mut inputs = vec![input.to_string()];
        inputs.extend(names);
        let node = NodeProto {
            op_type: "BatchNormalization".into(),
            name: name.into(),
            input: inputs,
            output: vec![output.into()],
            attribute: vec![AttributeProto {
                name: "epsilon".into(),
                f: 0.0,
                type_: onnx_protobuf::attribute_proto::AttributeType::FLOAT.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        (node, params)
    };
    let (up, up_params) = bn("bn_up", "stem_raw", "bn_up_out", true);
    let relu = node("Relu", &["bn_up_out"], "bn_relu_out", vec![]);
    let (down, down_params) = bn("bn_down", "bn_relu_out", &stem, false);
    for (k, n) in [up, relu, down].into_iter().enumerate() {
        g.node.insert(at + 1 + k, n);
    }
    g.initializer
        .extend(up_params.into_iter().chain(down_params));
    let path = write(&m, "pre_activation.onnx");
    assert_eq!(pixel_major_convs(&path), want_layouts);
    let plan = Model::load(&path)
        .unwrap()
        .plan(PlanOptions {
            threads: 2,
            max_batch: 8,
        })
        .unwrap();
    let kinds: Vec<&str> = (0..plan.num_steps()).map(|s| plan.step_kind(s)).collect();
    assert_eq!(
        kinds.iter().filter(|&&k| k == "BatchNormalization").count(),
        2,
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"Relu"), "{kinds:?}");
    assert_eq!(logits(&path), want);
}

/// ShuffleNet's channel shuffle as PyTorch exports it, `Reshape -> Transpose -> Reshape`,
/// twice on ResNet-20's stem output (16 channels): in 2 groups, then in 8, which puts every
/// channel back. Each triple runs as one channel shuffle that keeps the pixel-major layout,
/// so the logits are the unedited ones, bit for bit.
#[test]
fn a_channel_shuffle_runs_as_one_pixel_major_step() {
    let want = logits(&model("resnet20-cifar10"));
    let want_layouts = pixel_major_convs(&model("resnet20-cifar10"));
    let mut m = resnet20();
    let g = m.graph.as_mut().unwrap();
    let at = g
        .node
        .iter()
        .position(|n| n.op_type == "Relu")
        .expect("the stem's Relu");
    let stem = g.node[at].output[0].clone();
    g.node[at].output[0] = "stem_raw".into();
    let mut nodes = Vec::new();
    for (k, groups) in [2i64, 8].into_iter().enumerate() {
        let input = if k == 0 {
            "stem_raw".to_string()
        } else {
            "shuffled_0".into()
        };
        let output = if k == 0 {
            "shuffled_0".to_string()
        } else {
            stem.clone()
        };
        let (split, merged) = (format!("split_{k}"), format!("merged_{k}"));
        g.initializer.push(int64s(
            &split,
            vec![5],
            vec![0, groups, 16 / groups, 32, 32],
        ));
        g.initializer
            .push(int64s(&merged, vec![4], vec![0, 16, 32, 32]));
        let (r, t) = (format!("grouped_{k}"), format!("swapped_{k}"));
        nodes.push(node("Reshape", &[&input, &split], &r, vec![]));
        let perm = ints("perm", vec![0, 2, 1, 3, 4]);
        nodes.push(node("Transpose", &[&r], &t, vec![perm]));
        nodes.push(node("Reshape", &[&t, &merged], &output, vec![]));
    }
    for (k, n) in nodes.into_iter().enumerate() {
        g.node.insert(at + 1 + k, n);
    }
    let path = write(&m, "channel_shuffle.onnx");
    assert_eq!(pixel_major_convs(&path), want_layouts);
    let plan = Model::load(&path)
        .unwrap()
        .plan(PlanOptions {
            threads: 2,
            max_batch: 8,
        })
        .unwrap();
    let kinds: Vec<&str> = (0..plan.num_steps()).map(|s| plan.step_kind(s)).collect();
    assert_eq!(
        kinds.iter().filter(|&&k| k == "ChannelShuffle").count(),
        2,
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&"Transpose") && !kinds.contains(&"Reshape"),
        "{kinds:?}"
    );
    assert_eq!(logits(&path), want);
}
