//! Hot CPU kernels.
pub mod gemm;
pub mod vecmath;
