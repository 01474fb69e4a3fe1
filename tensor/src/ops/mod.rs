//! Ops, one module per family. Each module holds the op's shape checks, its CPU
//! implementation (a fast path for contiguous f32 and a strided fallback), a plain
//! reference used by its tests, and the tests themselves.
//!
//! Floating ops on f16/bf16 widen to f32, compute, and round the result back.

pub mod attention;
pub mod binary;
pub mod conv;
pub mod cross_attention;
pub mod gelu;
pub mod index;
pub mod interp;
pub mod matmul;
pub mod mlp;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod unary;

/// Activation applied in a fused epilogue (linear + bias + activation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    /// Exact GELU: x * (1 + erf(x / sqrt 2)) / 2.
    Gelu,
}
