//! The window attention's two products on AVX-512 register tiles: rows of an n x n result in
//! C16 zmm (up to 64 columns), rows of d values in D16 zmm.

use super::avx2::sum_halves;
use super::{Dims, Rows, RowsMut};
use crate::cpu::gemm::pack::avx512::pack_transposed;
use crate::cpu::vecmath::exp_f32_normal_or_zero;
use std::arch::x86_64::*;

/// Rows per tile of [`dots`]: ROWS x C16 accumulators (24 at most).
const ROWS: usize = 6;
/// Rows per tile of [`weighted`] (with D16 <= 2: 24 accumulators).
const OUT_ROWS: usize = 12;

/// out[i, j] = scale · a_i · b_j. bᵀ is staged as [d][W] (W = 16·C16, zero past n) by the
/// GEMM's transposing pack, so that a step over d loads C16 vectors of b and broadcasts one
/// value of a per row.
///
/// # Safety
/// The CPU must support AVX-512F; n <= W = 16·C16; rows in bounds (checked by the caller).
#[target_feature(enable = "avx512f")]
pub unsafe fn dots<const C16: usize, const W: usize>(
    a: Rows,
    b: Rows,
    scale: f32,
    kt: &mut [f32],
    out: &mut [f32],
    dims: Dims,
) {
    let Dims { n, d, .. } = dims;
    assert!(W == 16 * C16 && n <= W && out.len() >= n * n && kt.len() >= d * W);
    pack_transposed::<W>(n, d, b.data.as_ptr().add(b.offset), b.stride, kt.as_mut_ptr());
    let vscale = _mm512_set1_ps(scale);
    let tail = ((1u32 << (n - 16 * (C16 - 1))) - 1) as u16;
    for i0 in (0..n).step_by(ROWS) {
        let rows = ROWS.min(n - i0);
        let mut acc = [[_mm512_setzero_ps(); C16]; ROWS];
        let ap = a.data.as_ptr().add(a.offset + i0 * a.stride);
        for e in 0..d {
            let mut kv = [_mm512_setzero_ps(); C16];
            for (cc, v) in kv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(kt.as_ptr().add(e * W + 16 * cc));
            }
            for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                let av = _mm512_set1_ps(*ap.add(r * a.stride + e));
                for (acc_rc, k) in acc_r.iter_mut().zip(&kv) {
                    *acc_rc = _mm512_fmadd_ps(av, *k, *acc_rc);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            let dst = out.as_mut_ptr().add((i0 + r) * n);
            for (cc, v) in acc_r.iter().enumerate() {
                let m = if cc + 1 == C16 { tail } else { u16::MAX };
                _mm512_mask_storeu_ps(dst.add(16 * cc), m, _mm512_mul_ps(*v, vscale));
            }
        }
    }
}

/// out_i = Σ_j m[i, j] x_j for d = 16·D16; with `T`, m[j, i] (`super::weighted`).
///
/// # Safety
/// The CPU must support AVX-512F; d == 16·D16; rows in bounds (checked by the caller).
#[target_feature(enable = "avx512f")]
pub unsafe fn weighted<const D16: usize, const T: bool>(m: &[f32], x: Rows, out: RowsMut, dims: Dims) {
    let n = dims.n;
    assert!(dims.d == 16 * D16 && m.len() >= n * n);
    let xp = x.data.as_ptr().add(x.offset);
    for i0 in (0..n).step_by(OUT_ROWS) {
        let rows = OUT_ROWS.min(n - i0);
        let mut acc = [[_mm512_setzero_ps(); D16]; OUT_ROWS];
        for j in 0..n {
            let mut xv = [_mm512_setzero_ps(); D16];
            for (dd, v) in xv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(xp.add(j * x.stride + 16 * dd));
            }
            for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                let at = if T { j * n + i0 + r } else { (i0 + r) * n + j };
                let p = _mm512_set1_ps(*m.get_unchecked(at));
                for (a, v) in acc_r.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(p, *v, *a);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            let dst = out.data.as_mut_ptr().add(out.offset + (i0 + r) * out.stride);
            for (dd, a) in acc_r.iter().enumerate() {
                _mm512_storeu_ps(dst.add(16 * dd), *a);
            }
        }
    }
}

/// Wider rows (d a multiple of 16 above 32): 16 columns at a time.
///
/// # Safety
/// As for [`weighted`], with d % 16 == 0.
#[target_feature(enable = "avx512f")]
pub unsafe fn weighted_wide<const T: bool>(m: &[f32], x: Rows, out: RowsMut, dims: Dims) {
    let (n, d) = (dims.n, dims.d);
    for d0 in (0..d).step_by(16) {
        let xs = Rows { offset: x.offset + d0, ..x };
        let outs = RowsMut { data: &mut *out.data, offset: out.offset + d0, stride: out.stride };
        weighted::<1, T>(m, xs, outs, Dims { d: 16, ..dims });
    }
    let _ = n;
}

/// The row softmax of an n x n block of scores (rows n apart, n <= W = 16·C16) into `probs`,
/// probabilities below f32's smallest normal set to zero (see `softmax_flushed`). Each row is
/// padded to W with -inf in registers, so its max, exps, sum and scaling are C16 whole vectors
/// with no scalar tail (`ops::softmax` runs a 49-value row as 3 vectors and one scalar exp, and
/// its f64 sum as a chain of 12 dependent adds). The sum is f32: 16 lanes over the C16 groups in
/// order, then the lanes in halves (16 -> 8 -> 4 -> 2 -> 1), the order `avx2::softmax_rows`
/// keeps, so that the two give the same bits (and the two kinds of CPU train alike).
///
/// # Safety
/// The CPU must support AVX-512F and FMA; n <= 64; both slices hold n·n values (checked).
pub unsafe fn softmax_rows(scores: &[f32], probs: &mut [f32], n: usize) {
    match n.div_ceil(16) {
        1 => softmax_rows_padded::<1, 16>(scores, probs, n),
        2 => softmax_rows_padded::<2, 32>(scores, probs, n),
        3 => softmax_rows_padded::<3, 48>(scores, probs, n),
        _ => softmax_rows_padded::<4, 64>(scores, probs, n),
    }
}

/// [`softmax_rows`] with rows padded to W = 16·C16 >= n, two rows at a time: each row's steps
/// are a chain of dependent reductions and the exp polynomial, so one row at a time left the
/// core waiting on latencies (28% of a stage-3 window attention's samples); two independent
/// rows fill them (the whole op 1.68-1.82 -> 1.62-1.66 ms for 32 windows of 49 tokens and 16
/// heads, interleaved; four rows at a time no better; 2-core Xeon, family 6 model 207). Each
/// row's operations are unchanged: the same bits.
#[target_feature(enable = "avx512f,fma")]
unsafe fn softmax_rows_padded<const C16: usize, const W: usize>(scores: &[f32], probs: &mut [f32], n: usize) {
    assert!(W == 16 * C16 && n <= W && scores.len() >= n * n && probs.len() >= n * n);
    let mut i = 0;
    while i + 2 <= n {
        softmax_rows_at::<C16, W, 2>(scores, probs, n, i);
        i += 2;
    }
    if i < n {
        softmax_rows_at::<C16, W, 1>(scores, probs, n, i);
    }
}

/// Rows `i0..i0 + R` of [`softmax_rows_padded`], their steps interleaved.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn softmax_rows_at<const C16: usize, const W: usize, const R: usize>(
    scores: &[f32],
    probs: &mut [f32],
    n: usize,
    i0: usize,
) {
    debug_assert!(i0 + R <= n && scores.len() >= n * n && probs.len() >= n * n);
    let tail = ((1u32 << (n - 16 * (C16 - 1))) - 1) as u16;
    let mask = |cc: usize| if cc + 1 == C16 { tail } else { u16::MAX };
    let tiny = _mm512_set1_ps(f32::MIN_POSITIVE);
    let mut x = [[0.0f32; W]; R];
    let mut m = [0.0f32; R];
    for (r, (xr, mr)) in x.iter_mut().zip(&mut m).enumerate() {
        let row = scores.as_ptr().add((i0 + r) * n);
        for cc in 0..C16 {
            let v = _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask(cc), row.add(16 * cc));
            _mm512_storeu_ps(xr.as_mut_ptr().add(16 * cc), v);
        }
        let mut mv = _mm512_loadu_ps(xr.as_ptr());
        for cc in 1..C16 {
            mv = _mm512_max_ps(mv, _mm512_loadu_ps(xr.as_ptr().add(16 * cc)));
        }
        // The max is exact in any order.
        *mr = _mm512_reduce_max_ps(mv);
    }
    // exp on whole vectors (a loop over a fixed W vectorises without a tail); -inf gives 0.
    for (xr, &mr) in x.iter_mut().zip(&m) {
        for v in xr.iter_mut() {
            *v = exp_f32_normal_or_zero::<true>(*v - mr);
        }
    }
    for (r, xr) in x.iter().enumerate() {
        let mut sv = _mm512_loadu_ps(xr.as_ptr());
        for cc in 1..C16 {
            sv = _mm512_add_ps(sv, _mm512_loadu_ps(xr.as_ptr().add(16 * cc)));
        }
        let lo = _mm512_castps512_ps256(sv);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(sv)));
        let inv = _mm512_set1_ps(1.0 / sum_halves(_mm256_add_ps(lo, hi)));
        let dst = probs.as_mut_ptr().add((i0 + r) * n);
        for cc in 0..C16 {
            let p = _mm512_mul_ps(_mm512_loadu_ps(xr.as_ptr().add(16 * cc)), inv);
            // Zero below the smallest normal; NaN fails the comparison and stays.
            let p = _mm512_mask_mov_ps(p, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(p, tiny), _mm512_setzero_ps());
            _mm512_mask_storeu_ps(dst.add(16 * cc), mask(cc), p);
        }
    }
}
