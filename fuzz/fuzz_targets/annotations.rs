//! libFuzzer target `annotations`: every dataset annotation parser (selector byte, then one file). The body is `fuzz/bodies.rs`,
//! shared with the bounded run in CI (`tests/fuzz_bounded.rs`).
#![no_main]
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::annotations(data));
