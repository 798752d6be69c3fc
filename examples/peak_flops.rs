//! The machine's FP32 peak on each vector tier it has: a tight loop of independent FMAs
//! (12 accumulators, enough to cover the FMA latency on two pipes), on 1 thread and on every
//! core at once. `cargo run --release --example peak_flops`
use std::time::Instant;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_avx512(iters: u64) -> f32 {
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm256_setzero_ps();
    for x in acc {
        s = _mm256_add_ps(s, x);
    }
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), s);
    lanes.iter().sum()
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn fma_loop_neon(iters: u64) -> f32 {
    use std::arch::aarch64::*;
    let a = vdupq_n_f32(0.999_999);
    let b = vdupq_n_f32(1e-7);
    let mut acc = [vdupq_n_f32(1.0); 12];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = vfmaq_f32(b, *x, a);
        }
    }
    let mut s = vdupq_n_f32(0.0);
    for x in acc {
        s = vaddq_f32(s, x);
    }
    vaddvq_f32(s)
}

/// GFLOP/s of `threads` threads each running `iters` iterations of 12 FMAs of `lanes` lanes.
fn gflops(threads: usize, iters: u64, lanes: usize, f: fn(u64) -> f32) -> f64 {
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || f(iters)))
        .collect();
    let sink: f32 = handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum();
    std::hint::black_box(sink);
    (threads as f64 * iters as f64 * 12.0 * lanes as f64 * 2.0) / t.elapsed().as_secs_f64() / 1e9
}

/// A tier, its lanes, and its FMA loop.
type Tier = (haste::kernels::isa::Isa, usize, fn(u64) -> f32);

fn main() {
    use haste::kernels::isa::Isa;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(target_arch = "x86_64")]
    let tiers: [Tier; 2] = [
        // SAFETY (both): each runs only when its tier is supported (checked below).
        (Isa::Avx512, 16, |n| unsafe { fma_loop_avx512(n) }),
        (Isa::Avx2, 8, |n| unsafe { fma_loop_avx2(n) }),
    ];
    #[cfg(target_arch = "aarch64")]
    // SAFETY: runs only when NEON is supported (checked below).
    let tiers: [Tier; 1] = [(Isa::Neon, 4, |n| unsafe { fma_loop_neon(n) })];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let tiers: [Tier; 0] = [];
    for (isa, lanes, f) in tiers {
        if !isa.supported() {
            println!("{isa}: not supported on this machine");
            continue;
        }
        for threads in [1, cores] {
            let best = (0..5)
                .map(|_| gflops(threads, 50_000_000, lanes, f))
                .fold(0.0, f64::max);
            println!("{isa}: {threads} thread(s): {best:.0} GFLOP/s FP32 (best of 5)");
        }
    }
}
