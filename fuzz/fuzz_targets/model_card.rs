//! Bytes -> model card parser: errors are fine, panics are findings.
#![no_main]

use haste::datasets::ModelCard;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // labels_file is resolved beside this (nonexistent) path: never reads real files.
        let _ = ModelCard::parse(Path::new("/nonexistent/fuzz.json"), text);
    }
});
