//! libFuzzer target `safetensors`: .safetensors: header, metadata, every tensor. The body is `fuzz/bodies.rs`,
//! shared with the bounded run in CI (`tests/fuzz_bounded.rs`).
#![no_main]
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::safetensors(data));
