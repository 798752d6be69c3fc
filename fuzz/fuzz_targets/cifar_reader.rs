//! Bytes -> CIFAR-10 records -> every record preprocessed (32x32 and resized to 40x40 with a
//! 36 crop): errors are fine, panics are findings.
#![no_main]

use haste::datasets::{CifarBinary, Dataset, Preprocess};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut resized = Preprocess::new(36, 36);
    resized.resize_shorter_side = Some(40);
    resized.center_crop = Some(36);
    for pre in [Preprocess::new(32, 32), resized] {
        let Ok(c) = CifarBinary::from_bytes(Path::new("fuzz.bin"), data.to_vec(), &pre) else {
            return;
        };
        let mut out = vec![0f32; pre.input_len()];
        for i in 0..c.len().min(8) {
            c.load(i, &mut out).expect("a checked record loads");
            assert!(c.label(i) <= 9);
        }
        assert!(c.load(c.len(), &mut out).is_err());
    }
});
