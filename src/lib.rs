//! facex-suite: helpers shared by the workspace-level integration tests (`tests/`) and
//! benchmarks (`benches/`). The product itself is in the member crates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tensor::{DType, Tensor};

/// Relative error ||a-b|| / ||b|| in f64.
pub fn rel_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_error: lengths differ");
    let (num, den) = diff_norms(a, b);
    num / den.max(f64::MIN_POSITIVE)
}

/// (||a-b||, ||b||) in f64.
pub fn diff_norms(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    (num.sqrt(), den.sqrt())
}

/// The fixture directory: `$FACEX_FIXTURES` when set, else the in-repo tiny fixture.
pub fn fixture_dir() -> PathBuf {
    match std::env::var_os("FACEX_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facexformer-tiny"),
    }
}

/// Every tensor of a safetensors file, by name (F64 is read as F32).
pub fn read_safetensors(path: &Path) -> HashMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let t = match view.dtype() {
            safetensors::Dtype::F32 => Tensor::from_storage(
                tensor::CpuStorage::from_le_bytes(DType::F32, data).unwrap(),
                tensor::Layout::contiguous(&shape),
            ),
            safetensors::Dtype::I64 => Tensor::from_storage(
                tensor::CpuStorage::from_le_bytes(DType::I64, data).unwrap(),
                tensor::Layout::contiguous(&shape),
            ),
            safetensors::Dtype::F64 => {
                let v: Vec<f64> = data.as_chunks::<8>().0.iter().map(|c| f64::from_le_bytes(*c)).collect();
                Tensor::from_f64_vec(&v, &shape, DType::F32)
            }
            other => panic!("{}: {name} has unsupported dtype {other:?}", path.display()),
        };
        out.insert(name, t);
    }
    out
}

/// Per-tensor float32 error of PyTorch against the float64 reference (`float32_errors.json`,
/// key `each`), when the fixture directory has one.
pub fn float32_errors(dir: &Path) -> HashMap<String, f64> {
    let Ok(text) = std::fs::read_to_string(dir.join("float32_errors.json")) else { return HashMap::new() };
    let json: serde_json::Value = serde_json::from_str(&text).expect("float32_errors.json parses");
    json["each"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
        .unwrap_or_default()
}

/// The allowed error for `name`: the larger of `base` and 3x PyTorch's own float32 error.
pub fn allowed(errors: &HashMap<String, f64>, name: &str, base: f64) -> f64 {
    errors.get(name).map_or(base, |&e| base.max(3.0 * e))
}

/// CUDA device 0 for the device tests, or `None` (with a note on stderr) on a machine without
/// one; a device that is present but unusable fails the test.
#[cfg(feature = "cuda")]
pub fn cuda_device_or_skip() -> Option<tensor::backend::cuda::Cuda> {
    use tensor::cuda::CudaError;
    match tensor::backend::cuda::Cuda::new(0) {
        Ok(gpu) => Some(gpu),
        Err(CudaError::Unavailable(why)) => {
            eprintln!("skipped: no CUDA device ({why})");
            None
        }
        Err(e) => panic!("CUDA device present but unusable: {e}"),
    }
}
