use haste::haste::buckets::Buckets;
use std::time::Instant;
fn main() {
    for c in [16usize, 32, 64, 128, 256] {
        // keys: about half the channels share a key with another
        let mut sets = Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..1000 {
            let keys: Vec<u128> = (0..c)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % (c as u64 / 2 + 1)) as u128 * 0x1234_5678_9abc_def1
                })
                .collect();
            sets.push(keys);
        }
        let skip = vec![false; c];
        let mut b = Buckets::default();
        let t = Instant::now();
        let mut n = 0;
        for _ in 0..20 {
            for k in &sets {
                b.group_skipping(k, &skip);
                n += b.count();
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / 20000.0;
        println!(
            "c={c}: {ns:.0} ns per group, {:.1} ns per channel ({n})",
            ns / c as f64
        );
    }
}
