//! facex's tensor engine: `Tensor` (shared storage + a plain-data `Layout`), dtypes f32, f16,
//! bf16, i64 and u8, zero-copy views, and ops with a CPU backend.
//!
//! Every op lives in `ops/<family>.rs` with its shape checks, its plain reference, its fast
//! version and its tests side by side. Hot CPU kernels (GEMM) live under `cpu/`.

pub mod backend;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dtype;
pub mod error;
pub mod layout;
pub mod ops;
pub mod profile;
pub mod storage;
mod tensor;
/// Shared test numerics (f64 references, tolerance checks): for tests only, here and in the
/// crates above through the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod view;

pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use half::{bf16, f16};
pub use layout::Layout;
pub use storage::CpuStorage;
pub use tensor::{gather_strided, SplitMix64, Tensor};
