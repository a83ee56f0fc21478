//! `read_json` against the reference decoder and serde_json: bad JSON in a whole frame must
//! leave the stream usable. The first byte picks the codec shape (one of 80, decoded with
//! the rest); the default codec reads every input too.
#![no_main]

#[path = "../../tests/fuzz_model/mod.rs"]
mod fuzz_model;

use fuzz_model::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let n = usize::from(data.first().copied().unwrap_or(0)) % SPECS;
    check_json(&Spec::nth(n), data, &[3, 1, 7]);
    check_default_json(data, &[]);
    check_default_json(data, &[2, 9]);
});
