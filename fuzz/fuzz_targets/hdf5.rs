//! MAT v7.3 (HDF5), the subset COFW's colour files use. An input without the HDF5 signature gets
//! one in front, so that every input reaches the HDF5 reader rather than the Level 5 one.
#![no_main]
use libfuzzer_sys::fuzz_target;

const SIGNATURE: &[u8] = b"\x89HDF\r\n\x1a\n";

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.mat");
    if data.starts_with(SIGNATURE) || data.get(512..520) == Some(SIGNATURE) {
        let _ = data::mat::read_bytes(path, data);
    } else {
        let _ = data::mat::read_bytes(path, &[SIGNATURE, data].concat());
    }
});
