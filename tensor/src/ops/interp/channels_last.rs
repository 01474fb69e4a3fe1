//! Bilinear interpolation and its backward on channels-last images: an [N, C, H, W] view whose
//! memory is NHWC (the permute of a token-major [N, H, W, C] map, as the fusion resizes each
//! stage). The planar path would first copy the view into NCHW planes, and give back planes
//! that the caller permutes again (a strided add, then a copy for the next Linear). Here every
//! output pixel is a blend of whole rows of C contiguous values, and the result is
//! channels-last too (a view of an NHWC buffer).
//!
//! Each value is the planar path's expression in the planar path's order (width first, then
//! height; the backward's sums from zero in the same tap order), so the bits are the same: the
//! tests compare the two.

use super::{lerp_table, Lerp, Taps};
use crate::cpu::parallel::{new_vec, new_vec_uninit};
use crate::cpu::simd::dispatch;
use crate::ops::conv::from_f32_vec;
use crate::{Result, Tensor};
use std::mem::MaybeUninit;

/// Whether `x` [N, C, H, W] is a channels-last view: not contiguous itself, but its NHWC
/// permutation is.
pub(super) fn is_channels_last(x: &Tensor) -> bool {
    x.rank() == 4 && !x.is_contiguous() && x.permute(&[0, 2, 3, 1]).is_ok_and(|t| t.is_contiguous())
}

/// An NHWC buffer of `dims` [N, C, H, W] as the channels-last view [N, C, H, W].
fn channels_last(v: Vec<f32>, [n, c, h, w]: [usize; 4], like: &Tensor) -> Result<Tensor> {
    from_f32_vec(v, &[n, h, w, c], like.dtype()).permute(&[0, 3, 1, 2])
}

/// The forward on a channels-last `x` of `dims`, to (ho, wo): one output row of one image per
/// chunk.
pub(super) fn bilinear(x: &Tensor, [n, c, h, w]: [usize; 4], (ho, wo): (usize, usize)) -> Result<Tensor> {
    let nhwc = x.permute(&[0, 2, 3, 1])?;
    let xs = nhwc.f32_slice()?;
    let (rows, cols) = (lerp_table(h, ho), lerp_table(w, wo));
    let row_len = wo * c;
    // SAFETY: `blend_row` writes each of the row's wo·c values.
    let out = unsafe {
        new_vec_uninit(n * ho * row_len, row_len, |start, out| {
            let (img, y) = (start / row_len / ho, start / row_len % ho);
            let ry = rows[y];
            let plane = &xs[img * h * w * c..][..h * w * c];
            let (top, bottom) = (&plane[ry.i0 * w * c..][..w * c], &plane[ry.i1 * w * c..][..w * c]);
            blend_row(out, top, bottom, ry, &cols, c);
        })
    };
    channels_last(out, [n, c, ho, wo], x)
}

/// One output row: for column x, `ry.l0 · (cx.l0 · top[cx.i0] + cx.l1 · top[cx.i1]) + ry.l1 ·
/// (the same on bottom)`, for each of the c channels: the planar path's width pass, then its
/// height pass, per value.
fn blend_row(out: &mut [MaybeUninit<f32>], top: &[f32], bottom: &[f32], ry: Lerp, cols: &[Lerp], c: usize) {
    #[inline(always)]
    fn body(out: &mut [MaybeUninit<f32>], top: &[f32], bottom: &[f32], ry: Lerp, cols: &[Lerp], c: usize) {
        for (o, cx) in out.chunks_exact_mut(c).zip(cols) {
            let (t0, t1) = (&top[cx.i0 * c..][..c], &top[cx.i1 * c..][..c]);
            let (b0, b1) = (&bottom[cx.i0 * c..][..c], &bottom[cx.i1 * c..][..c]);
            for ((((o, t0), t1), b0), b1) in o.iter_mut().zip(t0).zip(t1).zip(b0).zip(b1) {
                let (t, b) = (cx.l0 * t0 + cx.l1 * t1, cx.l0 * b0 + cx.l1 * b1);
                o.write(ry.l0 * t + ry.l1 * b);
            }
        }
    }
    dispatch!(body(out: &mut [MaybeUninit<f32>], top: &[f32], bottom: &[f32], ry: Lerp, cols: &[Lerp], c: usize))
}

/// For each input index, the (output index, weight) pairs that read it, in the order the planar
/// adjoint adds them (output index ascending, then tap order).
fn inverse(taps: &Taps, len_in: usize) -> Taps {
    let mut inv = vec![Vec::new(); len_in];
    for (o, list) in taps.iter().enumerate() {
        for &(i, wt) in list {
            inv[i].push((o, wt));
        }
    }
    inv
}

/// The adjoint of a separable resampling on a channels-last gradient `g` of `dims` [N, C, Ho,
/// Wo], to input planes `in_hw`: along the width into [N, Ho, W, C] (one row per chunk), then
/// along the height (one input row per chunk), each value summed from zero in the planar
/// adjoint's order.
pub(super) fn adjoint(
    g: &Tensor,
    [n, c, ho, wo]: [usize; 4],
    (h, w): (usize, usize),
    ty: &Taps,
    tx: &Taps,
) -> Result<Tensor> {
    let nhwc = g.permute(&[0, 2, 3, 1])?;
    let gs = nhwc.f32_slice()?;
    let (inv_y, inv_x) = (inverse(ty, h), inverse(tx, w));
    let row_len = w * c;
    let by_width = new_vec(n * ho * row_len, row_len, |start, out| {
        let r = start / row_len;
        gather_row(out, &gs[r * wo * c..][..wo * c], |q| &inv_x[q], c);
    });
    let dx = new_vec(n * h * row_len, row_len, |start, out| {
        let (img, p) = (start / row_len / h, start / row_len % h);
        gather_row(out, &by_width[img * ho * row_len..][..ho * row_len], |_| &inv_y[p], row_len);
    });
    channels_last(dx, [n, c, h, w], g)
}

/// `out` (zeroed) gets, for each of its pieces of `len` values (piece q), `Σ wt · src[o]` over
/// `sources(q)`'s (o, wt) in order, src's pieces `len` apart.
fn gather_row<'t>(out: &mut [f32], src: &[f32], sources: impl Fn(usize) -> &'t [(usize, f32)], len: usize) {
    #[inline(always)]
    fn add_scaled(out: &mut [f32], src: &[f32], wt: f32) {
        #[inline(always)]
        fn body(out: &mut [f32], src: &[f32], wt: f32) {
            out.iter_mut().zip(src).for_each(|(o, s)| *o += wt * s);
        }
        dispatch!(body(out: &mut [f32], src: &[f32], wt: f32))
    }
    for (q, piece) in out.chunks_exact_mut(len).enumerate() {
        for &(o, wt) in sources(q) {
            add_scaled(piece, &src[o * len..][..len], wt);
        }
    }
}
