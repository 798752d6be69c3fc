//! [`fold_channel_shuffles`]: ShuffleNet's channel shuffle, exported as
//! `Reshape -> Transpose -> Reshape`, becomes one [`Op::ChannelShuffle`].

use super::{producer_of, reader_counts};
use crate::graph::Graph;
use crate::ops::Op;

/// Rewrites `Reshape([n, c, h, w] -> [n, g, c / g, h, w])`, `Transpose([0, 2, 1, 3, 4])`,
/// `Reshape(-> [n, c, h, w])` (`torch`'s `x.view(n, g, c // g, h, w).transpose(1, 2)
/// .reshape(n, c, h, w)`), each value read once, as one channel shuffle of the first input.
/// The three ops moved the whole map through a rank-5 transpose in NCHW, and forced the
/// convolutions around them out of the pixel-major layout (ShuffleNetV2 at batch 1 spent 27
/// % of its time there); the shuffle permutes each pixel's channels in place, in either
/// layout. Recognized by the values' shapes for one image, on the graph with the model's
/// image shape, so any batch handling of the export's Reshape targets is the same.
pub fn fold_channel_shuffles(g: &mut Graph, image_shape: &[usize]) {
    let Some(shapes) = g.shapes_for_one_image(image_shape) else {
        return;
    };
    let readers = reader_counts(g);
    let producer = producer_of(g);
    let single = |v| readers.get(&v) == Some(&1) && !g.outputs.contains(&v);
    let mut remove = vec![false; g.nodes.len()];
    for last in 0..g.nodes.len() {
        let Some(&t_out) = g.nodes[last].inputs.first() else {
            continue;
        };
        let Some(&transpose) = producer.get(&t_out) else {
            continue;
        };
        let Some(&r_out) = g.nodes[transpose].inputs.first() else {
            continue;
        };
        let Some(&first) = producer.get(&r_out) else {
            continue;
        };
        let Some(&x) = g.nodes[first].inputs.first() else {
            continue;
        };
        let is_shuffle = matches!(g.nodes[last].op, Op::Reshape { .. })
            && matches!(&g.nodes[transpose].op, Op::Transpose { perm } if perm[..] == [0, 2, 1, 3, 4])
            && matches!(g.nodes[first].op, Op::Reshape { .. })
            && single(t_out)
            && single(r_out);
        if !is_shuffle {
            continue;
        }
        let shape = |v| shapes.get(&v).map(Vec::as_slice);
        let Some(&[1, c, h, w]) = shape(x) else {
            continue;
        };
        let Some(&[1, groups, per, h1, w1]) = shape(r_out) else {
            continue;
        };
        let Some(out) = shape(g.nodes[last].outputs[0]) else {
            continue;
        };
        if groups * per != c || (h1, w1) != (h, w) || out != [1, c, h, w] {
            continue;
        }
        let node = &mut g.nodes[last];
        node.op = Op::ChannelShuffle { groups };
        node.inputs = vec![x];
        (remove[first], remove[transpose]) = (true, true);
    }
    let mut r = remove.iter();
    g.nodes.retain(|_| !*r.next().unwrap_or(&false));
}
