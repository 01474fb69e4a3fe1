//! layer_norm and layer_norm2d (tensor::ops::norm): a composition of tensor ops.

use super::{no_rule, sum_to_shape, InputGrads};
use crate::op::Op;
use tensor::layout::resolve_dim;
use tensor::{Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    match op {
        // see layer_norm_grad
        Op::LayerNorm { eps, has_weight, has_bias } => {
            layer_norm_grad(xs, g, x.rank().saturating_sub(1), *eps, *has_weight, *has_bias)
        }
        Op::LayerNorm2d { eps, has_weight, has_bias } => layer_norm_grad(xs, g, 1, *eps, *has_weight, *has_bias),
        other => Err(no_rule(other)),
    }
}

/// Layer norm over dim `d` (the last dim, or channels of NCHW), weight and bias laid along d.
/// With xhat = (x - mean) * rstd and dxhat = g * weight:
///   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),  dweight = sum g xhat,  dbias = sum g.
fn layer_norm_grad(xs: &[Tensor], g: &Tensor, d: usize, eps: f64, has_w: bool, has_b: bool) -> Result<InputGrads> {
    let x = &xs[0];
    let di = resolve_dim("layer_norm backward", d as isize, x.rank())? as isize;
    // Parameters [D] viewed as [D, 1, ..] so they broadcast along dim d.
    let trailing = x.rank() - 1 - di as usize;
    let along_d = |p: &Tensor| -> Result<Tensor> {
        let mut s = vec![p.elem_count()];
        s.extend(std::iter::repeat_n(1, trailing));
        p.reshape(&s)
    };
    let mean = x.mean(&[di], true)?;
    let xc = x.sub(&mean)?;
    let rstd = xc.sqr()?.mean(&[di], true)?.affine(1.0, eps)?.sqrt()?.recip()?;
    let xhat = xc.mul(&rstd)?;
    let dxhat = if has_w { g.mul(&along_d(&xs[1])?)? } else { g.clone() };
    let m1 = dxhat.mean(&[di], true)?;
    let m2 = dxhat.mul(&xhat)?.mean(&[di], true)?;
    let dx = rstd.mul(&dxhat.sub(&m1)?.sub(&xhat.mul(&m2)?)?)?;
    let mut out = vec![Some(dx)];
    let param_grad = |t: Tensor, p: &Tensor| -> Result<Tensor> {
        let pb = along_d(p)?;
        sum_to_shape(&t, pb.shape())?.reshape(p.shape())
    };
    if has_w {
        out.push(Some(param_grad(g.mul(&xhat)?, &xs[1])?));
    }
    if has_b {
        out.push(Some(param_grad(g.clone(), &xs[xs.len() - 1])?));
    }
    Ok(out)
}
