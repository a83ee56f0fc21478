//! `read_message` and `read_json_header` against the reference: header frame, JSON object,
//! `body_size`, body. The first byte picks the header prefix and limit (one of 80, decoded
//! with the rest); `read_json_header` reads every input with the default codec.
#![no_main]

#[path = "../../tests/fuzz_model/mod.rs"]
mod fuzz_model;

use fuzz_model::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let n = usize::from(data.first().copied().unwrap_or(0)) % SPECS;
    check_messages(&Spec::nth(n), data, &[3, 1, 7]);
    check_json_header(data, &[]);
    check_json_header(data, &[1, 4]);
});
