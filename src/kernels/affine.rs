//! A per-channel affine map and its activation in one pass: a BatchNormalization that no
//! convolution before it can absorb (a pre-activation network's BN -> ReLU, as DenseNet's
//! every layer begins), in either memory order.

use crate::ops::{Activation, BatchNormOp};

/// Planes `first..` of an NCHW value (`plane` pixels each, channel `k % c` for plane `k`):
/// `out = act(x * scale[ch] + shift[ch])`.
pub fn planes(bn: &BatchNormOp, x: &[f32], plane: usize, first: usize, out: &mut [f32]) {
    let c = bn.scale.len();
    for (k, (o, xi)) in out
        .chunks_mut(plane.max(1))
        .zip(x.chunks(plane.max(1)))
        .enumerate()
    {
        let ch = (first + k) % c;
        let (s, t) = (bn.scale[ch], bn.shift[ch]);
        o.iter_mut().zip(xi).for_each(|(o, &v)| *o = v * s + t);
        super::activation::apply(bn.activation, o);
    }
}

/// Whole pixels of a pixel-major value (`scale.len()` channels each): `out = act(x *
/// scale[ch] + shift[ch])`, the same bits as [`planes`].
pub fn pixels(bn: &BatchNormOp, x: &[f32], out: &mut [f32]) {
    let c = bn.scale.len();
    for (o, xi) in out.chunks_mut(c.max(1)).zip(x.chunks(c.max(1))) {
        for (((o, &v), &s), &t) in o.iter_mut().zip(xi).zip(&bn.scale).zip(&bn.shift) {
            *o = v * s + t;
        }
    }
    if bn.activation != Activation::None {
        super::activation::apply(bn.activation, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_memory_orders_give_the_definition() {
        let (c, plane) = (5, 7);
        let bn = BatchNormOp {
            scale: vec![0.5, -1.25, 2.0, 0.0, 3.5],
            shift: vec![0.1, -0.2, 0.3, 1.0, -4.0],
            activation: Activation::Relu,
        };
        let x: Vec<f32> = (0..2 * c * plane)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 3.0)
            .collect();
        let def = |v: f32, ch: usize| (v * bn.scale[ch] + bn.shift[ch]).max(0.0);
        // NCHW, starting at plane 3 (a part of a batch), and the same values pixel-major.
        let mut out = vec![f32::NAN; x.len()];
        planes(&bn, &x, plane, 3, &mut out);
        for (i, (&o, &v)) in out.iter().zip(&x).enumerate() {
            assert_eq!(
                o.to_bits(),
                def(v, (3 + i / plane) % c).to_bits(),
                "planar {i}"
            );
        }
        pixels(&bn, &x, &mut out);
        for (i, (&o, &v)) in out.iter().zip(&x).enumerate() {
            assert_eq!(o.to_bits(), def(v, i % c).to_bits(), "pixel-major {i}");
        }
    }
}
