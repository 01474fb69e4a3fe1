//! The window attention's two products on AVX2 + FMA (CPUs without AVX-512, such as AMD's Zen 3).
//! Both are one small GEMM, `out = scale · A B`, on the GEMM microkernel's tile shape: 6 rows x
//! 16 columns in 12 ymm accumulators, two vectors of B and one broadcast of A per step (15 of the
//! 16 registers). Without it these products ran as plain loops at about 7 GFLOP/s.
//! - scores: A = one head's q rows, B = its kᵀ staged as [d][W] (W = n rounded up to 8, zero
//!   past n), depth d;
//! - weighted sums: A = the n x n probabilities (or gradients), B = v's rows read in place, depth n.

use super::{Dims, Rows, RowsMut};
use crate::cpu::gemm::pack::avx2::pack_transposed;
use crate::cpu::vecmath::exp_f32_normal_or_zero;
use std::arch::x86_64::*;

/// Rows per tile.
const ROWS: usize = 6;

/// The CPU has AVX2 and FMA, which every function here needs (cached by std after the first call).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

pub(crate) use super::Product;

/// out[i, j] = scale · a_i · b_j (n x n, rows n apart), through kᵀ staged in `kt`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; n <= 64; rows in bounds (checked by the caller).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dots(a: Rows, b: Rows, scale: f32, kt: &mut [f32], out: &mut [f32], dims: Dims) {
    let Dims { n, d, .. } = dims;
    let w = n.next_multiple_of(8);
    assert!(n <= 64 && kt.len() >= d * w && out.len() >= n * n);
    assert!(b.offset + (n - 1) * b.stride + d <= b.data.len());
    // kᵀ as one GEMM panel of w keys (zero past n), through the packer's 8x8 register
    // transposes: the element loop it replaces was a fifth of this function's time.
    let (k_ptr, kt_ptr) = (b.data.as_ptr().add(b.offset), kt.as_mut_ptr());
    match w / 8 {
        1 => pack_transposed::<8>(n, d, k_ptr, b.stride, kt_ptr),
        2 => pack_transposed::<16>(n, d, k_ptr, b.stride, kt_ptr),
        3 => pack_transposed::<24>(n, d, k_ptr, b.stride, kt_ptr),
        4 => pack_transposed::<32>(n, d, k_ptr, b.stride, kt_ptr),
        5 => pack_transposed::<40>(n, d, k_ptr, b.stride, kt_ptr),
        6 => pack_transposed::<48>(n, d, k_ptr, b.stride, kt_ptr),
        7 => pack_transposed::<56>(n, d, k_ptr, b.stride, kt_ptr),
        _ => pack_transposed::<64>(n, d, k_ptr, b.stride, kt_ptr),
    }
    let a_ptr = a.data.as_ptr().add(a.offset);
    let (out_ptr, b_ptr) = (out.as_mut_ptr(), kt.as_ptr());
    product(Product {
        m: n,
        cols: n,
        depth: d,
        a: a_ptr,
        a_rs: a.stride,
        a_cs: 1,
        b: b_ptr,
        b_rs: w,
        out: out_ptr,
        out_rs: n,
        scale,
    });
}

/// out_i = Σ_j m[i, j] x_j (m n x n, x and out rows of d values); with `transposed`, m[j, i].
///
/// # Safety
/// The CPU must support AVX2 and FMA; d % 8 == 0; rows in bounds (checked by the caller).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn weighted(m: &[f32], transposed: bool, x: Rows, out: RowsMut, dims: Dims) {
    let Dims { n, d, .. } = dims;
    assert!(d.is_multiple_of(8) && m.len() >= n * n);
    let (x_ptr, out_ptr) = (x.data.as_ptr().add(x.offset), out.data.as_mut_ptr().add(out.offset));
    let (a_rs, a_cs) = if transposed { (1, n) } else { (n, 1) };
    #[rustfmt::skip]
    product(Product { m: n, cols: d, depth: n, a: m.as_ptr(), a_rs, a_cs, b: x_ptr, b_rs: x.stride, out: out_ptr, out_rs: out.stride, scale: 1.0 });
}

/// The whole product in tiles: 16-column chunks (8 for a last chunk of at most 8), 6-row tiles
/// (fewer for the last rows).
///
/// # Safety
/// The CPU must support AVX2 and FMA; every element addressed as described at [`Product`] must
/// be readable (a, b) or writable (out).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn product(p: Product) {
    let mut c0 = 0;
    while c0 < p.cols {
        let wide = p.cols - c0 > 8;
        let mut i0 = 0;
        while i0 < p.m {
            let rows = ROWS.min(p.m - i0);
            match (rows, wide) {
                (6, true) => tile::<6, 2>(&p, i0, c0),
                (5, true) => tile::<5, 2>(&p, i0, c0),
                (4, true) => tile::<4, 2>(&p, i0, c0),
                (3, true) => tile::<3, 2>(&p, i0, c0),
                (2, true) => tile::<2, 2>(&p, i0, c0),
                (1, true) => tile::<1, 2>(&p, i0, c0),
                (6, false) => tile::<6, 1>(&p, i0, c0),
                (5, false) => tile::<5, 1>(&p, i0, c0),
                (4, false) => tile::<4, 1>(&p, i0, c0),
                (3, false) => tile::<3, 1>(&p, i0, c0),
                (2, false) => tile::<2, 1>(&p, i0, c0),
                _ => tile::<1, 1>(&p, i0, c0),
            }
            i0 += rows;
        }
        c0 += if wide { 16 } else { 8 };
    }
}

/// Lane masks for a partial store: `MASK[8 - k..][..8]` enables the first k lanes.
const MASK: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// Rows [i0, i0 + R) and columns [c0, c0 + 8·C8) of the product, in registers; columns past
/// `cols` are computed (from zero padding or a neighbour's values) but not stored.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<const R: usize, const C8: usize>(p: &Product, i0: usize, c0: usize) {
    let mut acc = [[_mm256_setzero_ps(); C8]; R];
    let (a, b) = (p.a.add(i0 * p.a_rs), p.b.add(c0));
    for e in 0..p.depth {
        let mut bv = [_mm256_setzero_ps(); C8];
        for (c, v) in bv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(b.add(e * p.b_rs + 8 * c));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(r * p.a_rs + e * p.a_cs));
            for (acc_rc, bc) in acc_r.iter_mut().zip(&bv) {
                *acc_rc = _mm256_fmadd_ps(av, *bc, *acc_rc);
            }
        }
    }
    let scale = _mm256_set1_ps(p.scale);
    let valid = (p.cols - c0).min(8 * C8);
    for (r, acc_r) in acc.iter().enumerate() {
        let dst = p.out.add((i0 + r) * p.out_rs + c0);
        for (c, v) in acc_r.iter().enumerate() {
            let (v, left) = (_mm256_mul_ps(*v, scale), valid.saturating_sub(8 * c));
            if left >= 8 {
                _mm256_storeu_ps(dst.add(8 * c), v);
            } else if left > 0 {
                let mask = _mm256_loadu_si256(MASK.as_ptr().add(8 - left) as *const __m256i);
                _mm256_maskstore_ps(dst.add(8 * c), mask, v);
            }
        }
    }
}

/// The sum of a vector's 8 lanes in halves: 8 -> 4 -> 2 -> 1 (lane l plus lane l + 4, and so on),
/// the last steps of both ISAs' softmax sums.
///
/// # Safety
/// The CPU must support AVX.
#[inline]
#[target_feature(enable = "avx")]
pub(super) fn sum_halves(a: __m256) -> f32 {
    let q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps::<1>(d, d)))
}

/// `avx512::softmax_rows` on AVX2 + FMA, in the same order step by step (rows padded to
/// W = 16·C16 with -inf, 16 lanes as two vectors summed over the groups in order, then the
/// lanes in halves): the same bits.
///
/// # Safety
/// The CPU must support AVX2 and FMA; n <= 64; both slices hold n·n values (checked).
pub unsafe fn softmax_rows(scores: &[f32], probs: &mut [f32], n: usize) {
    match n.div_ceil(16) {
        1 => softmax_rows_padded::<1, 16>(scores, probs, n),
        2 => softmax_rows_padded::<2, 32>(scores, probs, n),
        3 => softmax_rows_padded::<3, 48>(scores, probs, n),
        _ => softmax_rows_padded::<4, 64>(scores, probs, n),
    }
}

/// [`softmax_rows`] with rows padded to W = 16·C16 >= n.
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_padded<const C16: usize, const W: usize>(scores: &[f32], probs: &mut [f32], n: usize) {
    assert!(W == 16 * C16 && n <= W && scores.len() >= n * n && probs.len() >= n * n);
    let tiny = _mm256_set1_ps(f32::MIN_POSITIVE);
    // Lane masks of each 8-value chunk's first n values: masked loads and stores, so that no copy
    // of a run-time length (a `memmove` call) runs per row.
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let masks: [__m256i; 8] = std::array::from_fn(|c8| {
        let left = n.saturating_sub(8 * c8).min(8) as i32;
        _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane)
    });
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    // The steps run as passes over all rows (padded copies and maxima, exps, sums and stores),
    // each row's steps in the same order as alone, so that rows overlap. This build on a Zen 4:
    // 4.96 us per 49 x 49 block (5.4 row by row) against 4.26 for `ops::softmax`'s rows built
    // for AVX2 + FMA and 1.45 for the AVX-512 build: the price of AVX-512's bits on AVX2.
    let mut x = [[0.0f32; W]; 64];
    let mut maxima = [0.0f32; 64];
    for i in 0..n {
        let row = scores.as_ptr().add(i * n);
        for (c8, &m) in masks.iter().enumerate().take(2 * C16) {
            let v = _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(row.add(8 * c8), m), _mm256_castsi256_ps(m));
            _mm256_storeu_ps(x[i].as_mut_ptr().add(8 * c8), v);
        }
        let mut mv = _mm256_loadu_ps(x[i].as_ptr());
        for c8 in 1..2 * C16 {
            mv = _mm256_max_ps(mv, _mm256_loadu_ps(x[i].as_ptr().add(8 * c8)));
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), mv);
        maxima[i] = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    }
    // exp(-inf) is 0: the chunks wholly past n are set, not computed.
    let used = n.div_ceil(8);
    for (row, &m) in x[..n].iter_mut().zip(&maxima) {
        for v in row[..8 * used].iter_mut() {
            *v = exp_f32_normal_or_zero::<true>(*v - m);
        }
        row[8 * used..].fill(0.0);
    }
    for (i, row) in x[..n].iter().enumerate() {
        let (mut lo, mut hi) = (_mm256_loadu_ps(row.as_ptr()), _mm256_loadu_ps(row.as_ptr().add(8)));
        for cc in 1..C16 {
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(row.as_ptr().add(16 * cc)));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(row.as_ptr().add(16 * cc + 8)));
        }
        let inv = _mm256_set1_ps(1.0 / sum_halves(_mm256_add_ps(lo, hi)));
        let dst = probs.as_mut_ptr().add(i * n);
        for (c8, &m) in masks.iter().enumerate().take(2 * C16) {
            let p = _mm256_mul_ps(_mm256_loadu_ps(row.as_ptr().add(8 * c8)), inv);
            // Zero below the smallest normal; NaN fails the comparison and stays.
            let p = _mm256_blendv_ps(p, _mm256_setzero_ps(), _mm256_cmp_ps::<_CMP_LT_OQ>(p, tiny));
            _mm256_maskstore_ps(dst.add(8 * c8), m, p);
        }
    }
}
