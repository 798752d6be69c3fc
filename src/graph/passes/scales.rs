//! [`fold_channel_scales`]: a squeeze-excitation's channel scale moves into the convolution
//! that reads the scaled image.

use super::{producer_of, reader_counts, MISSING};
use crate::graph::Graph;
use crate::ops::Op;

/// Folds `Conv(x * s)` into the Conv, when `s` is a run-time value of one scale per image
/// and input channel (`[n, c, 1, 1]`: EfficientNet's and MobileNetV3's squeeze-excitation),
/// `x` a feature map `[n, c, h, w]`, and the product has no other reader: the Conv reads `x`
/// and, as its last input, `s` ([`crate::ops::ConvOp::input_scale`]). A squeeze-excitation
/// then stops being a pass that reads and writes the whole feature map (EfficientNet-B0's
/// 16 took 5 % of its time at batch 1): the dense kernel scales its weights per image
/// instead, `c_in * c_out` products against the `h * w` times as many of the convolution.
/// Runs after [`super::fuse_residual_adds`] (which fuses into Convs with one input), on the
/// graph with the model's image shape.
pub fn fold_channel_scales(g: &mut Graph, image_shape: &[usize]) {
    let Some(shapes) = g.shapes_for_one_image(image_shape) else {
        return;
    };
    let readers = reader_counts(g);
    let producer = producer_of(g);
    let mut remove = vec![false; g.nodes.len()];
    for conv in 0..g.nodes.len() {
        let c_in = match &g.nodes[conv].op {
            Op::Conv(c) if c.params.groups == 1 && !c.input_scale => c.params.c_in,
            _ => continue,
        };
        let Some(&product) = g.nodes[conv].inputs.first() else {
            continue;
        };
        let Some(&mul) = producer.get(&product) else {
            continue;
        };
        let [a, b] = g.nodes[mul].inputs[..] else {
            continue;
        };
        if !matches!(g.nodes[mul].op, Op::Mul)
            || readers.get(&product) != Some(&1)
            || g.outputs.contains(&product)
        {
            continue;
        }
        let is_scale = |v| {
            v != MISSING
                && !g.constants.contains_key(&v)
                && shapes.get(&v).map(Vec::as_slice) == Some(&[1, c_in, 1, 1][..])
        };
        let is_map = |v| match shapes.get(&v).map(Vec::as_slice) {
            Some(&[1, c, h, w]) => c == c_in && h * w > 1,
            _ => false,
        };
        let (x, s) = match (is_map(a) && is_scale(b), is_map(b) && is_scale(a)) {
            (true, _) => (a, b),
            (_, true) => (b, a),
            _ => continue,
        };
        let node = &mut g.nodes[conv];
        if let Op::Conv(c) = &mut node.op {
            c.input_scale = true;
        }
        node.inputs[0] = x;
        node.inputs.push(s);
        remove[mul] = true;
    }
    let mut r = remove.iter();
    g.nodes.retain(|_| !*r.next().unwrap_or(&false));
}
