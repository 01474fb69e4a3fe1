//! The machine's measured peaks, the denominators of "fraction of peak": f32 FMA throughput
//! (register-only chains, no memory) and memory bandwidth (a parallel copy far larger than the
//! caches). Measured, not taken from a datasheet, so that turbo, SMT and a shared machine are
//! in the number.

use crate::cpu::gemm::Isa;
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

/// f32 lanes of the widest FMA this CPU has (0 without FMA).
pub fn fma_lanes() -> usize {
    match Isa::detect() {
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx | Isa::Bf16OnFma => 16,
        Isa::Avx2Fma => 8,
        Isa::Generic => 0,
    }
}

/// Independent FMA chains of the peak microbenchmark: enough to cover latency x issue width
/// (4 x 2 on current x86), few enough to stay in registers with the two constants (AVX2 has 16
/// vector registers: 16 chains spilled to memory and measured half the peak).
fn fma_chains() -> usize {
    if fma_lanes() == 16 {
        16
    } else {
        12
    }
}

/// Peak f32 FLOP/s of one core: [`fma_chains`] independent FMA chains on registers with the
/// widest vectors the CPU has. NaN without FMA.
pub fn fma_peak_one_thread(iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        fn chains512(iters: usize) -> f32 {
            let (x, y) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
            let mut acc = [_mm512_set1_ps(1.0); 16];
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm512_fmadd_ps(*a, x, y);
                }
            }
            acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
        }
        #[target_feature(enable = "avx2,fma")]
        fn chains256(iters: usize) -> f32 {
            let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
            let mut acc = [_mm256_set1_ps(1.0); 12];
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm256_fmadd_ps(*a, x, y);
                }
            }
            // Every chain must reach the result, or the compiler drops the dead ones and the
            // time covers fewer FMAs than counted (this once reported 2x the real peak).
            let sum = acc.iter().fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
            let mut out = [0.0f32; 8];
            // SAFETY: `out` holds the 8 lanes stored.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
            out.iter().sum()
        }
        let t = Instant::now();
        // SAFETY: each is called only when `Isa::detect` found its instruction set.
        match Isa::detect() {
            Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx | Isa::Bf16OnFma => {
                black_box(unsafe { chains512(black_box(iters)) })
            }
            Isa::Avx2Fma => black_box(unsafe { chains256(black_box(iters)) }),
            Isa::Generic => return f64::NAN,
        };
        (iters * fma_chains() * fma_lanes() * 2) as f64 / t.elapsed().as_secs_f64()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = iters;
        f64::NAN
    }
}

/// Peak FLOP/s of one core on bf16 products, measured like [`fma_peak_one_thread`], on the
/// instruction the bf16 GEMM uses: AMX's `tdpbf16ps` where the CPU has it (`iters / 16` x 4
/// tiles), else `vdpbf16ps` (16 lanes x 2 multiply-adds). NaN without either.
pub fn bf16_peak_one_thread(iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if Isa::Amx.available() {
            return crate::cpu::gemm::amx::peak_one_thread(iters / 16);
        }
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f,avx512bf16")]
        fn chains(iters: usize) -> f32 {
            // SAFETY: same-size bit casts.
            let (x, y) = unsafe {
                (
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3F80_3F80)),
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3380_3380)),
                )
            };
            let mut acc = [_mm512_set1_ps(1.0); 16];
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm512_dpbf16_ps(*a, x, y);
                }
            }
            acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
        }
        if !Isa::Avx512Bf16.available() {
            return f64::NAN;
        }
        let t = Instant::now();
        // SAFETY: the CPU has AVX512-BF16 (checked above).
        black_box(unsafe { chains(black_box(iters)) });
        (iters * 16 * 16 * 4) as f64 / t.elapsed().as_secs_f64()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = iters;
        f64::NAN
    }
}

/// (one thread, all rayon threads at once) peak bf16-product FLOP/s, best of three each.
pub fn bf16_peak() -> (f64, f64) {
    let iters = 20_000_000;
    let single = (0..3).map(|_| bf16_peak_one_thread(iters)).fold(0.0, f64::max);
    let threads = rayon::current_num_threads();
    let all = (0..3)
        .map(|_| {
            let t = Instant::now();
            (0..threads).into_par_iter().for_each(|_| {
                bf16_peak_one_thread(iters);
            });
            (threads * iters * 16 * 16 * 4) as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max);
    (single, all)
}

/// (one thread, all rayon threads at once) peak f32 FLOP/s, best of three tries each.
pub fn fma_peak() -> (f64, f64) {
    let iters = 20_000_000;
    let single = (0..3).map(|_| fma_peak_one_thread(iters)).fold(0.0, f64::max);
    let threads = rayon::current_num_threads();
    let all = (0..3)
        .map(|_| {
            let t = Instant::now();
            (0..threads).into_par_iter().for_each(|_| {
                fma_peak_one_thread(iters);
            });
            (threads * iters * fma_chains() * 2 * fma_lanes()) as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max);
    (single, all)
}

/// Memory bandwidth in bytes/s (read + write) of a rayon-parallel copy of 256 MiB, best of three.
pub fn copy_bandwidth() -> f64 {
    let n = 64 << 20; // f32s: 256 MiB, far beyond any last-level cache
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let chunk = n / (4 * rayon::current_num_threads()).max(1);
    (0..3)
        .map(|_| {
            let t = Instant::now();
            dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
            black_box(&dst);
            (8 * n) as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_peak_is_a_rate_where_the_cpu_has_it() {
        let one = bf16_peak_one_thread(1000);
        assert_eq!(one.is_nan(), !Isa::Avx512Bf16.available(), "bf16 peak {one}");
        assert!(one.is_nan() || one > 1e8, "bf16 peak {one}");
    }

    #[test]
    fn peaks_are_positive_rates() {
        let one = fma_peak_one_thread(1000);
        if fma_lanes() > 0 {
            assert!(one.is_finite() && one > 1e8, "one-thread FMA peak {one}");
        } else {
            assert!(one.is_nan());
        }
    }
}
