//! conv2d and conv_transpose2d (tensor::ops::conv): the input gradients are the adjoint conv,
//! the weight gradients `Tensor::conv2d_weight_grad` (an im2col GEMM, beside the forward).

use super::{if_needed, no_rule, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], needs: &[bool], g: &Tensor) -> Result<InputGrads> {
    let (x, w) = (&xs[0], &xs[1]);
    match op {
        // dx = conv_transpose2d(g, w) (output padding restores the floored rows),
        // dw[o, c, a, b] = sum g[n, o, i, j] x[n, c, i s + a - p, j s + b - p],  db = sum g
        Op::Conv2d { stride, padding, has_bias } => {
            let [_, _, h, wd] = dims4(x)?;
            let [_, _, kh, kw] = dims4(w)?;
            let [_, _, ho, wo] = dims4(g)?;
            let out_pad =
                (h + 2 * padding.0 - ((ho - 1) * stride.0 + kh), wd + 2 * padding.1 - ((wo - 1) * stride.1 + kw));
            let dx = if_needed(needs[0], || g.conv_transpose2d_ext(w, None, *stride, *padding, out_pad))?;
            // dw [O, C·kh·kw] = g [O, N·L] · col(x)ᵀ
            let dw = if_needed(needs[1], || {
                Ok(g.conv2d_weight_grad(x, (kh, kw), *stride, *padding)?.reshape(w.shape())?.to_dtype(w.dtype()))
            })?;
            with_bias(vec![dx, dw], g, *has_bias, needs)
        }
        // dx = conv2d(g, w) (same weight layout read as [C, O, kh, kw]),
        // dw[c, o, a, b] = sum x[n, c, i, j] g[n, o, i s + a - p, j s + b - p],  db = sum g
        Op::ConvTranspose2d { stride, padding, has_bias } => {
            let [_, _, kh, kw] = dims4(w)?;
            let dx = if_needed(needs[0], || g.conv2d(w, None, *stride, *padding))?;
            // dw [C, O·kh·kw] = x [C, N·H·W] · col(g)ᵀ
            let dw = if_needed(needs[1], || {
                Ok(x.conv2d_weight_grad(g, (kh, kw), *stride, *padding)?.reshape(w.shape())?.to_dtype(w.dtype()))
            })?;
            with_bias(vec![dx, dw], g, *has_bias, needs)
        }
        other => Err(no_rule(other)),
    }
}

fn dims4(t: &Tensor) -> Result<[usize; 4]> {
    t.expect_rank("conv backward", 4)?;
    let s = t.shape();
    Ok([s[0], s[1], s[2], s[3]])
}

/// Appends the bias gradient when the op has a bias (`None` when the bias is frozen).
fn with_bias(mut out: InputGrads, g: &Tensor, has_bias: bool, needs: &[bool]) -> Result<InputGrads> {
    if has_bias {
        out.push(if_needed(needs[2], || g.sum(&[0, 2, 3], false))?);
    }
    Ok(out)
}
