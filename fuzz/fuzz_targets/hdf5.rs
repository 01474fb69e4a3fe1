//! libFuzzer target `hdf5`: MAT v7.3 (HDF5 subset). The body is `fuzz/bodies.rs`,
//! shared with the bounded run in CI (`tests/fuzz_bounded.rs`).
#![no_main]
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::hdf5(data));
