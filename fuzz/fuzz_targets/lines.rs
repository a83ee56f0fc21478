//! `read_line` and `read_text_line` against the reference line splitter, for several
//! limits and buffer capacities.
#![no_main]

#[path = "../../tests/fuzz_model/mod.rs"]
mod fuzz_model;

use fuzz_model::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (cap, max) in [(1, 0), (3, 1), (7, 4), (16, 64), (64, 1 << 20)] {
        check_lines(data, &[], cap, max);
        check_lines(data, &[3, 1, 7], cap, max);
    }
});
