//! The frame reader (`Codec::read_frame`, `read_frame_into`, `FrameReader`) against the
//! reference decoder, whole and in short, interrupted reads. The first byte picks the codec
//! shape (one of 80) and is decoded with the rest: coverage guides the choice, and each
//! input costs one shape, not eighty.
#![no_main]

#[path = "../../tests/fuzz_model/mod.rs"]
mod fuzz_model;

use fuzz_model::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let n = usize::from(data.first().copied().unwrap_or(0)) % SPECS;
    let spec = Spec::nth(n);
    check_frames(&spec, data, &[], false);
    check_frames(&spec, data, &[3, 1, 7], true);
    check_frame_reader(&spec, data, &[5, 2], 1 + n % 13);
});
