//! The fully connected layer (a classifier's Gemm or MatMul): `out = alpha * x * w + bias`,
//! `x` `[m, k]`, `w` `[k, n]` row-major as the model stores it.
//!
//! At the batch sizes of inference `m` is small and the layer is a stream over the weights
//! (5 MB for MobileNetV2's 1280 -> 1000 classifier): [`super::gemm`]'s kernel reads each
//! weight once per few rows, straight from the model's layout (the `gemm` crate packed the
//! weights first, a second pass over them: 0.15 ms on two cores for that classifier at batch
//! 1, against onnxruntime's 0.06-0.07). Columns split into blocks of [`COLUMN_BLOCK`] that
//! threads share when the plan runs the layer for the whole batch. Every output is one
//! chain of fused multiply-adds over `k` in order, whatever the tier, the block or the
//! thread count: the bits are the same everywhere.

use super::gemm::{product_on, Product};
use super::isa::Isa;
use super::SharedOut;
use crate::ops::LinearOp;

/// Columns per parallel block: four blocks of 64 output columns, 1.3 MB of a 1280 -> 1000
/// classifier's weights.
const COLUMN_BLOCK: usize = 256;

/// `op` applied to the `x.len() / op.k` rows of `x` into `out`, the column blocks spread
/// over the current rayon pool when `parallel`.
pub fn linear(isa: Isa, op: &LinearOp, x: &[f32], out: &mut [f32], parallel: bool) {
    use rayon::prelude::*;
    let (k, n) = (op.k, op.n);
    let m = out.len() / n.max(1);
    assert!(x.len() >= m * k && op.weight.len() >= k * n && out.len() == m * n);
    assert!(op.bias.as_ref().is_none_or(|b| b.len() >= n));
    assert!(isa.supported(), "tier {isa} on a CPU without it");
    if m == 0 || n == 0 {
        return;
    }
    let shared = SharedOut(out.as_mut_ptr());
    let block = |j0: usize| {
        let cols = j0..(j0 + COLUMN_BLOCK).min(n);
        // SAFETY: the shapes are checked above; this block writes columns `cols` of every
        // row and no other block does; the CPU runs `isa` (asserted).
        unsafe { columns_on(isa, op, x, m, cols, shared.at(0)) }
    };
    if parallel {
        (0..n.div_ceil(COLUMN_BLOCK))
            .into_par_iter()
            .for_each(|q| block(q * COLUMN_BLOCK));
    } else {
        (0..n).step_by(COLUMN_BLOCK).for_each(block);
    }
}

/// Columns `cols` of every row, on tier `isa`: the product ([`super::gemm`]'s kernel), then
/// `alpha` and the bias while the columns are in cache.
///
/// # Safety
/// `x` holds `m * op.k` values, `out` `m * op.n` values of which this call alone touches
/// columns `cols`; the CPU runs `isa`.
unsafe fn columns_on(
    isa: Isa,
    op: &LinearOp,
    x: &[f32],
    m: usize,
    cols: std::ops::Range<usize>,
    out: *mut f32,
) {
    let (k, n) = (op.k, op.n);
    let product = Product {
        shape: (m, cols.len(), k),
        a: (x.as_ptr(), k, 1),
        b: (op.weight[cols.start..].as_ptr(), n, 1),
        c: (out.wrapping_add(cols.start), n, 1),
        accumulate: false,
    };
    // SAFETY: forwarded from the caller (`weight` holds `k * n` values, checked by
    // `linear`).
    unsafe { product_on(isa, product) };
    for r in 0..m {
        // SAFETY: the caller gives this call these columns of every row.
        let row =
            unsafe { std::slice::from_raw_parts_mut(out.add(r * n + cols.start), cols.len()) };
        if op.alpha != 1.0 {
            row.iter_mut().for_each(|v| *v *= op.alpha);
        }
        if let Some(b) = &op.bias {
            row.iter_mut()
                .zip(&b[cols.clone()])
                .for_each(|(v, b)| *v += b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::assert_tier_result;

    /// Each output as one chain of fused multiply-adds over `k`, then alpha and the bias.
    fn reference(op: &LinearOp, x: &[f32]) -> Vec<f32> {
        let m = x.len() / op.k;
        let mut out = vec![0.0; m * op.n];
        for r in 0..m {
            for j in 0..op.n {
                let mut s = 0.0f32;
                for p in 0..op.k {
                    s = x[r * op.k + p].mul_add(op.weight[p * op.n + j], s);
                }
                if op.alpha != 1.0 {
                    s *= op.alpha;
                }
                out[r * op.n + j] = s + op.bias.as_ref().map_or(0.0, |b| b[j]);
            }
        }
        out
    }

    #[test]
    fn every_tier_matches_the_reference_bit_for_bit() {
        // Column counts with blocks of 64, 8 and single columns; row counts below, at and
        // past the widest row group.
        for &(m, k, n, alpha, bias) in &[
            (1, 1280, 1000, 1.0, true),
            (3, 17, 77, 0.5, false),
            (5, 9, 300, 1.0, true),
            (8, 64, 9, 2.0, true),
            (2, 1, 1, 1.0, false),
        ] {
            let op = LinearOp {
                k,
                n,
                weight: (0..k * n)
                    .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
                    .collect(),
                bias: bias.then(|| (0..n).map(|j| j as f32 * 0.25 - 1.0).collect()),
                alpha,
            };
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let want = reference(&op, &x);
            for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
                for parallel in [false, true] {
                    let mut out = vec![f32::NAN; m * n];
                    linear(isa, &op, &x, &mut out, parallel);
                    assert_tier_result(isa, &out, &want, &format_args!("m {m} k {k} n {n}"));
                }
            }
        }
    }
}
