//! Hot CPU kernels.
pub mod gemm;
