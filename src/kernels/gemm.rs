//! Single-threaded SGEMM through the `gemm` crate (AVX-512 kernels with its `x86-v4` feature).
//!
//! haste parallelizes around GEMMs (over images or patches), never inside one: small GEMMs lose
//! time when split over threads (see ../shared/PERF_NOTES.md).

/// `c[m x n] (+)= a[m x k] * b[k x n]`, all row-major with the given leading dimensions
/// (row strides). With `accumulate`, the product is added to `c`; otherwise `c` is overwritten.
///
/// Panics if a slice is too short for its shape: callers size buffers from validated shapes.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    assert!(
        m == 0 || n == 0 || k == 0 || (lda >= k && ldb >= n && ldc >= n),
        "sgemm: leading dimension too small"
    );
    sgemm_strided((m, n, k), (a, lda, 1), (b, ldb, 1), (c, ldc, 1), accumulate);
}

/// `c = a * b` (or `c += a * b` with `accumulate`) for `m x k` times `k x n`, every matrix
/// given by its row and column strides (element `(i, j)` of `a` is `a[i * a_rs + j * a_cs]`),
/// so transposed operands and outputs cost no copy. Single-threaded.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    (m, n, k): (usize, usize, usize),
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    (c, c_rs, c_cs): (&mut [f32], usize, usize),
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        c.len() > last(m, n, c_rs, c_cs),
        "sgemm_strided: c too short"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c[i * c_rs + j * c_cs] = 0.0;
                }
            }
        }
        return;
    }
    assert!(
        a.len() > last(m, k, a_rs, a_cs),
        "sgemm_strided: a too short"
    );
    assert!(
        b.len() > last(k, n, b_rs, b_cs),
        "sgemm_strided: b too short"
    );
    // SAFETY: the asserts above keep every addressed element in bounds, and `c` is borrowed
    // mutably so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs as isize,
            c_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_over_sizes() {
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (16, 17, 144), (33, 9, 65)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let want = naive(m, n, k, &a, &b);
            let mut c = vec![1.0; m * n];
            sgemm(m, n, k, &a, k, &b, n, &mut c, n, false);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-3 * (1.0 + y.abs()), "{x} vs {y}");
            }
            sgemm(m, n, k, &a, k, &b, n, &mut c, n, true);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - 2.0 * y).abs() < 2e-3 * (1.0 + y.abs()));
            }
        }
    }

    #[test]
    fn strided_matches_naive_with_transposed_operands() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let want = naive(m, n, k, &a, &b);
        // a and b transposed in memory, c written transposed.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut ct = vec![0.0; m * n];
        sgemm_strided((m, n, k), (&at, 1, m), (&bt, 1, k), (&mut ct, 1, m), false);
        for i in 0..m {
            for j in 0..n {
                let (x, y) = (ct[j * m + i], want[i * n + j]);
                assert!((x - y).abs() < 1e-3 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }
}
