//! `.safetensors` weights: the header, the metadata and every tensor's conversion.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = facex::checkpoint::safetensors_metadata(data, "fuzz.safetensors");
    let _ = facex::checkpoint::load_safetensors_from_bytes(data, "fuzz.safetensors");
});
