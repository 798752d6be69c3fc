//! How long a cache line takes to go from one core to another and back (two threads passing
//! a counter): `cargo run --release --example core_latency`. On a VM the two virtual cores
//! can sit on neighbouring cores one hour (40-120 ns) and on distant ones the next (about
//! 400 ns), and batch-1 runs on two threads then change speed by a third on both haste and
//! onnxruntime; `bench/vs_onnxruntime.sh` prints this beside its numbers.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn main() {
    let rounds = 200_000u64;
    let counter = Arc::new(AtomicU64::new(0));
    let other = Arc::clone(&counter);
    // The other thread answers each odd value with the next even one.
    let echo = std::thread::spawn(move || {
        for i in 0..rounds {
            while other.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            other.store(2 * i + 2, Ordering::Release);
        }
    });
    let start = std::time::Instant::now();
    for i in 0..rounds {
        counter.store(2 * i + 1, Ordering::Release);
        while counter.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let per = start.elapsed().as_secs_f64() / rounds as f64;
    echo.join().expect("the echo thread ends");
    println!("cross-core round trip {:.0} ns", per * 1e9);
}
