//! Unary ops and activations (tensor::ops::unary), PReLU included; GELU is in `gelu.rs`.

use super::{mask, no_rule, scalar, sum_to_shape, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

/// x is the input, y the output.
pub(super) fn backward(op: &Op, xs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    let dt = x.dtype();
    let dx = match op {
        // d(-x) = -1
        Op::Neg => g.neg()?,
        // d exp(x) = exp(x) = y
        Op::Exp => g.mul(y)?,
        // d log(x) = 1/x
        Op::Log => g.div(x)?,
        // d sqrt(x) = 1 / (2 sqrt(x)) = 1 / (2y)
        Op::Sqrt => g.div(&y.affine(2.0, 0.0)?)?,
        // d sin(x) = cos(x)
        Op::Sin => g.mul(&x.cos()?)?,
        // d cos(x) = -sin(x)
        Op::Cos => g.mul(&x.sin()?)?.neg()?,
        // d acos(x) = -1 / sqrt(1 - x²)
        Op::Acos => g.div(&x.sqr()?.affine(-1.0, 1.0)?.sqrt()?)?.neg()?,
        // d tanh(x) = 1 - y²
        Op::Tanh => g.mul(&y.sqr()?.affine(-1.0, 1.0)?)?,
        // d |x| = sign(x) (0 at 0)
        Op::Abs => g.mul(&sign(x)?)?,
        // d x² = 2x
        Op::Sqr => g.mul(&x.affine(2.0, 0.0)?)?,
        // d (1/x) = -1/x² = -y²
        Op::Recip => g.mul(&y.sqr()?)?.neg()?,
        // d sigmoid(x) = y (1 - y)
        Op::Sigmoid => g.mul(&y.mul(&y.affine(-1.0, 1.0)?)?)?,
        // d relu(x) = [x > 0]
        Op::Relu => g.mul(&mask(x.gt(&scalar(0.0, dt)), dt)?)?,
        // d (a x + b) = a
        Op::Affine { mul } => g.affine(*mul, 0.0)?,
        // d x^e = e x^(e-1)
        Op::Powf { e } => g.mul(&x.powf(e - 1.0)?.affine(*e, 0.0)?)?,
        // d clamp(x, lo, hi) = [lo <= x <= hi]
        Op::Clamp { lo, hi } => {
            let inside = mask(x.ge(&scalar(*lo, dt)), dt)?.mul(&mask(x.le(&scalar(*hi, dt)), dt)?)?;
            g.mul(&inside)?
        }
        // prelu(x, w) = x if x > 0 else w x:  dx = [x > 0] + w [x <= 0],  dw = sum x [x <= 0]
        Op::Prelu => return prelu(x, &xs[1], g),
        other => return Err(no_rule(other)),
    };
    Ok(vec![Some(dx)])
}

/// sign(x) as -1, 0 or 1.
fn sign(x: &Tensor) -> Result<Tensor> {
    let (dt, zero) = (x.dtype(), scalar(0.0, x.dtype()));
    mask(x.gt(&zero), dt)?.sub(&mask(x.lt(&zero), dt)?)
}

/// PReLU with one slope per channel (dim 1; dim 0 for rank-1 input) or a single slope.
fn prelu(x: &Tensor, w: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let dt = x.dtype();
    let rank = x.rank();
    let ch = if rank >= 2 { 1 } else { 0 };
    // The weight laid along the channel dim so that it broadcasts against x.
    let wb = if w.elem_count() == 1 || rank == 0 {
        w.reshape(&vec![1; rank])?
    } else {
        let mut s = vec![1; rank];
        s[ch] = w.elem_count();
        w.reshape(&s)?
    };
    let pos = mask(x.gt(&scalar(0.0, dt)), dt)?;
    let neg = pos.affine(-1.0, 1.0)?;
    let dx = g.mul(&pos.add(&neg.mul(&wb)?)?)?;
    let gw = g.mul(&x.mul(&neg)?)?;
    let dw = sum_to_shape(&gw, wb.shape())?.reshape(w.shape())?;
    Ok(vec![Some(dx), Some(dw)])
}
