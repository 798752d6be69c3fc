//! Runs a model on a raw little-endian f32 NCHW file (one image) and prints max |diff| against
//! a raw f32 logits file: a debugging aid for comparing with another engine.
//!
//!     cargo run --release --example raw_run -- MODEL.onnx X.f32 LOGITS.f32 [BATCH] [THREADS]
fn main() -> Result<(), haste::Error> {
    let a: Vec<String> = std::env::args().collect();
    let read = |p: &str| -> Vec<f32> {
        std::fs::read(p)
            .unwrap_or_default()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let model = haste::Model::load(a[1].as_ref())?;
    let x = read(&a[2]);
    let want = read(&a[3]);
    let arg = |i: usize| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(1);
    let (batch, threads) = (arg(4), arg(5));
    let mut plan = model.plan(haste::PlanOptions {
        threads,
        max_batch: batch,
    })?;
    let (_, y) = plan.run(&x, batch)?;
    let d = y
        .iter()
        .zip(&want)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    println!("max |diff| = {d}");
    Ok(())
}
