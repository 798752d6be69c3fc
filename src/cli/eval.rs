//! `haste eval`: accuracy, FLOPs and speed of a model on a dataset.

use super::args::EvalArgs;
use super::output::{flops, progress_bar};
use crate::datasets::open_dataset;
use crate::error::Result;
use crate::eval::{evaluate, EvalOptions};
use crate::{Model, PlanOptions};

pub fn run(a: EvalArgs) -> Result<()> {
    a.data.validate()?;
    let model = Model::load(&a.model.model)?;
    let (pre, labels) = a.model.resolve(&model.image_shape)?;
    let data = open_dataset(&a.data.data, &pre, labels.as_deref())?;
    let mut plan = model.plan(PlanOptions { threads: a.data.threads, max_batch: a.data.batch })?;
    let total = a.data.limit.map_or(data.len(), |l| l.min(data.len()));
    let bar = progress_bar(total, "dense");
    let report = evaluate(
        &mut plan,
        data.as_ref(),
        EvalOptions { limit: a.data.limit, batch: a.data.batch },
        &mut |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let dense_flops = plan.dense_macs();
    if a.data.json {
        let j = serde_json::json!({
            "model": a.model.model.display().to_string(),
            "data": a.data.data.display().to_string(),
            "images": report.images,
            "top1": report.top1,
            "top5": report.top5,
            "dense_flops": dense_flops,
            "seconds": report.seconds,
            "images_per_second": report.images_per_second(),
            "compute_seconds": report.compute_seconds,
            "compute_images_per_second": report.compute_images_per_second(),
            "batch": a.data.batch,
            "threads": plan.threads(),
        });
        println!("{j}");
    } else {
        println!("model        {}", a.model.model.display());
        println!("data         {} ({} images)", a.data.data.display(), report.images);
        println!("top-1        {:.2} %", report.top1);
        println!("top-5        {:.2} %", report.top5);
        println!("FLOPs/image  {} (multiply-accumulates of Conv, Gemm, MatMul)", flops(dense_flops));
        println!(
            "speed        {:.1} images/s end to end, {:.1} images/s in the model ({} threads, batch {})",
            report.images_per_second(),
            report.compute_images_per_second(),
            plan.threads(),
            a.data.batch
        );
    }
    Ok(())
}
