//! The machine's FP32 peak: a tight loop of independent AVX-512 FMAs (12 accumulators, enough
//! to cover the FMA latency on two pipes), on 1 thread and on every core at once.
//! `cargo run --release --example peak_flops`
use std::time::Instant;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for x in acc {
        s = _mm512_add_ps(s, x);
    }
    _mm512_reduce_add_ps(s)
}

fn gflops(threads: usize, iters: u64) -> f64 {
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || unsafe { fma_loop(iters) }))
        .collect();
    let sink: f32 = handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum();
    std::hint::black_box(sink);
    // 12 accumulators x 16 lanes x 2 FLOPs per FMA.
    (threads as f64 * iters as f64 * 12.0 * 16.0 * 2.0) / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        println!("no AVX-512 on this machine");
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, cores] {
        let best = (0..5)
            .map(|_| gflops(threads, 50_000_000))
            .fold(0.0, f64::max);
        println!("{threads} thread(s): {best:.0} GFLOP/s FP32 (best of 5)");
    }
}
