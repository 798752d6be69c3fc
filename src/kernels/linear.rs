//! The fully connected layer (a classifier's Gemm or MatMul, a ConvNeXt MLP's MatMul):
//! `out = alpha * x * w + bias`, `x` `[m, k]`, `w` `[k, n]`.
//!
//! At a classifier's batch sizes `m` is small and the layer is a stream over the weights (5
//! MB for MobileNetV2's 1280 -> 1000 classifier, 151 MB for AlexNet's 9216 -> 4096), so the
//! weights are kept in column panels ([`pack_panels`], done once when the model loads) that
//! [`super::gemm`]'s kernel reads front to back, once per few rows, with no per-call packing
//! (the `gemm` crate packed the weights on every call: 0.15 ms on two cores for that
//! classifier at batch 1, against onnxruntime's 0.06-0.07). Where the plan runs the layer
//! for a whole batch, tasks of rows and panels share the threads: a few rows split by
//! columns, many rows (a ConvNeXt MLP over an image's pixels) by rows too. Every output is
//! one chain of fused multiply-adds over `k` in order, whatever the tier, the task or the
//! thread count: the bits are the same everywhere.

use super::gemm::{product_on, Product};
use super::isa::Isa;
use super::SharedOut;
use crate::ops::LinearOp;

/// Output columns per weight panel: the widest register block of [`super::gemm`].
pub const PANEL_COLUMNS: usize = 64;

/// Bytes of a panel's weights one product call reads (see [`panel_on`]): a quarter of a
/// 1 MB L2.
const CHUNK_BYTES: usize = 256 << 10;

/// Most panels per parallel task: 256 columns, 1.3 MB of a 1280 -> 1000 classifier's
/// weights.
const TASK_PANELS: usize = 4;

/// `w` (`[k, n]` row-major, as a model stores it) in column panels of [`PANEL_COLUMNS`]:
/// panel `p` holds columns `64p..64p + width` (the last one may be narrower) for `k = 0`,
/// then `k = 1` and so on, so a register block streams its weights from one contiguous run.
/// Read in the model's layout, each step of `k` jumped `4n` bytes, a new page every few
/// steps that no prefetcher followed: AlexNet's 9216 -> 4096 layer streamed its weights at
/// 11-14 GB/s on one core.
pub fn pack_panels(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    assert_eq!(w.len(), k * n, "a [k, n] weight");
    let mut packed = Vec::with_capacity(w.len());
    for j0 in (0..n).step_by(PANEL_COLUMNS) {
        let width = PANEL_COLUMNS.min(n - j0);
        for row in w.chunks_exact(n.max(1)) {
            packed.extend_from_slice(&row[j0..j0 + width]);
        }
    }
    packed
}

/// `op` applied to the `x.len() / op.k` rows of `x` into `out`; with `parallel`, split into
/// tasks of rows and column panels over the current rayon pool.
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
    let panels = n.div_ceil(PANEL_COLUMNS);
    let threads = rayon::current_num_threads();
    // Where the weights outweigh the rows (`n > m`), narrower groups of panels, so the
    // columns alone make four tasks a thread before the rows split: each row range reads
    // all of its panels' weights (ConvNeXt's 49 x 3072 -> 768 read its 9.4 MB three times,
    // at 263 GFLOP/s against 488). Where the rows outweigh them, each panel group reads
    // all of its rows, so the groups stay wide.
    let per_task = if parallel && n > m {
        (panels / (4 * threads.max(1))).clamp(1, TASK_PANELS)
    } else {
        TASK_PANELS
    };
    let column_tasks = panels.div_ceil(per_task);
    let rows_per_task = if parallel {
        task_rows(m, column_tasks, threads)
    } else {
        m
    };
    let task = |t: usize| {
        let (rt, ct) = (t / column_tasks, t % column_tasks);
        let rows = rt * rows_per_task..((rt + 1) * rows_per_task).min(m);
        let first = ct * per_task;
        for p in first..(first + per_task).min(panels) {
            // SAFETY: the shapes are checked above; this task writes these rows of panel
            // `p`'s columns and no other task does; the CPU runs `isa` (asserted).
            unsafe { panel_on(isa, op, x, rows.clone(), p, shared.at(0)) }
        }
    };
    let tasks = m.div_ceil(rows_per_task) * column_tasks;
    if parallel {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// Rows per parallel task for `m` rows in `column_tasks` groups of panels on `threads`
/// threads: all of them where the columns alone make four tasks a thread or the rows are
/// few (a classifier's batch), so each weight is read once per call; otherwise (a ConvNeXt
/// MLP over an image's pixels) enough row ranges of at least 16 rows (four register
/// blocks) to make four tasks a thread.
fn task_rows(m: usize, column_tasks: usize, threads: usize) -> usize {
    let wanted = 4 * threads.max(1);
    if m <= 16 || column_tasks >= wanted {
        return m;
    }
    let row_tasks = wanted.div_ceil(column_tasks);
    m.div_ceil(row_tasks).next_multiple_of(4).max(16)
}

/// Rows `rows` of panel `p`'s columns, on tier `isa`: the product ([`super::gemm`]'s
/// kernel), then `alpha` and the bias while the columns are in cache.
///
/// # Safety
/// `x` holds `m * op.k` values and `out` `m * op.n` for some `m >= rows.end`, of which this
/// call alone touches rows `rows` of panel `p`'s columns; the CPU runs `isa`.
unsafe fn panel_on(
    isa: Isa,
    op: &LinearOp,
    x: &[f32],
    rows: std::ops::Range<usize>,
    p: usize,
    out: *mut f32,
) {
    let (k, n) = (op.k, op.n);
    let j0 = p * PANEL_COLUMNS;
    let width = PANEL_COLUMNS.min(n - j0);
    // A panel longer than a quarter of L2 goes in chunks of `k`, each read from L2 by every
    // group of rows the kernel holds in registers after the first brought it from memory.
    // Each output continues its chain from the last chunk's sum, so the bits do not change.
    let chunk = (CHUNK_BYTES / (width * 4)).max(1);
    // At least one call, so that `k = 0` still writes its zero sums.
    for k0 in (0..k.max(1)).step_by(chunk) {
        let kc = chunk.min(k - k0);
        let product = Product {
            shape: (rows.len(), width, kc),
            a: (x[rows.start * k + k0..].as_ptr(), k, 1),
            b: (op.weight[k * j0 + k0 * width..].as_ptr(), width, 1),
            c: (out.wrapping_add(rows.start * n + j0), n, 1),
            accumulate: k0 > 0,
        };
        // SAFETY: forwarded from the caller (`weight` holds `k * n` values, checked by
        // `linear`; panel `p` starts at `k * j0` and holds `k * width`, rows `k0..k0 + kc`
        // of it from `k0 * width`).
        unsafe { product_on(isa, product) };
    }
    for r in rows {
        // SAFETY: the caller gives this call these columns of row `r`.
        let row = unsafe { std::slice::from_raw_parts_mut(out.add(r * n + j0), width) };
        if op.alpha != 1.0 {
            row.iter_mut().for_each(|v| *v *= op.alpha);
        }
        if let Some(b) = &op.bias {
            row.iter_mut()
                .zip(&b[j0..j0 + width])
                .for_each(|(v, b)| *v += b);
        }
        super::activation::apply(op.activation, row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::assert_tier_result;

    /// Each output as one chain of fused multiply-adds over `k`, then alpha and the bias.
    fn reference(op: &LinearOp, w: &[f32], x: &[f32], m: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * op.n];
        for r in 0..m {
            for j in 0..op.n {
                let mut s = 0.0f32;
                for p in 0..op.k {
                    s = x[r * op.k + p].mul_add(w[p * op.n + j], s);
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
        // Column counts with blocks of 64, 32, 16, 8 and single columns; row counts below,
        // at and past the widest row group; panels longer than a chunk of `k`; rows split
        // into parallel tasks (few column panels, many rows).
        for &(m, k, n, alpha, bias) in &[
            (1, 1280, 1000, 1.0, true),
            (3, 17, 77, 0.5, false),
            (5, 9, 300, 1.0, true),
            (8, 64, 9, 2.0, true),
            (2, 1, 1, 1.0, false),
            (6, 2100, 121, 1.0, true),
            (75, 40, 96, 0.5, true),
            (2, 0, 70, 1.0, true),
        ] {
            let w: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let bias = bias.then(|| (0..n).map(|j| j as f32 * 0.25 - 1.0).collect());
            let op = LinearOp::new(k, n, &w, bias, alpha);
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let want = reference(&op, &w, &x, m);
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
