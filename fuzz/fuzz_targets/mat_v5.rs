//! MATLAB Level 5 `.mat` (v5/v6, v7 with zlib): COFW, 300W-LP and AFLW2000 annotations.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = data::mat::read_bytes(std::path::Path::new("fuzz.mat"), data);
});
