//! The window attention's two products on AVX-512 register tiles: rows of an n x n result in
//! C16 zmm (up to 64 columns), rows of d values in D16 zmm.

use super::{Dims, Rows, RowsMut};
use crate::cpu::gemm::pack::avx512::pack_transposed;
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

/// out_i = Σ_j m[i, j] x_j for d = 16·D16.
///
/// # Safety
/// The CPU must support AVX-512F; d == 16·D16; rows in bounds (checked by the caller).
#[target_feature(enable = "avx512f")]
pub unsafe fn weighted<const D16: usize>(m: &[f32], x: Rows, out: RowsMut, dims: Dims) {
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
                let p = _mm512_set1_ps(*m.get_unchecked((i0 + r) * n + j));
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
pub unsafe fn weighted_wide(m: &[f32], x: Rows, out: RowsMut, dims: Dims) {
    let (n, d) = (dims.n, dims.d);
    for d0 in (0..d).step_by(16) {
        let xs = Rows { offset: x.offset + d0, ..x };
        let outs = RowsMut { data: &mut *out.data, offset: out.offset + d0, stride: out.stride };
        weighted::<1>(m, xs, outs, Dims { d: 16, ..dims });
    }
    let _ = n;
}
