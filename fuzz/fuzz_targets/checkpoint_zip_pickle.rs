//! libFuzzer target `checkpoint_zip_pickle`: model.pt: zip container or legacy format, the pickle reader, tensor copies. The body is `fuzz/bodies.rs`,
//! shared with the bounded run in CI (`tests/fuzz_bounded.rs`).
#![no_main]
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::checkpoint_zip_pickle(data));
