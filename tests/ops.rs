//! ONNX ops and export patterns the shared models do not use, checked on edits of the real
//! ResNet-20 whose result is known from the unedited model: a ReduceMean over the image in
//! place of its global average pooling, a Softmax after its classifier, and shapes computed
//! at run time from the input (`x.view(x.size(0), -1)`, TF-style padding).

mod common;

use common::edit::*;
use common::*;
use haste::Model;
use onnx_protobuf::{ModelProto, NodeProto, TensorProto};

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
        initializers.push(scalar(name, v));
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
    g.initializer.push(scalar("ln_two", 2.0));
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
