//! Reductions, softmax and the layer norms.

use super::{expand_reduced, mask, no_rule, reduced_dims, sum_to_shape, InputGrads};
use crate::op::Op;
use tensor::layout::resolve_dim;
use tensor::{Result, Tensor};

/// x is the input, y the output.
pub(super) fn backward(op: &Op, xs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    let dx = match op {
        // d sum(x) / dx = 1 (broadcast back over the reduced dims)
        Op::Sum { dims, .. } => expand_reduced(g, x.shape(), &reduced_dims("sum", dims, x.rank())?)?,
        // d mean(x) / dx = 1/n
        Op::Mean { dims, .. } => {
            let ds = reduced_dims("mean", dims, x.rank())?;
            let n: usize = ds.iter().map(|&d| x.shape()[d]).product();
            expand_reduced(g, x.shape(), &ds)?.affine(1.0 / n.max(1) as f64, 0.0)?
        }
        // d max(x) / dx = [x == max] / (number of tied maxima)
        Op::Max { dims, .. } => extremum_grad("max", x, y, g, dims)?,
        // d min(x) / dx = [x == min] / (number of tied minima)
        Op::Min { dims, .. } => extremum_grad("min", x, y, g, dims)?,
        // dx = y (g - sum(g y))
        Op::Softmax { dim } => y.mul(&g.sub(&g.mul(y)?.sum(&[*dim], true)?)?)?,
        // dx = g - exp(y) sum(g)
        Op::LogSoftmax { dim } => g.sub(&y.exp()?.mul(&g.sum(&[*dim], true)?)?)?,
        // see norm_grad
        Op::LayerNorm { eps, has_weight, has_bias } => {
            return norm_grad(xs, g, x.rank().saturating_sub(1), *eps, *has_weight, *has_bias)
        }
        Op::LayerNorm2d { eps, has_weight, has_bias } => return norm_grad(xs, g, 1, *eps, *has_weight, *has_bias),
        other => return Err(no_rule(other)),
    };
    Ok(vec![Some(dx)])
}

/// Gradient of max/min over `dims`: split evenly between the elements equal to the extremum.
fn extremum_grad(op: &'static str, x: &Tensor, y: &Tensor, g: &Tensor, dims: &[isize]) -> Result<Tensor> {
    let ds = reduced_dims(op, dims, x.rank())?;
    let yb = expand_reduced(y, x.shape(), &ds)?;
    let hit = mask(x.eq(&yb), x.dtype())?;
    let dims_i: Vec<isize> = ds.iter().map(|&d| d as isize).collect();
    let count = hit.sum(&dims_i, true)?;
    expand_reduced(g, x.shape(), &ds)?.mul(&hit)?.div(&count)
}

/// Layer norm over dim `d` (the last dim, or channels of NCHW), weight and bias laid along d.
/// With xhat = (x - mean) * rstd and dxhat = g * weight:
///   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),  dweight = sum g xhat,  dbias = sum g.
fn norm_grad(xs: &[Tensor], g: &Tensor, d: usize, eps: f64, has_w: bool, has_b: bool) -> Result<InputGrads> {
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
