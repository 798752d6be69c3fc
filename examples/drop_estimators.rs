//! Label-free drop estimators against the measured drop, for uniform HASTE settings (one L
//! on every layer from the second convolution):
//! `[ENSEMBLE=1] cargo run --release --example drop_estimators -- MODEL DATA SKIP N [L,L,...]`.
//! A research tool for the calibration: labels are read only to score the estimators.
//! Columns, each the mean over images of an expected change in correct answers (points):
//! `dense-b` uses the dense softmax as the label belief (what the calibration predicts
//! with, before its ensemble), `mix-b` the mean of dense and compressed softmax, `DoC` the
//! difference of mean confidences (Guillory et al. 2021), `T2-b` the dense softmax at
//! temperature 2, `ens-b` (with ENSEMBLE=1) the calibration's ensemble of single-layer runs;
//! the last lines use ensembles of the uniform settings themselves. Findings: BENCHMARKS.md.
use haste::calibration::score::{argmax, softmax_rows};
use haste::compress::{
    magnitude_step, CompressOptions, Compression, LayerPolicy, MagnitudeMode, Policy, POLICY_FORMAT,
};
use haste::datasets::{load_batch, open_dataset, ModelCard};

fn run_all(plan: &mut haste::Plan, x: &[f32], n: usize) -> Vec<f32> {
    let per = x.len() / n;
    let mut out = Vec::new();
    for s in (0..n).step_by(plan.max_batch()) {
        let m = plan.max_batch().min(n - s);
        out.extend_from_slice(plan.run(&x[s * per..(s + m) * per], m).unwrap().1);
    }
    out
}

fn one_layer(plan: &haste::Plan, steps: &[usize], k: usize, l: usize) -> Policy {
    Policy {
        format: POLICY_FORMAT.into(),
        model: String::new(),
        model_sha256: String::new(),
        seed: 0,
        sparsity: haste::HasteConfig::default().sparsity,
        tile: 4,
        calibration: None,
        layers: steps
            .iter()
            .enumerate()
            .map(|(j, &s)| LayerPolicy {
                name: plan.step_name(s).to_string(),
                kernel: if j == k { "haste" } else { "dense" }.into(),
                hyperplanes: (j == k).then_some(l),
                tile: None,
                magnitude_bins: if j == k {
                    magnitude_step(plan, s, MagnitudeMode::SignedInputs(0.5))
                } else {
                    None
                },
                dense_flops: 0,
                flops: 0,
            })
            .collect(),
    }
}

/// Logits with one L and seed on every convolution from the second, then the plan dense again.
fn run_uniform(plan: &mut haste::Plan, x: &[f32], n: usize, l: usize, seed: u64) -> Vec<f32> {
    let mut o = CompressOptions::default();
    o.config.hyperplanes = l;
    o.config.seed = seed;
    o.start_layer = 1;
    o.cost_aware = false;
    Compression::apply(plan, &o).unwrap();
    let logits = run_all(plan, x, n);
    plan.reset_conv_kernels();
    logits
}

/// Each setting's predicted drop (points) under the label belief `b`.
fn print_drops(p: &[f64], b: &[f64], settings: &[(usize, Vec<f64>)], classes: usize) {
    let n = p.len() / classes;
    for (l, q) in settings {
        let mut e = 0.0;
        for ((pi, qi), bi) in p
            .chunks_exact(classes)
            .zip(q.chunks_exact(classes))
            .zip(b.chunks_exact(classes))
        {
            e += bi[argmax(pi)] - bi[argmax(qi)];
        }
        print!(" L{l}={:.2}", 100.0 * e / n as f64);
    }
    println!();
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let model = haste::Model::load(a[1].as_ref()).unwrap();
    let card = ModelCard::beside_model(a[1].as_ref()).unwrap().unwrap();
    let labels = card.labels.clone();
    let data = open_dataset(a[2].as_ref(), &card.preprocess, labels.as_deref()).unwrap();
    let skip: usize = a[3].parse().unwrap();
    let n: usize = a[4].parse::<usize>().unwrap().min(data.len() - skip);
    let grid: Vec<usize> = a
        .get(5)
        .map(|s| s.split(',').map(|v| v.parse().unwrap()).collect())
        .unwrap_or(vec![8, 10, 12, 14, 16, 20, 24]);
    let per: usize = model.image_shape.iter().product();
    let mut x = vec![0.0f32; n * per];
    load_batch(data.as_ref(), skip, n, per, &mut x).unwrap();
    let y: Vec<usize> = (skip..skip + n).map(|i| data.label(i)).collect();
    let mut plan = model
        .plan(haste::PlanOptions {
            threads: 0,
            max_batch: 64,
        })
        .unwrap();
    let dl = run_all(&mut plan, &x, n);
    let classes = dl.len() / n;
    let p = softmax_rows(&dl, classes);
    // The calibration's belief: the mean softmax of dense and every single-layer run.
    let convs = plan.num_convs();
    let mut ens = p.clone();
    let mut runs = 1.0;
    if std::env::var("ENSEMBLE").is_ok() {
        let steps: Vec<usize> = plan.per_conv_macs().iter().map(|&(s, _)| s).collect();
        for k in 1..convs {
            for l in [6usize, 8, 10, 12, 16, 20, 24, 32] {
                let policy = one_layer(&plan, &steps, k, l);
                if Compression::apply_policy(&mut plan, &policy).is_err() {
                    continue;
                }
                let cl = run_all(&mut plan, &x, n);
                plan.reset_conv_kernels();
                ens.iter_mut()
                    .zip(softmax_rows(&cl, classes))
                    .for_each(|(e, q)| *e += q);
                runs += 1.0;
            }
        }
    }
    ens.iter_mut().for_each(|e| *e /= runs);
    let tacc = {
        let (mut conf, mut acc) = (0.0, 0.0);
        for i in 0..n {
            let pi = &p[i * classes..][..classes];
            conf += pi[argmax(pi)];
            acc += f64::from(u8::from(argmax(pi) == y[i]));
        }
        println!(
            "dense: mean confidence {:.3}, accuracy {:.3}",
            conf / n as f64,
            acc / n as f64
        );
        // The temperature at which the dense network's mean confidence equals its accuracy.
        let target = acc / n as f64;
        let tempered = |t: f64| -> Vec<f64> {
            let z: Vec<f32> = dl.iter().map(|&v| (v as f64 / t) as f32).collect();
            softmax_rows(&z, classes)
        };
        let (mut lo, mut hi) = (0.05f64, 20.0f64);
        for _ in 0..60 {
            let t = (lo * hi).sqrt();
            let q = tempered(t);
            let c: f64 = q.chunks_exact(classes).map(|r| r[argmax(r)]).sum::<f64>() / n as f64;
            if c > target {
                lo = t
            } else {
                hi = t
            }
        }
        let t = (lo * hi).sqrt();
        println!("temperature matching accuracy: {t:.3}");
        tempered(t)
    };
    println!("L    measured  dense-b  mix-b   DoC   T2-b  disagree ens-b | flipped: dense acc, comp acc, p[d], p[c], q[d], q[c]");
    let mut all_q: Vec<(usize, Vec<f64>)> = Vec::new();
    // POLICY=a.json,b.json: score those policies (labelled 0, 1, ...) instead of uniform L.
    let policies: Vec<Policy> = std::env::var("POLICY")
        .map(|v| {
            v.split(',')
                .map(|f| Policy::load(f.as_ref(), a[1].as_ref()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    let grid = if policies.is_empty() {
        grid
    } else {
        (0..policies.len()).collect()
    };
    for &l in &grid {
        {
            let logits = match policies.get(l) {
                Some(policy) => {
                    Compression::apply_policy(&mut plan, policy).unwrap();
                    let y = run_all(&mut plan, &x, n);
                    plan.reset_conv_kernels();
                    y
                }
                None => run_uniform(&mut plan, &x, n, l, 0),
            };
            let q = softmax_rows(&logits, classes);
            all_q.push((l, q.clone()));
            let t2 = |v: &[f64]| {
                let s: Vec<f64> = v.iter().map(|p| p.sqrt()).collect();
                let z: f64 = s.iter().sum();
                s.into_iter().map(|v| v / z).collect::<Vec<_>>()
            };
            let (mut meas, mut eb, mut mix, mut doc, mut t2b, mut dis, mut en) =
                (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
            let mut fl = [0.0f64; 6];
            for i in 0..n {
                let (pi, qi) = (&p[i * classes..][..classes], &q[i * classes..][..classes]);
                let (d, c) = (argmax(pi), argmax(qi));
                meas += f64::from(u8::from(d == y[i])) - f64::from(u8::from(c == y[i]));
                eb += pi[d] - pi[c];
                mix += 0.5 * (pi[d] + qi[d] - pi[c] - qi[c]);
                doc += pi[d] - qi[c];
                let tp = t2(pi);
                t2b += tp[d] - tp[c];
                dis += f64::from(u8::from(d != c));
                if d != c {
                    fl[0] += f64::from(u8::from(d == y[i]));
                    fl[1] += f64::from(u8::from(c == y[i]));
                    fl[2] += pi[d];
                    fl[3] += pi[c];
                    fl[4] += qi[d];
                    fl[5] += qi[c];
                }
                let e = &ens[i * classes..][..classes];
                en += e[d] - e[c];
            }
            let k = 100.0 / n as f64;
            let nf = dis.max(1.0);
            println!(
                "{l:<4} {:8.2} {:8.2} {:6.2} {:6.2} {:6.2} {:6.2} {:6.2} | {:.3} {:.3} {:.3} {:.3} {:.3} {:.3}",
                meas * k,
                eb * k,
                mix * k,
                doc * k,
                t2b * k,
                dis * k,
                en * k,
                fl[0] / nf,
                fl[1] / nf,
                fl[2] / nf,
                fl[3] / nf,
                fl[4] / nf,
                fl[5] / nf
            );
        }
    }
    // The dense network's own test-time ensemble: mirrored input (no compression involved).
    {
        let w = model.image_shape[2];
        let mut xf = x.clone();
        for row in xf.chunks_exact_mut(w) {
            row.reverse();
        }
        let pf = softmax_rows(&run_all(&mut plan, &xf, n), classes);
        let b: Vec<f64> = p.iter().zip(&pf).map(|(a, b)| 0.5 * (a + b)).collect();
        print!("mirror ensemble:");
        print_drops(&p, &b, &all_q, classes);
        let mut sharp = b.clone();
        for (s, (a, f)) in sharp.iter_mut().zip(p.iter().zip(&pf)) {
            *s = (a * f).sqrt();
        }
        for row in sharp.chunks_exact_mut(classes) {
            let z: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= z);
        }
        print!("mirror geometric:");
        print_drops(&p, &sharp, &all_q, classes);
    }
    print!("dense belief at the accuracy-matching temperature (labels used):");
    print_drops(&p, &tacc, &all_q, classes);
    // Independent perturbations: the same settings with other seeds as the members.
    if let Ok(seeds) = std::env::var("SEEDS") {
        let mut b = p.clone();
        let mut count = 1.0;
        for seed in seeds.split(',').map(|v| v.parse::<u64>().unwrap()) {
            for &l in &grid {
                let cl = run_uniform(&mut plan, &x, n, l, seed);
                b.iter_mut()
                    .zip(softmax_rows(&cl, classes))
                    .for_each(|(b, q)| *b += q);
                count += 1.0;
            }
        }
        b.iter_mut().for_each(|v| *v /= count);
        print!("other-seed ensemble (seeds {seeds}):");
        print_drops(&p, &b, &all_q, classes);
    }
    for min_l in [0usize, 12, 16] {
        let members: Vec<&Vec<f64>> = all_q
            .iter()
            .filter(|(l, _)| *l >= min_l)
            .map(|(_, q)| q)
            .collect();
        let mut b = p.clone();
        for q in &members {
            b.iter_mut().zip(q.iter()).for_each(|(b, q)| *b += q);
        }
        b.iter_mut().for_each(|v| *v /= (members.len() + 1) as f64);
        print!("uniform-ensemble (L >= {min_l}):");
        print_drops(&p, &b, &all_q, classes);
    }
}
