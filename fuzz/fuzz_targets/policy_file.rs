//! Bytes -> a calibration policy (`Policy::parse`) -> applied to the real ResNet-20's plan
//! and run on one image: errors are fine, panics are findings. Without `../shared` (the
//! model), only the parser is fuzzed.
#![no_main]

use haste::{Compression, Model, Plan, PlanOptions, Policy};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

fn plan() -> &'static Option<Mutex<Plan>> {
    static PLAN: OnceLock<Option<Mutex<Plan>>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/models/resnet20-cifar10.onnx");
        let model = Model::load(&path).ok()?;
        let options = PlanOptions {
            threads: 1,
            max_batch: 1,
        };
        model.plan(options).ok().map(Mutex::new)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = Policy::parse(Path::new("fuzz.json"), data) else {
        return;
    };
    let Some(plan) = plan() else {
        return;
    };
    let mut plan = plan.lock().expect("one fuzz thread");
    if Compression::apply_policy(&mut plan, &policy).is_ok() {
        let x = vec![0.25f32; 3 * 32 * 32];
        let (_, out) = plan.run(&x, 1).expect("a policy that applies runs");
        assert_eq!(out.len(), 10);
    }
    plan.reset_conv_kernels();
});
