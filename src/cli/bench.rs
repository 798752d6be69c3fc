//! `haste bench`: wall-clock of the dense and the HASTE network on the same batch, median and
//! spread of several timed runs after a warm-up, and peak memory.

use super::args::BenchArgs;
use crate::compress::{flops_summary, Compression, ConvLayerReport, KernelSwitch};
use crate::datasets::load_batch_skipping;
use crate::datasets::open_dataset_with;
use crate::error::{Error, Result};
use crate::kernels::isa::{Isa, ISA_VARIABLE};
use crate::plan::{format_bytes, MemoryPlan};
use crate::{Model, Plan, PlanOptions};
use serde_json::json;
use std::time::Instant;

/// Median, min and max of a set of timings (seconds).
#[derive(Debug, Clone, Copy)]
struct Timing {
    median: f64,
    min: f64,
    max: f64,
}

fn timing(mut v: Vec<f64>) -> Timing {
    v.sort_by(f64::total_cmp);
    Timing {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// Runs `plan` on `input` `runs` times after warming up: at least one run and 0.3 s, so
/// the cores have left their idle clock (a batch-1 run of a few ms otherwise times the
/// ramp-up, not the engine).
fn time_runs(plan: &mut Plan, input: &[f32], n: usize, runs: usize) -> Result<Timing> {
    let warm = Instant::now();
    plan.run(input, n)?;
    while warm.elapsed().as_secs_f64() < 0.3 {
        plan.run(input, n)?;
    }
    let mut secs = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        plan.run(input, n)?;
        secs.push(t.elapsed().as_secs_f64());
    }
    Ok(timing(secs))
}

/// Times the dense network and the compressed one `plan` holds in turns, `runs` each after
/// warming both up: one dense run, then one compressed run, and so on. On a shared machine a
/// neighbour's burst then slows both sides alike; timing one side after the other let it
/// fall on one side only (ratios swung by 30 % between identical runs). Returns the dense
/// timing, the compressed one, and the median of the pairs' ratios (dense over compressed).
fn time_in_turns(
    plan: &mut Plan,
    input: &[f32],
    n: usize,
    runs: usize,
) -> Result<(Timing, Timing, f64)> {
    let switch = KernelSwitch::of(plan);
    let side = |plan: &mut Plan, dense: bool| -> Result<f64> {
        if dense {
            switch.to_dense(plan);
        } else {
            switch.to_compressed(plan)?;
        }
        let t = Instant::now();
        plan.run(input, n)?;
        Ok(t.elapsed().as_secs_f64())
    };
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < 0.6 {
        side(plan, true)?;
        side(plan, false)?;
    }
    let (mut dense, mut haste, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let d = side(plan, true)?;
        let h = side(plan, false)?;
        ratios.push(d / h);
        dense.push(d);
        haste.push(h);
    }
    let ratio = timing(ratios).median;
    Ok((timing(dense), timing(haste), ratio))
}

/// Peak resident memory of this process in bytes (Linux), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// Resident memory of this process in bytes now (Linux), if known.
fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// A `kB` field of `/proc/self/status` in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.batch == 0 || a.runs == 0 {
        return Err(Error::InvalidArgument(
            "--batch and --runs must be at least 1".into(),
        ));
    }
    let compress = a.hyperplanes.map(|l| a.knobs.options(l)).transpose()?;
    let policy = a
        .policy
        .as_deref()
        .map(|p| crate::compress::Policy::load(p, &a.model.model))
        .transpose()?;
    // What the process holds before the model: the program itself.
    let baseline = rss_bytes().unwrap_or(0);
    let model = Model::load(&a.model.model)?;
    let mut plan = model.plan(PlanOptions {
        threads: a.threads,
        max_batch: a.batch,
    })?;
    let per: usize = model.image_shape.iter().product();
    let mut input = vec![0.0f32; a.batch * per];
    let mut skipped: Vec<String> = Vec::new();
    let mut data_bytes = 0;
    let source = match &a.data {
        Some(d) => {
            let (pre, labels) = a.model.resolve(&model.image_shape)?;
            let data = open_dataset_with(d, &pre, labels.as_deref(), a.skip_bad)?;
            data_bytes = data.memory_bytes();
            // Fill the batch with the first loadable images (with --skip-bad, bad ones are
            // passed over and named).
            let mut have = 0;
            let mut next = 0;
            while have < a.batch && next < data.len() {
                let n = (a.batch - have).min(data.len() - next);
                let (loaded, bad) = plan.thread_pool().install(|| {
                    load_batch_skipping(
                        data.as_ref(),
                        next,
                        n,
                        per,
                        &mut input[have * per..],
                        a.skip_bad,
                    )
                })?;
                have += loaded.len();
                next += n;
                skipped.extend(bad);
            }
            if have < a.batch {
                return Err(Error::dataset(
                    d,
                    format!(
                        "holds {have} loadable images, fewer than --batch {}",
                        a.batch
                    ),
                ));
            }
            d.display().to_string()
        }
        None => {
            synthetic_images(&mut input);
            "synthetic (smooth random images; give --data for representative HASTE timings)"
                .to_string()
        }
    };
    // Buffers are allocated on the first run: the dense network's memory.
    plan.run(&input, a.batch)?;
    let mut memory = plan.memory();
    let compression = match (&compress, &policy) {
        (Some(c), _) => {
            let mut compression = Compression::apply(&mut plan, c)?;
            // Every eligible layer holds a HASTE kernel until the first batch chooses.
            memory = plan.memory().max(memory);
            // The same first-batch choice as eval.
            compression.choose_layers_on(&mut plan, &input, a.batch)?;
            Some(compression)
        }
        (None, Some(p)) => {
            let compression = Compression::apply_policy(&mut plan, p)?;
            memory = plan.memory().max(memory);
            Some(compression)
        }
        (None, None) => None,
    };
    let (dense, haste) = match compression {
        None => (time_runs(&mut plan, &input, a.batch, a.runs)?, None),
        Some(mut compression) => {
            let (dense, t, paired) = time_in_turns(&mut plan, &input, a.batch, a.runs)?;
            memory = plan.memory().max(memory);
            let mut layers = compression.reports(&plan);
            let flops = flops_summary(&plan, &layers);
            if a.layers {
                compression.time_layers(&mut plan, &input, a.batch, a.runs)?;
                if a.steps {
                    compression.profile_steps(&mut plan, &input, a.batch, a.runs)?;
                } else {
                    // One more pass for the statistics the timing runs cleared.
                    plan.run(&input, a.batch)?;
                }
                layers = compression.reports(&plan);
            }
            plan.reset_conv_kernels();
            (dense, Some((t, paired, flops, layers)))
        }
    };
    let ips = |t: &Timing| a.batch as f64 / t.median;
    let peak = peak_rss_bytes();
    let input_bytes = 4 * input.len() as u64 + data_bytes;
    let predicted = baseline + model.weight_bytes() + memory.total() + input_bytes;
    if a.json {
        let mut j = json!({
            "model": a.model.model.display().to_string(), "input": source, "batch": a.batch,
            "threads": plan.threads(), "runs": a.runs, "isa": Isa::current().name(),
            "steps": plan.num_steps(), "image_steps": plan.image_steps(a.batch),
            "dense_seconds_median": dense.median, "dense_seconds_min": dense.min, "dense_seconds_max": dense.max,
            "dense_images_per_second": ips(&dense), "dense_flops": plan.dense_macs(),
            "peak_rss_bytes": peak, "predicted_peak_bytes": predicted, "plan_memory": memory,
            "model_weight_bytes": model.weight_bytes(), "process_baseline_bytes": baseline,
            "skipped_images": skipped,
        });
        if let (Some((t, paired, f, layers)), Some(o)) = (&haste, j.as_object_mut()) {
            o.insert("hyperplanes".into(), json!(a.hyperplanes));
            o.insert(
                "policy".into(),
                json!(a.policy.as_ref().map(|p| p.display().to_string())),
            );
            o.insert("haste_seconds_median".into(), json!(t.median));
            o.insert("haste_seconds_min".into(), json!(t.min));
            o.insert("haste_seconds_max".into(), json!(t.max));
            o.insert("haste_images_per_second".into(), json!(ips(t)));
            o.insert("speedup".into(), json!(dense.median / t.median));
            o.insert("speedup_paired".into(), json!(paired));
            o.insert("flops_reduction".into(), json!(f.reduction()));
            o.insert(
                "speedup_implied_by_flops".into(),
                json!(1.0 / (1.0 - f.reduction() / 100.0)),
            );
            if a.layers {
                o.insert("layers".into(), layers_json(layers));
                if let Some(m) = ModelCheck::of(layers) {
                    o.insert("model_check".into(), json!(m));
                }
            }
            if a.steps {
                o.insert("steps".into(), super::bench_steps::steps_json(layers));
            }
        }
        super::emit_json(j);
        return Ok(());
    }
    println!("model   {} (input: {source})", a.model.model.display());
    println!(
        "setup   batch {}, {} threads, {} timed runs after a warm-up (dense and HASTE in turns), kernels: {} ({}={})",
        a.batch,
        plan.threads(),
        a.runs,
        Isa::current(),
        ISA_VARIABLE,
        std::env::var(ISA_VARIABLE).unwrap_or_else(|_| "unset: the best this CPU has".into()),
    );
    println!(
        "order   {}",
        run_order(plan.image_steps(a.batch), plan.num_steps())
    );
    let line = |name: &str, t: &Timing| {
        println!(
            "{name:<7} median {:>9.2} ms  [{:.2} .. {:.2}]  {:>9.1} images/s",
            t.median * 1e3,
            t.min * 1e3,
            t.max * 1e3,
            ips(t)
        )
    };
    line("dense", &dense);
    if let Some((t, paired, f, layers)) = &haste {
        line("HASTE", t);
        println!(
            "ratio   {:.2}x faster (median of {} runs timed in turns with dense; medians {:.2}x; FLOPs reduction {:.1} % implies {:.2}x)",
            paired,
            a.runs,
            dense.median / t.median,
            f.reduction(),
            1.0 / (1.0 - f.reduction() / 100.0)
        );
        if a.layers {
            print_layers(layers);
        }
        if a.steps {
            super::bench_steps::print_steps(layers);
        }
    }
    if let Some(p) = peak {
        println!(
            "memory  peak RSS {}, predicted {}: program {}, model {}, plan {} ({}), data {}",
            format_bytes(p),
            format_bytes(predicted),
            format_bytes(baseline),
            format_bytes(model.weight_bytes()),
            format_bytes(memory.total()),
            memory_parts(&memory),
            format_bytes(input_bytes)
        );
    }
    if !skipped.is_empty() {
        println!(
            "warning: skipped {} unreadable image(s): {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
    Ok(())
}

/// Deterministic smooth pseudo-images (sums of low-frequency waves per channel).
fn synthetic_images(out: &mut [f32]) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let (a, b, c) = (next(), next(), next());
    for (i, v) in out.iter_mut().enumerate() {
        let x = i as f32;
        *v = (x * 0.013 * (1.0 + a)).sin() + (x * 0.0007 * (1.0 + b)).cos() * 0.5 + c - 0.5;
    }
}

/// Per-layer wall clock of the HASTE layers against their dense kernel, with the FLOPs
/// reduction (overhead counted) that each layer's time could at best reflect, and the
/// speedup haste's time model predicts from the channels the layer merged (the model that
/// chooses the layers by default; a large gap says it needs refitting on this machine).
fn print_layers(layers: &[ConvLayerReport]) {
    if layers.iter().all(|l| l.timing.is_none()) {
        println!(
            "\nlayers  none runs HASTE: {}",
            super::eval::layer_summary(layers)
        );
        return;
    }
    println!(
        "\n{:<44} {:>16} {:>4} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9}",
        "HASTE layer",
        "c_in>c_out @hw",
        "tile",
        "dense ms",
        "HASTE ms",
        "speedup",
        "FLOPs -%",
        "implied",
        "predicted"
    );
    for l in layers {
        let Some((h, d)) = l.timing else { continue };
        let red = l.reduction();
        println!(
            "{:<44} {:>16} {:>4} {:>10.3} {:>10.3} {:>7.2}x {:>9.1} {:>8.2}x {:>8.2}x",
            truncate(&l.name, 44),
            format!("{}>{} @{}", l.c_in, l.c_out, l.input_hw.0),
            l.tile.map_or(String::new(), |t| t.to_string()),
            d * 1e3,
            h * 1e3,
            d / h,
            red,
            1.0 / (1.0 - red / 100.0),
            1.0 / l.predicted_time_ratio.unwrap_or(f64::NAN)
        );
    }
    if let Some(m) = ModelCheck::of(layers) {
        println!(
            "model   predicted time within 10 % of the measured on {} of {} layers (mean error {:.1} %; far off: refit it, README \"Which layers get HASTE\")",
            m.within,
            m.layers,
            100.0 * m.mean_error
        );
    }
}

/// How close the time model came on the timed layers: how many of them had a predicted
/// time within 10 % of the measured one, and the mean relative error.
#[derive(Debug, serde::Serialize)]
struct ModelCheck {
    layers: usize,
    #[serde(rename = "within_10_percent")]
    within: usize,
    mean_error: f64,
}

impl ModelCheck {
    /// `None` without a timed layer with a prediction.
    fn of(layers: &[ConvLayerReport]) -> Option<ModelCheck> {
        let errors: Vec<f64> = layers
            .iter()
            .filter_map(|l| {
                let (h, d) = l.timing?;
                Some(l.predicted_time_ratio? / (h / d) - 1.0)
            })
            .collect();
        if errors.is_empty() {
            return None;
        }
        Some(ModelCheck {
            layers: errors.len(),
            within: errors.iter().filter(|e| e.abs() <= 0.1).count(),
            mean_error: errors.iter().map(|e| e.abs()).sum::<f64>() / errors.len() as f64,
        })
    }
}

fn layers_json(layers: &[ConvLayerReport]) -> serde_json::Value {
    let rows: Vec<_> = layers
        .iter()
        .filter_map(|l| {
            let (h, d) = l.timing?;
            Some(json!({
                "name": l.name, "c_in": l.c_in, "c_out": l.c_out, "kernel": [l.kernel.0, l.kernel.1],
                "input_hw": [l.input_hw.0, l.input_hw.1],
                "dense_seconds": d, "haste_seconds": h, "speedup": d / h,
                "flops_reduction": l.reduction(), "tile": l.tile,
                "predicted_time_ratio": l.predicted_time_ratio, "cost_terms": l.cost_terms,
            }))
        })
        .collect();
    json!(rows)
}

/// `s` cut to its first `n - 1` characters and an ellipsis when longer than `n`: a fused
/// node's name starts with its convolution's (`conv+bn+add+relu`), which names the layer.
pub(super) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let head: String = s.chars().take(n.saturating_sub(1)).collect();
    format!("{head}…")
}

/// The parts of a plan's memory, for people.
fn memory_parts(m: &MemoryPlan) -> String {
    format!(
        "weights {}, batch {}, per-thread {}, scratch {}",
        format_bytes(m.weights),
        format_bytes(m.activations),
        format_bytes(m.workspaces),
        format_bytes(m.scratch),
    )
}

/// How a batch runs, for the `order` line: image by image (each thread its own images) up
/// to step `image_steps` of `steps`, layer by layer from there.
fn run_order(image_steps: usize, steps: usize) -> String {
    match image_steps {
        0 => "every step layer by layer, each image over every thread".into(),
        k if k >= steps => "every step image by image, each thread its own images".into(),
        k => format!(
            "steps 1-{k} of {steps} image by image (each thread its own images), {}-{steps} \
             layer by layer (their weights outweigh their activations; \
             HASTE_IMAGE_MODE=whole runs them image by image too)",
            k + 1
        ),
    }
}
