//! conv2d: im2col tiles times the weight, one GEMM per tile.

use super::{check_bias, check_common, from_f32_vec, index_range, Geom, COL_BUDGET, PAR_MIN_FLOATS};
use crate::cpu::gemm::sgemm;
use crate::profile;
use crate::{bail, Error, Result, Tensor};
use rayon::prelude::*;

impl Tensor {
    /// x [N,C,H,W], weight [O,C,kh,kw], bias [O].
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Conv, 0.0, 0.0);
        conv2d_impl(self, weight, bias, stride, padding, COL_BUDGET)
    }
}

/// conv2d with an explicit im2col tile budget (tests force tiny tiles through it).
pub(super) fn conv2d_impl(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize),
    padding: (usize, usize),
    col_budget: usize,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let ([n, c, h, w], [o, wc, kh, kw]) = check_common(OP, x, weight, stride)?;
    if wc != c {
        return Err(Error::ShapeMismatch { op: OP, lhs: x.shape().to_vec(), rhs: weight.shape().to_vec() });
    }
    check_bias(OP, x, bias, o)?;
    let (ph, pw) = padding;
    if h + 2 * ph < kh || w + 2 * pw < kw {
        bail!(
            OP,
            "kernel {kh}x{kw} is larger than the padded input {}x{} (input {:?}, weight {:?}, padding {padding:?})",
            h + 2 * ph,
            w + 2 * pw,
            x.shape(),
            weight.shape()
        );
    }
    let (sh, sw) = stride;
    let g = Geom { c, h, w, kh, kw, sh, sw, ph, pw, ho: (h + 2 * ph - kh) / sh + 1, wo: (w + 2 * pw - kw) / sw + 1 };
    let out_shape = [n, o, g.ho, g.wo];
    if n == 0 || o == 0 {
        return Ok(Tensor::zeros(&out_shape, x.dtype()));
    }
    let xs = x.f32_slice()?;
    let wt = weight.f32_slice()?;
    let b = bias.map(|b| b.f32_slice()).transpose()?;
    let mut out = vec![0f32; n * o * g.ho * g.wo];
    out.par_chunks_mut(o * g.ho * g.wo)
        .zip(xs.par_chunks(c * h * w))
        .for_each(|(y, xi)| conv2d_image(&g, xi, &wt, b.as_deref(), o, y, col_budget));
    Ok(from_f32_vec(out, &out_shape, x.dtype()))
}

/// One image: y[O, Ho·Wo] = bias + W[O, K] · col[K, Ho·Wo], K = C·kh·kw.
fn conv2d_image(g: &Geom, x: &[f32], wt: &[f32], bias: Option<&[f32]>, o: usize, y: &mut [f32], col_budget: usize) {
    let l = g.ho * g.wo;
    let k = g.c * g.kh * g.kw;
    for (oi, row) in y.chunks_mut(l).enumerate() {
        row.fill(bias.map_or(0.0, |b| b[oi]));
    }
    // 1x1, stride 1, no padding: the image itself is the column matrix [C, H·W].
    if g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 {
        sgemm(o, l, k, wt, k, 1, x, l, 1, y, l, true);
        return;
    }
    let rows_per_tile = (col_budget / (k * g.wo)).clamp(1, g.ho);
    let mut col = vec![0f32; k * rows_per_tile * g.wo];
    for r0 in (0..g.ho).step_by(rows_per_tile) {
        let rows = rows_per_tile.min(g.ho - r0);
        let nl = rows * g.wo;
        im2col(g, x, r0, rows, &mut col[..k * nl]);
        // The tile's product lands in columns r0·Wo.. of every output channel row.
        sgemm(o, nl, k, wt, k, 1, &col, nl, 1, &mut y[r0 * g.wo..], l, true);
    }
}

/// col[(c·kh + a)·kw + b, (i - r0)·Wo + j] = x[c, i·sh + a - ph, j·sw + b - pw] (0 outside),
/// for output rows i in r0..r0+rows. With kernel == stride and no padding (patch embedding)
/// this is a pure strided gather: no zero fill, no bounds work per element.
pub(super) fn im2col(g: &Geom, x: &[f32], r0: usize, rows: usize, col: &mut [f32]) {
    let nl = rows * g.wo;
    let kk = g.kh * g.kw;
    // Rows of col are independent: split them over threads when there is enough to copy
    // (a batch of one image gets no parallelism from the batch loop).
    let min_rows = (PAR_MIN_FLOATS / nl.max(1)).max(1);
    col.par_chunks_mut(nl).with_min_len(min_rows).enumerate().for_each(|(q, dst_row)| {
        let (ci, a, b) = (q / kk, q % kk / g.kw, q % g.kw);
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        let js = index_range(g.wo, g.w, g.sw, g.pw, b);
        for (i, dst) in dst_row.chunks_exact_mut(g.wo).enumerate() {
            let ih = (r0 + i) * g.sh + a;
            if ih < g.ph || ih - g.ph >= g.h {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[(ih - g.ph) * g.w..(ih - g.ph + 1) * g.w];
            dst[..js.start].fill(0.0);
            dst[js.end..].fill(0.0);
            // Input column of output column j is j·sw + b - pw; js keeps it in range.
            let first = js.start * g.sw + b - g.pw;
            if g.sw == 1 {
                dst[js.clone()].copy_from_slice(&src[first..first + js.len()]);
            } else {
                for (t, d) in dst[js.clone()].iter_mut().enumerate() {
                    *d = src[first + t * g.sw];
                }
            }
        }
    });
}
