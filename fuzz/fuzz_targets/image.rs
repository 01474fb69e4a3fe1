//! libFuzzer target `image`: the image path of facex analyze: decode and crop. The body is `fuzz/bodies.rs`,
//! shared with the bounded run in CI (`tests/fuzz_bounded.rs`).
#![no_main]
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::image(data));
