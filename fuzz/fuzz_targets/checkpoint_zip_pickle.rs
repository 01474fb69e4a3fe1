//! `model.pt`: the torch.save zip container and the legacy format, both through the restricted
//! pickle reader, down to the tensors copied out of their storages.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = facex::checkpoint::load_pytorch_from_bytes(data, "fuzz.pt", None);
});
