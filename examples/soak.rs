//! Soak: 20,000 batches in one process, alternating dense and HASTE and switching L on the
//! same loaded plan, with the resident memory printed every 1,000 batches. After a warm-up of
//! 2,000 batches it must stay flat: the run fails if it grows by more than 1 %.
//!
//! `cargo run --release --example soak [-- BATCHES [MODEL [DATA]]]` (default 20000, ResNet-20
//! on the first CIFAR-10 test images, 2 threads, batch 8).
use haste::haste::HasteConfig;
use haste::{open_dataset, CompressOptions, Compression, Model, ModelCard, PlanOptions};
use std::path::PathBuf;
use std::time::Instant;

const BATCH: usize = 8;
const WARM_UP: usize = 2_000;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() -> haste::Result<()> {
    let mut args = std::env::args().skip(1);
    let batches: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let model_path = args.next().map_or_else(
        || PathBuf::from("../shared/models/resnet20-cifar10.onnx"),
        PathBuf::from,
    );
    let data_path = args.next().map_or_else(
        || PathBuf::from("../shared/data/cifar10/test_batch_jpeg.bin"),
        PathBuf::from,
    );
    let model = Model::load(&model_path)?;
    let card = ModelCard::beside_model(&model_path)?
        .ok_or_else(|| haste::Error::InvalidArgument("no model card beside the model".into()))?;
    let data = open_dataset(&data_path, &card.preprocess, None)?;
    let per: usize = model.image_shape.iter().product();
    let mut x = vec![0.0f32; BATCH * per];
    for (i, chunk) in x.chunks_mut(per).enumerate() {
        data.load(i, chunk)?;
    }
    let mut plan = model.plan(PlanOptions {
        threads: 2,
        max_batch: BATCH,
    })?;
    let options = |l: usize| CompressOptions {
        config: HasteConfig {
            hyperplanes: l,
            ..HasteConfig::default()
        },
        cost_aware: false,
        ..CompressOptions::default()
    };
    let (t, mut warm) = (Instant::now(), 0);
    println!("batch  seconds  mode       RSS MiB");
    for i in 0..batches {
        // Dense, then HASTE at L = 8, 12, 16, 20 in turn, switched on the same plan.
        let mode = i % 5;
        if mode == 0 {
            plan.reset_conv_kernels();
        } else {
            Compression::apply(&mut plan, &options(4 + 4 * mode))?;
        }
        plan.run(&x, BATCH)?;
        if i + 1 == WARM_UP {
            warm = rss_bytes();
        }
        if (i + 1) % 1_000 == 0 {
            let name = if mode == 0 {
                "dense".to_string()
            } else {
                format!("L = {}", 4 + 4 * mode)
            };
            let mib = rss_bytes() as f64 / (1 << 20) as f64;
            println!(
                "{:>6} {:>8.1}  {name:<8} {mib:>8.1}",
                i + 1,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let end = rss_bytes();
    if warm > 0 {
        let growth = 100.0 * (end as f64 / warm as f64 - 1.0);
        println!("growth after the warm-up: {growth:+.2} % ({warm} -> {end} bytes)");
        if growth > 1.0 {
            eprintln!("soak: resident memory grew by {growth:.2} % (limit 1 %)");
            std::process::exit(1);
        }
    }
    Ok(())
}
