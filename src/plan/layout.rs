//! Which activations the plan keeps pixel-major (NHWC).
//!
//! The direct kernel and HASTE work on pixel-major images, and a 1x1 convolution is one GEMM
//! in either layout. Keeping the values between such steps pixel-major saves two transposes
//! per convolution. Shapes stay NCHW everywhere: only the memory order of a 4-D value
//! changes. A value is pixel-major when its producer can write it so and every consumer can
//! read it so:
//! - convolutions write either layout; they read pixel-major when their kernel does
//!   ([`DenseConv::reads_pixel_major`]; a compressed kernel that replaces a dense one reads
//!   what it read),
//! - activations, pooling, and elementwise ops, Pad, Slice and Concat of 4-D values keep the
//!   layout of their operands, so all of them and their output share one layout (the last
//!   four run on the physical `[n, h, w, c]` shapes, axes permuted, so broadcasting works
//!   as in NCHW),
//! - global average pooling reads either (its `[n, c, 1, 1]` output is the same in both),
//! - a convolution's fused residual input is in the order of its output,
//! - everything else, the network's input and output and constants are NCHW.

use super::{Plan, Src};
use crate::kernels::layout::IoLayout;
use crate::kernels::DenseConv;
use crate::ops::shape::reduces_image_plane;
use crate::ops::Op;

/// The memory order of a 4-D value whose logical shape is `[n, c, h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Planar, `[n][c][h][w]`: the ONNX order, and every value's that is not 4-D.
    #[default]
    Nchw,
    /// Pixel-major, `[n][h][w][c]`.
    Nhwc,
}

impl Layout {
    pub fn is_pixel_major(self) -> bool {
        self == Layout::Nhwc
    }

    /// The kernels' description of a step reading `input` and writing `output`.
    pub fn io(input: Layout, output: Layout) -> IoLayout {
        IoLayout {
            input_nhwc: input.is_pixel_major(),
            output_nhwc: output.is_pixel_major(),
        }
    }
}

impl Plan {
    /// Per step: the memory order its output is kept in (see the module doc).
    pub(crate) fn choose_layouts(&self, producers: &[Vec<Option<usize>>]) -> Vec<Layout> {
        let nhwc = self.pixel_major_steps(producers);
        let layout = |pm: bool| if pm { Layout::Nhwc } else { Layout::Nchw };
        nhwc.into_iter().map(layout).collect()
    }

    /// Per step: whether its output can be pixel-major.
    fn pixel_major_steps(&self, producers: &[Vec<Option<usize>>]) -> Vec<bool> {
        let n = self.steps.len();
        let op = |i: usize| &self.graph.nodes[self.steps[i].node].op;
        let same_layout_op = |i: usize| keeps_layout(op(i));
        let mut nhwc: Vec<bool> = (0..n)
            .map(|i| {
                let shape = &self.img_out_shapes[i];
                let elementwise_same_shapes = match op(i) {
                    Op::MaxPool(_) | Op::AveragePool(_) | Op::Conv(_) | Op::Transpose { .. } => {
                        true
                    }
                    // Run on the physical `[n, h, w, c]` shapes (binary ops broadcast there as
                    // in NCHW, axes permuted alike: a squeeze-excitation scale `[n, c, 1, 1]`).
                    Op::Pad { .. }
                    | Op::Slice { .. }
                    | Op::SplitPart { .. }
                    | Op::Concat { .. }
                    | Op::Add
                    | Op::AddActivation(_)
                    | Op::Sub
                    | Op::Mul
                    | Op::Div => self.img_in_shapes[i]
                        .iter()
                        .all(|s| s.len() == 4 || same_in_both_orders(s)),
                    _ => self.img_in_shapes[i].iter().all(|s| s == shape),
                };
                shape.len() == 4
                    && i != self.output_step
                    && (matches!(op(i), Op::Conv(_)) || same_layout_op(i) || to_image(op(i)))
                    && elementwise_same_shapes
            })
            .collect();
        // A fused residual (a convolution's operand 1) is read in the output's order: the
        // two must agree, which the loop below enforces.
        let has_residual = |j: usize| matches!(op(j), Op::Conv(c) if c.residual.is_some());
        let reads_nhwc = |j: usize, k: usize| match op(j) {
            Op::Conv(c) => {
                (k == 0 && DenseConv::reads_pixel_major(&c.params))
                    || (k == 1 && c.residual.is_some())
            }
            Op::GlobalAveragePool => k == 0,
            Op::Transpose { perm } => k == 0 && perm[..] == TO_PIXELS,
            Op::ReduceMean { axes, .. } => {
                k == 0 && reduces_image_plane(axes, self.img_in_shapes[j][0].len())
            }
            _ => same_layout_op(j),
        };
        // Constraints only ever turn values back to NCHW, so this reaches a fixpoint.
        loop {
            let mut changed = false;
            for j in 0..n {
                if has_residual(j) {
                    match (self.steps[j].inputs.get(1), producers[j].get(1)) {
                        (Some(Src::Slot(_)), Some(&Some(p))) if nhwc[p] != nhwc[j] => {
                            (nhwc[p], nhwc[j]) = (false, false);
                            changed = true;
                        }
                        (Some(Src::Slot(_)), Some(&Some(_))) => {}
                        _ if nhwc[j] => {
                            nhwc[j] = false;
                            changed = true;
                        }
                        _ => {}
                    }
                }
                let mut all = nhwc[j] || !same_layout_op(j);
                for (k, src) in self.steps[j].inputs.iter().enumerate() {
                    match (src, producers[j][k]) {
                        (Src::Slot(_), Some(p)) => {
                            if nhwc[p] && !reads_nhwc(j, k) {
                                nhwc[p] = false;
                                changed = true;
                            }
                            all &= nhwc[p];
                        }
                        // A per-channel constant (a ConvNeXt layer scale) has the same
                        // memory in both orders.
                        (Src::Const(c), _)
                            if is_binary(op(j)) && same_in_both_orders(&self.consts[*c].0) => {}
                        _ => all = false,
                    }
                }
                if same_layout_op(j) && !all {
                    for (k, src) in self.steps[j].inputs.iter().enumerate() {
                        if let (Src::Slot(_), Some(p)) = (src, producers[j][k]) {
                            changed |= std::mem::take(&mut nhwc[p]);
                        }
                    }
                    changed |= std::mem::take(&mut nhwc[j]);
                }
            }
            if !changed {
                return nhwc;
            }
        }
    }
}

/// Whether `op` keeps the memory order of its operands (so it reads and writes pixel-major
/// values when they are; see the module doc).
pub(crate) fn keeps_layout(op: &Op) -> bool {
    matches!(
        op,
        Op::Relu
            | Op::BatchNorm(_)
            | Op::ChannelShuffle { .. }
            | Op::LeakyRelu { .. }
            | Op::Clip { .. }
            | Op::Activation(_)
            | Op::Unary(_)
            | Op::Add
            | Op::AddActivation(_)
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::Pad { .. }
            | Op::Slice { .. }
            | Op::SplitPart { .. }
            | Op::Concat { .. }
    )
}

/// A Transpose from an NCHW image to `[n, h, w, c]` (a ConvNeXt block's way into its
/// LayerNorm and MLP): on a pixel-major input its output's memory is the input's.
pub const TO_PIXELS: [usize; 4] = [0, 2, 3, 1];

/// The Transpose back, from `[n, h, w, c]` to an NCHW image: kept pixel-major, its output's
/// memory is its input's.
pub const FROM_PIXELS: [usize; 4] = [0, 3, 1, 2];

/// Whether `op` is the Transpose [`FROM_PIXELS`], which can write a pixel-major value.
fn to_image(op: &Op) -> bool {
    matches!(op, Op::Transpose { perm } if perm[..] == FROM_PIXELS)
}

/// Whether `op` is an elementwise operation of two operands.
fn is_binary(op: &Op) -> bool {
    matches!(
        op,
        Op::Add | Op::AddActivation(_) | Op::Sub | Op::Mul | Op::Div
    )
}

/// Whether a value of `shape` broadcast against NCHW images has the same memory in
/// pixel-major order: every axis of size 1 but, at most, the channel axis (its shape aligned
/// to the right of `[n, c, h, w]`).
pub fn same_in_both_orders(shape: &[usize]) -> bool {
    shape.len() <= 4
        && shape
            .iter()
            .rev()
            .enumerate()
            .all(|(from_last, &d)| d == 1 || from_last == 2)
}

/// `shape` with leading axes of size 1 up to rank 4 (numpy's broadcasting alignment).
pub fn to_rank4(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; 4usize.saturating_sub(shape.len())];
    s.extend_from_slice(shape);
    s
}

/// Where logical NCHW axis `a` lies in a pixel-major value's memory (`[n, h, w, c]`).
pub const NHWC_POSITION: [usize; 4] = [0, 3, 1, 2];

/// A per-axis list in logical NCHW order, reordered to the physical NHWC order.
pub fn to_nhwc_order<T: Copy>(v: &[T]) -> Vec<T> {
    vec![v[0], v[2], v[3], v[1]]
}
