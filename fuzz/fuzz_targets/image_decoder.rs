//! Bytes -> an image file (JPEG by its first bytes, else PNG and whatever `image` guesses) ->
//! RGB8 -> ImageFolder's preprocessing (resize the shorter side to 40, crop 36, normalize):
//! errors are fine, panics are findings. The decoder refuses images beyond 16384 pixels a
//! side before allocating, so no input may allocate without bound either.
#![no_main]

use haste::datasets::{decode_rgb8_bytes, Preprocess};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok((rgb, w, h)) = decode_rgb8_bytes(Path::new("fuzz.img"), data) else {
        return;
    };
    assert_eq!(rgb.len(), 3 * w * h);
    if w * h > 1 << 22 {
        return; // decodes fine; resizing a huge image would only slow the fuzzer
    }
    let pre = Preprocess::new(36, 36)
        .with_resize_shorter_side(Some(40))
        .with_center_crop(Some(36));
    let mut out = vec![0f32; pre.input_len()];
    pre.apply_rgb8(&rgb, w, h, &mut out)
        .expect("a decoded image preprocesses");
    assert!(out.iter().all(|v| v.is_finite()));
});
