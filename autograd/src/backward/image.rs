//! Pooling and interpolation of NCHW images: the gradient goes back along the forward's weights.

use super::{from_f32, no_rule, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    x.expect_rank("image op backward", 4)?;
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let dx = match op {
        // dx = g routed to the first maximum of each window
        Op::MaxPool2d { kernel, stride, padding, .. } => max_pool_grad(x, g, *kernel, *stride, *padding)?,
        // y[i, j] = sum wy(i, p) wx(j, q) x[p, q]  =>  dx[p, q] = sum wy(i, p) wx(j, q) g[i, j]
        // (beside the forward in tensor::ops::interp)
        Op::InterpolateBilinear => g.interpolate_bilinear_backward((h, w))?,
        // the same, with adaptive average pooling's box weights
        Op::InterpolateArea => g.interpolate_area_backward((h, w))?,
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
