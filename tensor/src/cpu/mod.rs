//! Hot CPU kernels.
pub mod gemm;
pub mod malloc;
pub mod parallel;
pub mod simd;
pub mod vecmath;
