//! Hostile files, odd environments and shared use: devices, FIFOs, oversized and looping
//! inputs are refused before they are read; resource requests are bounded; one loaded model
//! serves several threads and thread pools with the same logits; an interrupted sweep leaves
//! whole files or none.

mod common;

use common::*;
use haste::{Model, Plan, PlanOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn temp_dir(name: &str) -> TempDir {
    TempDir::new("reliab", name)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `haste eval` with `args` must fail within `secs`, with exit code 2 and one stderr line
/// holding every one of `needles`.
fn assert_eval_refused(args: &[&str], needles: &[&str], secs: u64) {
    let mut child = haste_bin()
        .arg("eval")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("haste starts");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("haste eval {args:?} still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: '{n}' missing from: {err}");
    }
}

#[test]
fn devices_fifos_folders_and_huge_files_are_refused_before_reading() {
    let dir = temp_dir("files");
    let data = cifar_first20();
    let resnet = model("resnet20-cifar10");
    let fifo = dir.join("model.onnx");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // A sparse file beyond protobuf's 2 GiB: no disk used, and never read.
    let huge = dir.join("huge.onnx");
    let f = std::fs::File::create(&huge).expect("create");
    f.set_len(3 << 30).expect("sparse length");
    let d = path_str(&data);
    for (m, needle) in [
        ("/dev/zero", "character device"),
        (path_str(&fifo), "FIFO"),
        (path_str(&dir), "directory"),
        (path_str(&huge), "larger than haste's limit"),
    ] {
        assert_eval_refused(&["--model", m, "--data", d], &[m, needle], 20);
    }
    let r = path_str(&resnet);
    assert_eval_refused(
        &["--model", r, "--data", "/dev/zero"],
        &["character device"],
        20,
    );
    let f = path_str(&fifo);
    assert_eval_refused(&["--model", r, "--data", f], &["FIFO"], 20);
    assert_eval_refused(&["--model", r, "--data", d, "--labels", f], &["FIFO"], 20);
    assert_eval_refused(
        &["--model", r, "--data", d, "--policy", "/dev/zero"],
        &["device"],
        20,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An ImageFolder of four classes of one real image each, and its root.
fn image_folder(name: &str) -> TempDir {
    let root = temp_dir(name);
    let src = imagenet_val();
    let mut classes: Vec<PathBuf> = std::fs::read_dir(&src)
        .expect("imagenet val")
        .map(|e| e.expect("entry").path())
        .collect();
    classes.sort();
    for class in &classes[..4] {
        let dst = root.join(class.file_name().expect("class name"));
        std::fs::create_dir_all(&dst).expect("class dir");
        let mut imgs: Vec<PathBuf> = std::fs::read_dir(class)
            .expect("class")
            .map(|e| e.expect("entry").path())
            .collect();
        imgs.sort();
        for img in &imgs[..1] {
            std::fs::copy(img, dst.join(img.file_name().expect("name"))).expect("copy");
        }
    }
    root
}

#[test]
fn symbolic_link_cycles_and_escapes_are_named_or_skipped() {
    let tiny = model("tiny-darknet-imagenet");
    let m = path_str(&tiny);
    for (name, target) in [("cycle", None), ("escape", Some("/"))] {
        let root = image_folder(name);
        let class = std::fs::read_dir(&root)
            .expect("root")
            .map(|e| e.expect("entry").path())
            .min()
            .expect("a class");
        let link = class.join("more");
        let target = target.map_or(root.to_path_buf(), PathBuf::from);
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let r = path_str(&root);
        let needle = if name == "cycle" {
            "cycle"
        } else {
            "outside the image folder"
        };
        assert_eval_refused(&["--model", m, "--data", r], &[path_str(&link), needle], 60);
        // With --skip-bad the link is passed by and the four images are evaluated.
        let j = haste_json("eval", &tiny, &root, &["--skip-bad"]);
        assert_eq!(j["images"], 4, "{j}");
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn thread_and_batch_requests_are_bounded() {
    let r = model("resnet20-cifar10");
    let d = cifar_first20();
    let (r, d) = (path_str(&r), path_str(&d));
    assert_eval_refused(
        &["--model", r, "--data", d, "--threads", "100000"],
        &["100000 threads", "maximum"],
        20,
    );
    let m = Model::load(&model("resnet20-cifar10")).expect("model");
    let max = haste::plan::max_threads();
    assert!((1..=haste::plan::MAX_THREADS).contains(&max));
    let e = m
        .plan(PlanOptions {
            threads: max + 1,
            max_batch: 1,
        })
        .err()
        .expect("refused");
    assert!(e.to_string().contains("maximum"), "{e}");
    assert!(m
        .plan(PlanOptions {
            threads: max,
            max_batch: 1,
        })
        .is_ok());
}

/// Under an address-space limit (`ulimit -v`), a batch whose buffers do not fit is a clear
/// error before anything large is allocated, not an aborted process.
#[test]
fn a_batch_beyond_the_memory_limit_is_refused_before_allocating() {
    let r = model("resnet18-randominit-imagenet");
    let script = format!(
        "ulimit -v 3000000 && exec {} bench --model {} --batch 1000 --runs 1",
        env!("CARGO_BIN_EXE_haste"),
        path_str(&r)
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("a batch of 1000 needs"), "{err}");
    assert!(err.contains("use a smaller batch"), "{err}");
}

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

/// The first CIFAR images as one batch.
fn cifar_batch(n: usize) -> Vec<f32> {
    let card = haste::ModelCard::beside_model(&model("resnet20-cifar10"))
        .expect("card")
        .expect("a card");
    let data = haste::open_dataset(&cifar_first20(), &card.preprocess, None).expect("data");
    let per = 3 * 32 * 32;
    let mut x = vec![0.0; n * per];
    for (i, chunk) in x.chunks_mut(per).enumerate() {
        data.load(i, chunk).expect("image");
    }
    x
}

fn logits(plan: &mut Plan, x: &[f32], n: usize) -> Vec<u32> {
    let (_, out) = plan.run(x, n).expect("run");
    out.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn one_model_serves_threads_and_foreign_pools_with_identical_logits() {
    assert_send_sync::<Model>();
    assert_send::<Plan>();
    let m = Arc::new(Model::load(&model("resnet20-cifar10")).expect("model"));
    let n = 8;
    let x = Arc::new(cifar_batch(n));
    let options = PlanOptions {
        threads: 2,
        max_batch: n,
    };
    let want = logits(&mut m.plan(options).expect("plan"), &x, n);

    // Four threads, each with its own plan from the shared model.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (m, x) = (Arc::clone(&m), Arc::clone(&x));
            std::thread::spawn(move || {
                let mut plan = m.plan(options).expect("plan");
                (0..3).map(|_| logits(&mut plan, &x, n)).collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for got in h.join().expect("thread") {
            assert_eq!(got, want);
        }
    }

    // A plan built here, run from a thread the caller spawned.
    let mut plan = m.plan(options).expect("plan");
    let x2 = Arc::clone(&x);
    let got = std::thread::spawn(move || logits(&mut plan, &x2, n))
        .join()
        .expect("thread");
    assert_eq!(got, want);

    // Plans built and run inside rayon's global pool, several at once, and inside a pool
    // of the caller's own: no deadlock, the same logits.
    use rayon::prelude::*;
    let all: Vec<Vec<u32>> = (0..4)
        .into_par_iter()
        .map(|_| logits(&mut m.plan(options).expect("plan"), &x, n))
        .collect();
    assert!(all.iter().all(|g| *g == want));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .expect("pool");
    let mut plan = m.plan(options).expect("plan");
    let got = pool.install(|| logits(&mut plan, &x, n));
    assert_eq!(got, want);
}

/// SIGINT or SIGTERM in the middle of `sweep --plot --csv --json-out` leaves the old files
/// (or, for files that did not exist, none), never part of one, and no temporary file.
#[test]
fn an_interrupted_sweep_leaves_whole_files_or_none() {
    let r = model("resnet20-cifar10");
    let data = cifar_test();
    // A process started in the background by a shell without job control ignores SIGINT,
    // and so does every child it starts: there, haste would rightly run on through it, so
    // SIGTERM stands in.
    let interrupt = if ignores_sigint() { "TERM" } else { "INT" };
    for (signal, fresh) in [(interrupt, false), ("TERM", true)] {
        let dir = temp_dir(&format!("sweep-{signal}-{fresh}"));
        let files = ["curve.svg", "rows.csv", "rows.json"].map(|f| dir.join(f));
        if !fresh {
            for f in &files {
                std::fs::write(f, b"old\n").expect("old file");
            }
        }
        let mut child = haste_bin()
            .args(["sweep", "--model", path_str(&r), "--data", path_str(&data)])
            // All 10,000 test images (about 30 s on two cores uninterrupted): the signal
            // comes 1.5 s in, while the sweep is surely still running on any machine.
            .args(["--hyperplanes", "8,10,12,14,16,18,20"])
            .args(["--plot", path_str(&files[0]), "--csv", path_str(&files[1])])
            .args(["--json-out", path_str(&files[2])])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haste starts");
        std::thread::sleep(Duration::from_millis(1500));
        let killed = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the sweep finished before the signal");
        for f in &files {
            match std::fs::read(f) {
                Ok(b) => assert_eq!(b, b"old\n", "{} changed", f.display()),
                Err(_) => assert!(fresh, "{} removed", f.display()),
            }
        }
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `bench` predicts a run's peak memory from the plan (the program, the model's weights, the
/// plan's weights and buffers at their largest, the data in memory) within 20 % of the
/// measured peak resident memory.
#[test]
fn the_plan_predicts_the_peak_memory_within_a_fifth() {
    let cases = [
        ("resnet56-cifar10", cifar_test(), "16"),
        ("resnet18-randominit-imagenet", imagenet_val(), "16"),
        ("mobilenet_v2-randominit-imagenet", imagenet_val(), "32"),
        ("tiny-darknet-imagenet", imagenet_val(), "64"),
    ];
    for (name, data, batch) in cases {
        let extra = ["--batch", batch, "--runs", "1", "--hyperplanes", "14"];
        let j = haste_json("bench", &model(name), &data, &extra);
        let peak = j["peak_rss_bytes"].as_f64().expect("peak RSS");
        let predicted = j["predicted_peak_bytes"].as_f64().expect("prediction");
        let parts = &j["plan_memory"];
        assert!(parts["weights"].as_u64().expect("weights") > 0, "{j}");
        let error = (predicted - peak).abs() / peak;
        assert!(
            error <= 0.2,
            "{name}: predicted {predicted} bytes, measured {peak} ({:.0} % off): {parts}",
            100.0 * error
        );
    }
}

/// Whether this process ignores SIGINT (`SigIgn` in `/proc/self/status`, bit 1).
fn ignores_sigint() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << 1) != 0)
}
