//! ONNX ops the shared models do not use, checked on edits of the real ResNet-20 whose result
//! is known from the unedited model: a ReduceMean over the image in place of its global
//! average pooling, and a Softmax after its classifier.

mod common;

use common::*;
use haste::{Model, ModelCard, PlanOptions};
use onnx_protobuf::{AttributeProto, Message, ModelProto, NodeProto};
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
        let got = logits(&write(&m, &format!("reduce_mean_{keepdims}.onnx")));
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
