//! Run-time selection of the vector extension for a loop.
//!
//! The crate is compiled for baseline x86-64 (SSE2), so that one binary runs on any x86 machine;
//! a plain loop then runs at most 4 floats wide. [`dispatch!`] compiles a loop body a second and
//! third time with AVX-512F and AVX2 enabled and picks one at run time (the check is a cached
//! load). The bodies are plain f32 arithmetic in a fixed order, with no FMA contraction, so every
//! path gives the same bits; tests compare them with the scalar functions bit for bit.
//!
//! [`dispatch_fma!`] is for bodies whose arithmetic is mostly multiply-adds (polynomials): they
//! take `const FMA: bool`, and run fused on AVX-512F and on AVX2 + FMA, unfused on the portable
//! path. Both vector paths give the same bits (the scalar body with `FMA` = true, whose
//! `mul_add` is correctly rounded too); [`fma_paths`] says which one this CPU runs.

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

/// Whether [`dispatch_fma!`] runs its bodies fused (`FMA` = true) on this CPU.
pub fn fma_paths() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            || (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dispatch_fma!(body(a: A, ..))` returns `body::<true>(a, ..)` compiled for AVX-512F or
/// AVX2 + FMA where the CPU has them, else the portable `body::<false>(a, ..)`.
macro_rules! dispatch_fma {
    ($body:ident ( $($arg:ident : $ty:ty),* $(,)? )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,fma")]
            unsafe fn avx512($($arg: $ty),*) {
                $body::<true>($($arg),*)
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                $body::<true>($($arg),*)
            }
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, and with it FMA (checked above).
                return unsafe { avx512($($arg),*) };
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                return unsafe { avx2($($arg),*) };
            }
        }
        $body::<false>($($arg),*)
    }};
}
pub(crate) use dispatch_fma;
