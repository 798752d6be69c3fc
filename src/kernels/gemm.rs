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
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                c[row * ldc..row * ldc + n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        lda >= k && ldb >= n && ldc >= n,
        "sgemm: leading dimension too small"
    );
    assert!(a.len() >= (m - 1) * lda + k, "sgemm: a too short");
    assert!(b.len() >= (k - 1) * ldb + n, "sgemm: b too short");
    assert!(c.len() >= (m - 1) * ldc + n, "sgemm: c too short");
    // SAFETY: the asserts above guarantee every element addressed by the strides is in bounds,
    // and `c` is borrowed mutably so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            1,
            ldb as isize,
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
}
