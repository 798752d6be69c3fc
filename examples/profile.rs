//! Per-op-kind time of a model on random input, then each convolution's:
//! `cargo run --release --example profile -- MODEL BATCH RUNS [THREADS]` (`STEPS=1` also
//! lists every other step with its time and memory order).
fn main() -> Result<(), haste::Error> {
    let a: Vec<String> = std::env::args().collect();
    let model = haste::Model::load(a[1].as_ref())?;
    let batch: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let runs: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut plan = model.plan(haste::PlanOptions {
        threads: a.get(4).and_then(|s| s.parse().ok()).unwrap_or(0),
        max_batch: batch,
    })?;
    let per: usize = model.image_shape.iter().product();
    let x: Vec<f32> = (0..batch * per)
        .map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0)
        .collect();
    plan.run(&x, batch)?;
    plan.set_profiling(true);
    let t = std::time::Instant::now();
    for _ in 0..runs {
        plan.run(&x, batch)?;
    }
    let total = t.elapsed().as_secs_f64();
    let secs = plan.step_seconds().unwrap_or(&[]).to_vec();
    let mut by_kind: Vec<(&str, f64)> = Vec::new();
    for (i, s) in secs.iter().enumerate() {
        let k = plan.step_kind(i);
        match by_kind.iter_mut().find(|(n, _)| *n == k) {
            Some(e) => e.1 += s,
            None => by_kind.push((k, *s)),
        }
    }
    println!(
        "{:.1} images/s; {:.2} GFLOP/s",
        (runs * batch) as f64 / total,
        2.0 * plan.dense_macs() as f64 * (runs * batch) as f64 / total / 1e9
    );
    for (k, s) in by_kind {
        println!("{k:>20} {:6.1} %", 100.0 * s / total);
    }
    // `STEPS=1`: every step other than a convolution, with its time and memory order.
    if std::env::var("STEPS").is_ok_and(|v| v == "1") {
        for (i, s) in secs.iter().enumerate() {
            if plan.conv_at(i).is_none() {
                let order = if plan.output_layout(i).is_pixel_major() {
                    "NHWC"
                } else {
                    "NCHW"
                };
                let ms = 1e3 * s / runs as f64;
                println!(
                    "{:>40} {:>18} {ms:8.3} ms {order}",
                    plan.step_name(i),
                    plan.step_kind(i)
                );
            }
        }
    }
    let macs = plan.per_conv_macs();
    for (i, m) in macs.iter().take(usize::MAX) {
        let (c, h, w) = plan.conv_at(*i).unwrap();
        println!(
            "{:>40} {:?}x{}x{} {:>7.1} GFLOP/s {:>8.3} ms {}",
            plan.step_name(*i),
            (c.params.c_in, c.params.c_out, c.params.kh),
            h,
            w,
            2.0 * *m as f64 * (runs * batch) as f64 / secs[*i] / 1e9,
            1e3 * secs[*i] / runs as f64,
            if plan.output_layout(*i).is_pixel_major() {
                "NHWC"
            } else {
                "NCHW"
            }
        );
    }
    Ok(())
}
