use super::*;
use crate::kernels::isa::assert_tier_result;

/// `a` (`m x k`) and `b` (`k x n`), row-major, of small values with many signs.
fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let a = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
        .collect();
    let b = (0..k * n)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
        .collect();
    (a, b)
}

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
        let (a, b) = operands(m, n, k);
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
    let (a, b) = operands(m, n, k);
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

/// Each output as one chain of fused multiply-adds over `k`, in order.
fn chained(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for q in 0..k {
                s = a[i * k + q].mul_add(b[q * n + j], s);
            }
            c[i * n + j] = s;
        }
    }
    c
}

#[test]
fn every_tier_and_stride_gives_the_chains_bits() {
    // Column counts with blocks of 64, 8 and single columns; row counts below, at and past
    // the widest row group.
    for &(m, n, k) in &[
        (1, 1000, 1280),
        (3, 77, 17),
        (5, 300, 9),
        (9, 9, 64),
        (2, 1, 1),
    ] {
        let (a, b) = operands(m, n, k);
        let want = chained(m, n, k, &a, &b);
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
            let mut c = vec![f32::NAN; m * n];
            sgemm_strided_on(
                isa,
                (m, n, k),
                (&a, k, 1),
                (&b, n, 1),
                (&mut c, n, 1),
                false,
            );
            assert_tier_result(isa, &c, &want, &format_args!("{m}x{n}x{k}"));
            // `b` transposed in memory and `c` written transposed: the strided loop.
            let mut ct = vec![f32::NAN; m * n];
            sgemm_strided_on(
                isa,
                (m, n, k),
                (&a, k, 1),
                (&bt, 1, k),
                (&mut ct, 1, m),
                false,
            );
            let back: Vec<f32> = (0..m * n).map(|q| ct[(q % n) * m + q / n]).collect();
            assert_tier_result(isa, &back, &want, &"transposed");
        }
    }
}
