//! Bytes -> ONNX decode -> simplify -> plan (batch 1) -> one run: errors are fine, panics,
//! aborts and huge allocations are findings.
#![no_main]

use haste::{Model, PlanOptions};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Model::from_bytes(Path::new("/nonexistent/fuzz.onnx"), data) else {
        return;
    };
    // Keep runs cheap: skip absurdly large images.
    if model.image_shape.iter().product::<usize>() > 1 << 16 {
        return;
    }
    let Ok(mut plan) = model.plan(PlanOptions {
        threads: 1,
        max_batch: 1,
    }) else {
        return;
    };
    let x = vec![0.5f32; model.image_shape.iter().product()];
    let _ = plan.run(&x, 1);
});
