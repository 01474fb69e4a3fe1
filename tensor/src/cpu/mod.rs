//! Hot CPU kernels.
pub mod gemm;
pub mod parallel;
pub mod simd;
pub mod vecmath;
