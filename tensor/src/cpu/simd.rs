//! Run-time selection of the vector extension for a loop.
//!
//! The crate is compiled for baseline x86-64 (SSE2), so that one binary runs on any x86 machine;
//! a plain loop then runs at most 4 floats wide. [`dispatch!`] compiles a loop body a second and
//! third time with AVX-512F and AVX2 enabled and picks one at run time (the check is a cached
//! load). The bodies are plain f32 arithmetic in a fixed order, with no FMA contraction, so every
//! path gives the same bits; tests compare them with the scalar functions bit for bit.
//!
//! Loops whose arithmetic is mostly multiply-adds, or that need table lookups the compiler will
//! not vectorise, are written with intrinsics per ISA instead (`ops::gelu`, the GEMM kernels).

/// `dispatch!(body(a: A, b: B, ..))` returns `body(a, b, ..)` run by the best of AVX-512F, AVX2
/// and baseline code this CPU supports. `body` should be `#[inline(always)]`, so that each
/// wrapper gets its own copy compiled with its features. Use it as a function's tail: it
/// `return`s from the caller.
macro_rules! dispatch {
    ($body:ident ( $($arg:ident : $ty:ty),* $(,)? )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) {
                $body($($arg),*)
            }
            #[target_feature(enable = "avx2")]
            unsafe fn avx2($($arg: $ty),*) {
                $body($($arg),*)
            }
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked above).
                return unsafe { avx512($($arg),*) };
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked above).
                return unsafe { avx2($($arg),*) };
            }
        }
        $body($($arg),*)
    }};
}
pub(crate) use dispatch;
