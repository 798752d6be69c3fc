//! Export patterns haste runs as one step, checked on edits of the real ResNet-20 whose
//! result is known from the unedited model: a ReduceMean over the image (a global average
//! pooling), a BatchNormalization no convolution absorbs with its Relu, ShuffleNet's channel
//! shuffle, PyTorch's five-op GELU and a MatMul's bias Add, and ConvNeXt's transposes around
//! its MLP with a per-channel layer scale.

mod common;

use common::edit::*;
use common::*;
use onnx_protobuf::{AttributeProto, NodeProto};

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

/// A pre-activation pair as DenseNet begins each layer, `BatchNormalization -> Relu`, on a
/// value two ops read (so no convolution absorbs it): ResNet-20's stem output `x >= 0` goes
/// through `BN(0.5^k)(Relu(BN(2^k)(x)))`, per-channel powers of two, which gives `x` back
/// exactly. The Relu runs inside the first BN and both keep the pixel-major layout, so the
/// network's steps are the unedited ones plus the two BNs.
#[test]
fn a_standalone_batch_norm_runs_pixel_major_with_its_relu() {
    let want = logits(&model("resnet20-cifar10"));
    let want_layouts = pixel_major_convs(&model("resnet20-cifar10"));
    let (mut m, at, stem) = resnet20_cut_after_stem();
    let g = m.graph.as_mut().unwrap();
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
        g.node.insert(at + k, n);
    }
    g.initializer
        .extend(up_params.into_iter().chain(down_params));
    let path = write(&m, "pre_activation.onnx");
    assert_eq!(pixel_major_convs(&path), want_layouts);
    let kinds = step_kinds(&path);
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
    let (mut m, at, stem) = resnet20_cut_after_stem();
    let g = m.graph.as_mut().unwrap();
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
        g.node.insert(at + k, n);
    }
    let path = write(&m, "channel_shuffle.onnx");
    assert_eq!(pixel_major_convs(&path), want_layouts);
    let kinds = step_kinds(&path);
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

/// ResNet-20's classifier `Gemm(x, W, b)` as `MatMul(x, W^T)` then `Add(b, _)`, followed by
/// GELU in the five ops PyTorch exports (`Div` by sqrt 2, `Erf`, `Add` 1, `Mul` by the input,
/// `Mul` by 0.5). The bias Add and the GELU run inside the MatMul, so the plan has as many
/// steps as the unedited one, and the outputs are GELU of the unedited logits, bit for bit.
#[test]
fn a_matmul_with_its_bias_add_and_gelu_runs_as_one_step() {
    let want = logits(&model("resnet20-cifar10"));
    let mut m = resnet20();
    let g = m.graph.as_mut().unwrap();
    let at = g
        .node
        .iter()
        .position(|n| n.op_type == "Gemm")
        .expect("the classifier");
    let gemm = g.node.remove(at);
    let weight = g
        .initializer
        .iter()
        .find(|t| t.name == gemm.input[1])
        .expect("the classifier's weights")
        .clone();
    let (rows, cols) = (weight.dims[0] as usize, weight.dims[1] as usize);
    let w = if weight.float_data.is_empty() {
        weight
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect::<Vec<_>>()
    } else {
        weight.float_data.clone()
    };
    // transB = 1: `W` is `[classes, features]`; MatMul takes `[features, classes]`.
    let wt: Vec<f32> = (0..rows * cols)
        .map(|i| w[(i % rows) * cols + i / rows])
        .collect();
    g.initializer
        .push(floats_of("mm_w", vec![cols as i64, rows as i64], wt));
    g.initializer
        .push(scalar("gelu_sqrt2", std::f32::consts::SQRT_2));
    g.initializer.push(scalar("gelu_one", 1.0));
    g.initializer.push(scalar("gelu_half", 0.5));
    let out = gemm.output[0].clone();
    let nodes = [
        node("MatMul", &[&gemm.input[0], "mm_w"], "mm", vec![]),
        node("Add", &[&gemm.input[2], "mm"], "mm_b", vec![]),
        node("Div", &["mm_b", "gelu_sqrt2"], "gelu_q", vec![]),
        node("Erf", &["gelu_q"], "gelu_e", vec![]),
        node("Add", &["gelu_e", "gelu_one"], "gelu_s", vec![]),
        node("Mul", &["mm_b", "gelu_s"], "gelu_p", vec![]),
        node("Mul", &["gelu_p", "gelu_half"], &out, vec![]),
    ];
    for (k, n) in nodes.into_iter().enumerate() {
        g.node.insert(at + k, n);
    }
    let path = write(&m, "matmul_gelu.onnx");
    let kinds = step_kinds(&path);
    assert_eq!(
        kinds.len(),
        step_kinds(&model("resnet20-cifar10")).len(),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"Linear"), "{kinds:?}");
    let gelu = |x: f32| (x * (haste::ops::erf(x / std::f32::consts::SQRT_2) + 1.0)) * 0.5;
    let got = logits(&path);
    for (g, w) in got.iter().zip(&want) {
        let w: Vec<u32> = w.iter().map(|&x| gelu(x).to_bits()).collect();
        assert_eq!(g.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), w);
    }
}

/// ConvNeXt's way through its MLP and back, `Transpose([0, 2, 3, 1])` then `Transpose([0,
/// 3, 1, 2])`, and its per-channel layer scale (a `[c, 1, 1]` constant `Mul`), on ResNet-20's
/// stem output: scales `2^k` then `0.5^k` give it back exactly. The transposes pass a
/// pixel-major value through unchanged and the scales run on it in place, so every
/// convolution keeps its pixel-major output, and the logits are the unedited ones.
#[test]
fn transposes_around_pixels_and_a_layer_scale_keep_the_pixel_major_layout() {
    let want = logits(&model("resnet20-cifar10"));
    let want_layouts = pixel_major_convs(&model("resnet20-cifar10"));
    let (mut m, at, stem) = resnet20_cut_after_stem();
    let g = m.graph.as_mut().unwrap();
    let scale = |up: bool| {
        (0..16)
            .map(|k| 2f32.powi(if up { k % 3 } else { -(k % 3) }))
            .collect::<Vec<_>>()
    };
    g.initializer
        .push(floats_of("scale_up", vec![16, 1, 1], scale(true)));
    g.initializer
        .push(floats_of("scale_down", vec![16, 1, 1], scale(false)));
    let perm = |p: Vec<i64>| vec![ints("perm", p)];
    let nodes = [
        node("Transpose", &["stem_raw"], "tokens", perm(vec![0, 2, 3, 1])),
        node("Transpose", &["tokens"], "image", perm(vec![0, 3, 1, 2])),
        node("Mul", &["scale_up", "image"], "scaled", vec![]),
        node("Mul", &["scaled", "scale_down"], &stem, vec![]),
    ];
    for (k, n) in nodes.into_iter().enumerate() {
        g.node.insert(at + k, n);
    }
    let path = write(&m, "transposes.onnx");
    assert_eq!(pixel_major_convs(&path), want_layouts);
    assert_eq!(logits(&path), want);
}
