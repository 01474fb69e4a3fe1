//! layer_norm and layer_norm2d (tensor::ops::norm). LayerNorm over the last dim uses the fused
//! `Tensor::layer_norm_backward` (one pass per row); `layer_norm_grad`, the same formula as a
//! composition of tensor ops, is its twin (tested against it below) and serves LayerNorm2d.

use super::{no_rule, sum_to_shape, InputGrads};
use crate::op::Op;
use tensor::layout::resolve_dim;
use tensor::{Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    match op {
        // see layer_norm_grad
        Op::LayerNorm { eps, has_weight, has_bias } => {
            let (dx, dw, db) = x.layer_norm_backward(has_weight.then(|| &xs[1]), g, *eps)?;
            let mut out = vec![Some(dx)];
            if *has_weight {
                out.push(Some(dw));
            }
            if *has_bias {
                out.push(Some(db));
            }
            Ok(out)
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

#[cfg(test)]
mod tests {
    use super::layer_norm_grad;
    use crate::op::Op;
    use tensor::{DType, Tensor};

    /// The fused rule against its composite twin on Swin-like rows and small odd ones, with
    /// every combination of weight and bias.
    #[test]
    fn fused_layer_norm_backward_equals_the_composite() {
        for (shape, seed) in [(vec![2, 3, 5], 1u64), (vec![4, 49, 128], 2), (vec![300, 512], 3)] {
            let d = *shape.last().unwrap();
            let x = Tensor::randn(&shape, seed, DType::F32).affine(3.0, -2.0).unwrap();
            let g = Tensor::randn(&shape, seed ^ 5, DType::F32);
            let (w, b) = (Tensor::randn(&[d], seed ^ 6, DType::F32), Tensor::randn(&[d], seed ^ 7, DType::F32));
            for (has_weight, has_bias) in [(true, true), (true, false), (false, true), (false, false)] {
                let mut xs = vec![x.clone()];
                xs.extend(has_weight.then(|| w.clone()));
                xs.extend(has_bias.then(|| b.clone()));
                let op = Op::LayerNorm { eps: 1e-5, has_weight, has_bias };
                let fused = super::backward(&op, &xs, &g).unwrap();
                let composite = layer_norm_grad(&xs, &g, shape.len() - 1, 1e-5, has_weight, has_bias).unwrap();
                assert_eq!(fused.len(), composite.len());
                for (i, (f, c)) in fused.iter().zip(&composite).enumerate() {
                    let (f, c) = (f.as_ref().unwrap().to_f64_vec().unwrap(), c.as_ref().unwrap().to_f64_vec().unwrap());
                    let scale = c.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
                    let err = f.iter().zip(&c).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
                    assert!(
                        err < 1e-5,
                        "{shape:?} weight {has_weight} bias {has_bias}: input {i} differs by {err:.2e} of its scale"
                    );
                }
            }
        }
    }
}
