//! The fully connected layer (a classifier's Gemm or MatMul): `out = alpha * x * w + bias`,
//! `x` `[m, k]`, `w` `[k, n]` row-major as the model stores it.
//!
//! At the batch sizes of inference `m` is small and the layer is a stream over the weights
//! (5 MB for MobileNetV2's 1280 -> 1000 classifier): each block of columns keeps `R` rows x
//! 64 columns of sums in registers and reads each weight once per `R` rows, straight from
//! the model's layout (a GEMM library packed the weights first, a second pass over them: 0.15
//! ms on two cores for that classifier at batch 1, against onnxruntime's 0.06-0.07). Columns
//! split into blocks of [`COLUMN_BLOCK`] that threads share when the plan runs the layer
//! for the whole batch. Every output is one chain of fused multiply-adds over `k` in order,
//! whatever the tier, the block or the thread count: the bits are the same everywhere.

use super::isa::Isa;
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
        unsafe { columns_on(isa, op, x, m, cols, shared.ptr()) }
    };
    if parallel {
        (0..n.div_ceil(COLUMN_BLOCK))
            .into_par_iter()
            .for_each(|q| block(q * COLUMN_BLOCK));
    } else {
        (0..n).step_by(COLUMN_BLOCK).for_each(block);
    }
}

/// The output of [`linear`], shared by blocks that write disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: each block writes its own columns only.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (taking `self`, so a closure captures the whole wrapper and not its
    /// field).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Columns `cols` of every row, on tier `isa`.
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
    // SAFETY: forwarded from the caller.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => columns_avx512(op, x, m, cols, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => columns_avx2(op, x, m, cols, out),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => columns_neon(op, x, m, cols, out),
            _ => columns::<1>(op, x, m, cols, out),
        }
    }
}

/// [`columns`] with 4 rows of 64 sums (16 registers of 16 lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn columns_avx512(
    op: &LinearOp,
    x: &[f32],
    m: usize,
    cols: std::ops::Range<usize>,
    out: *mut f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe { columns::<4>(op, x, m, cols, out) }
}

/// [`columns`] with one row of 64 sums (8 of the 16 registers of 8 lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2(
    op: &LinearOp,
    x: &[f32],
    m: usize,
    cols: std::ops::Range<usize>,
    out: *mut f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe { columns::<1>(op, x, m, cols, out) }
}

/// [`columns`] with 2 rows of 64 sums (32 registers of 4 lanes).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn columns_neon(
    op: &LinearOp,
    x: &[f32],
    m: usize,
    cols: std::ops::Range<usize>,
    out: *mut f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe { columns::<2>(op, x, m, cols, out) }
}

/// Columns `cols` of every row: blocks of 64 columns, then of 8, then single columns, each
/// over `R` rows at a time (then the rows left one at a time).
///
/// # Safety
/// As [`columns_on`].
#[inline(always)]
unsafe fn columns<const R: usize>(
    op: &LinearOp,
    x: &[f32],
    m: usize,
    cols: std::ops::Range<usize>,
    out: *mut f32,
) {
    let mut j = cols.start;
    while j < cols.end {
        let width = match cols.end - j {
            64.. => 64,
            8.. => 8,
            _ => 1,
        };
        let mut r = 0;
        // SAFETY (each block): rows `r..r + R` and columns `j..j + width` lie inside the
        // shapes the caller gives.
        while r + R <= m {
            unsafe {
                match width {
                    64 => block::<R, 64>(op, x, r, j, out),
                    8 => block::<R, 8>(op, x, r, j, out),
                    _ => block::<R, 1>(op, x, r, j, out),
                }
            }
            r += R;
        }
        for r in r..m {
            unsafe {
                match width {
                    64 => block::<1, 64>(op, x, r, j, out),
                    8 => block::<1, 8>(op, x, r, j, out),
                    _ => block::<1, 1>(op, x, r, j, out),
                }
            }
        }
        j += width;
    }
}

/// Rows `r0..r0 + R`, columns `j0..j0 + W`: the sums in registers over every `k`, then
/// `alpha` and the bias, as the scalar order has them.
///
/// # Safety
/// As [`columns_on`], with the rows and columns inside the shapes.
#[inline(always)]
unsafe fn block<const R: usize, const W: usize>(
    op: &LinearOp,
    x: &[f32],
    r0: usize,
    j0: usize,
    out: *mut f32,
) {
    let (k, n) = (op.k, op.n);
    let mut acc = [[0.0f32; W]; R];
    let xs: [&[f32]; R] = std::array::from_fn(|i| &x[(r0 + i) * k..][..k]);
    for p in 0..k {
        let w: &[f32; W] = op.weight[p * n + j0..][..W].try_into().expect("W weights");
        for (row, xr) in acc.iter_mut().zip(&xs) {
            let v = xr[p];
            for (a, &wv) in row.iter_mut().zip(w) {
                *a = v.mul_add(wv, *a);
            }
        }
    }
    for (i, row) in acc.iter_mut().enumerate() {
        if op.alpha != 1.0 {
            row.iter_mut().for_each(|v| *v *= op.alpha);
        }
        if let Some(b) = &op.bias {
            row.iter_mut().zip(&b[j0..]).for_each(|(v, b)| *v += b);
        }
        // SAFETY: the caller gives this block these columns of row `r0 + i`.
        let o = unsafe { std::slice::from_raw_parts_mut(out.add((r0 + i) * n + j0), W) };
        o.copy_from_slice(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    for (a, b) in out.iter().zip(&want) {
                        assert_eq!(a.to_bits(), b.to_bits(), "{isa} m {m} k {k} n {n}");
                    }
                }
            }
        }
    }
}
