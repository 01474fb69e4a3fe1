//! Pooling and interpolation of NCHW images: the gradient goes back along the forward's weights.

use super::{from_f32, no_rule, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    x.expect_rank("image op backward", 4)?;
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let (ho, wo) = (y.shape()[2], y.shape()[3]);
    let dx = match op {
        // dx = g routed to the first maximum of each window
        Op::MaxPool2d { kernel, stride, padding, .. } => max_pool_grad(x, g, *kernel, *stride, *padding)?,
        // y[i, j] = sum wy(i, p) wx(j, q) x[p, q]  =>  dx[p, q] = sum wy(i, p) wx(j, q) g[i, j]
        Op::InterpolateBilinear => separable_grad(x, g, &bilinear_taps(h, ho), &bilinear_taps(w, wo))?,
        // the same, with adaptive average pooling's box weights
        Op::InterpolateArea => separable_grad(x, g, &area_taps(h, ho), &area_taps(w, wo))?,
        other => return Err(no_rule(other)),
    };
    Ok(vec![Some(dx)])
}

/// Scatter every output gradient to the first maximum of its window (ceil-mode windows are
/// clipped to the input like PyTorch's; padding never wins).
fn max_pool_grad(
    x: &Tensor,
    g: &Tensor,
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
) -> Result<Tensor> {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let (ho, wo) = (g.shape()[2], g.shape()[3]);
    let xv = x.to_f32_vec()?;
    let gv = g.to_f32_vec()?;
    let mut out = vec![0f32; xv.len()];
    if h * w == 0 || ho * wo == 0 {
        return from_f32(out, x.shape(), g.dtype());
    }
    for ((plane, dplane), gplane) in
        xv.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)).zip(gv.chunks_exact(ho * wo))
    {
        for i in 0..ho {
            let (r0, r1) = ((i * sh).saturating_sub(ph), (i * sh + kh).saturating_sub(ph).min(h));
            for j in 0..wo {
                let (c0, c1) = ((j * sw).saturating_sub(pw), (j * sw + kw).saturating_sub(pw).min(w));
                let mut best: Option<(usize, f32)> = None;
                for r in r0..r1 {
                    for c in c0..c1 {
                        let v = plane[r * w + c];
                        // First maximum wins; NaN propagates like a maximum (PyTorch).
                        if best.is_none_or(|(_, b)| v > b || v.is_nan() && !b.is_nan()) {
                            best = Some((r * w + c, v));
                        }
                    }
                }
                if let Some((at, _)) = best {
                    dplane[at] += gplane[i * wo + j];
                }
            }
        }
    }
    from_f32(out, x.shape(), g.dtype())
}

/// Input taps (index, weight) of each output index along one axis.
type Taps = Vec<Vec<(usize, f32)>>;

/// align_corners=False: src = (dst + 0.5)·in/out - 0.5, clamped at 0; neighbours i0 and
/// min(i0 + 1, in - 1) weighted by distance.
fn bilinear_taps(n_in: usize, n_out: usize) -> Taps {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|d| {
            let src = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            let l1 = (src - i0 as f64) as f32;
            vec![(i0, 1.0 - l1), (i1, l1)]
        })
        .collect()
}

/// Adaptive average pooling: output i averages inputs floor(i·in/out) .. ceil((i+1)·in/out).
fn area_taps(n_in: usize, n_out: usize) -> Taps {
    (0..n_out)
        .map(|i| {
            let start = i * n_in / n_out;
            let end = ((i + 1) * n_in).div_ceil(n_out);
            let wt = 1.0 / (end - start) as f32;
            (start..end).map(|p| (p, wt)).collect()
        })
        .collect()
}

/// dx[n, c, p, q] = sum over taps of wy·wx·g[n, c, i, j].
fn separable_grad(x: &Tensor, g: &Tensor, ty: &Taps, tx: &Taps) -> Result<Tensor> {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let (ho, wo) = (ty.len(), tx.len());
    let gv = g.to_f32_vec()?;
    let mut out = vec![0f32; x.elem_count()];
    if h * w == 0 || ho * wo == 0 {
        return from_f32(out, x.shape(), g.dtype());
    }
    for (dplane, gplane) in out.chunks_exact_mut(h * w).zip(gv.chunks_exact(ho * wo)) {
        for (i, row_taps) in ty.iter().enumerate() {
            for (j, col_taps) in tx.iter().enumerate() {
                let gij = gplane[i * wo + j];
                for &(p, wy) in row_taps {
                    for &(q, wx) in col_taps {
                        dplane[p * w + q] += wy * wx * gij;
                    }
                }
            }
        }
    }
    from_f32(out, x.shape(), g.dtype())
}
