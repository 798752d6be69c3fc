//! Editing the shared ONNX models for tests of ops and export patterns they do not use: the
//! real ResNet-20, whose result is known from the unedited model, with nodes changed or
//! inserted, written to a temporary file and run.

use super::*;
use haste::{Model, ModelCard, PlanOptions};
use onnx_protobuf::{AttributeProto, Message, ModelProto, NodeProto, TensorProto};
use std::path::{Path, PathBuf};

pub fn resnet20() -> ModelProto {
    let bytes = std::fs::read(model("resnet20-cifar10")).expect("model bytes");
    ModelProto::parse_from_bytes(&bytes).expect("resnet20 parses")
}

/// A model file written for one test, in a temp folder removed with it.
pub struct ModelFile {
    _dir: super::TempDir,
    path: PathBuf,
}

impl std::ops::Deref for ModelFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

pub fn write(m: &ModelProto, name: &str) -> ModelFile {
    let dir = super::TempDir::new("ops", name);
    let path = dir.join(name);
    std::fs::write(&path, m.write_to_bytes().expect("serializes")).expect("write model");
    ModelFile { _dir: dir, path }
}

/// The logits of the first 8 CIFAR test images through `path`, at batch 8 and batch 1.
pub fn logits(path: &Path) -> Vec<Vec<f32>> {
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

/// The plan of `path` for 2 threads and batches of up to 8.
pub fn plan_of(path: &Path) -> haste::Plan {
    Model::load(path)
        .expect("model loads")
        .plan(PlanOptions {
            threads: 2,
            max_batch: 8,
        })
        .unwrap()
}

/// The op kinds of the plan of `path`, step by step.
pub fn step_kinds(path: &Path) -> Vec<&'static str> {
    let plan = plan_of(path);
    (0..plan.num_steps()).map(|s| plan.step_kind(s)).collect()
}

/// ResNet-20 with its stem's output (`x >= 0`, 16 channels, read by two ops) renamed
/// `stem_raw`: nodes inserted at the returned index that read `stem_raw` and write the
/// returned name stand between the stem and the rest of the network.
pub fn resnet20_cut_after_stem() -> (ModelProto, usize, String) {
    let mut m = resnet20();
    let g = m.graph.as_mut().unwrap();
    let at = g
        .node
        .iter()
        .position(|n| n.op_type == "Relu")
        .expect("the stem's Relu");
    let stem = std::mem::replace(&mut g.node[at].output[0], "stem_raw".into());
    (m, at + 1, stem)
}

/// Per convolution of the plan of `path` (2 threads, batch 8): whether it writes its output
/// pixel-major.
pub fn pixel_major_convs(path: &Path) -> Vec<bool> {
    let plan = plan_of(path);
    let convs = plan.per_conv_macs();
    convs
        .iter()
        .map(|&(step, _)| plan.output_layout(step).is_pixel_major())
        .collect()
}

pub fn ints(name: &str, v: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v,
        type_: onnx_protobuf::attribute_proto::AttributeType::INTS.into(),
        ..Default::default()
    }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        type_: onnx_protobuf::attribute_proto::AttributeType::INT.into(),
        ..Default::default()
    }
}

pub fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("runtime_shape/{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

pub fn int64s(name: &str, dims: Vec<i64>, v: Vec<i64>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims,
        data_type: 7,
        int64_data: v,
        ..Default::default()
    }
}

pub fn scalar(name: &str, v: f32) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: 1,
        float_data: vec![v],
        ..Default::default()
    }
}

pub fn floats_of(name: &str, dims: Vec<i64>, v: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims,
        data_type: 1,
        float_data: v,
        ..Default::default()
    }
}
