use std::time::Instant;
fn main() {
    for &(m, k, n) in &[
        (16usize, 144usize, 1024usize),
        (64, 576, 64),
        (64, 576, 3136),
        (256, 2304, 196),
        (1024, 1024, 1024),
    ] {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0f32; m * n];
        haste::kernels::gemm::sgemm(m, n, k, &a, k, &b, n, &mut c, n, false);
        let reps = (2e9 / (2.0 * (m * n * k) as f64)).max(3.0) as usize;
        let t = Instant::now();
        for _ in 0..reps {
            haste::kernels::gemm::sgemm(m, n, k, &a, k, &b, n, &mut c, n, false);
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{m}x{k}x{n}: {:.1} GFLOP/s",
            2.0 * (m * n * k * reps) as f64 / s / 1e9
        );
    }
}
