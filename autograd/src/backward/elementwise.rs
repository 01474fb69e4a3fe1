//! Elementwise rules: unary ops and activations, and binary ops with broadcasting.

use super::{mask, no_rule, scalar, sum_to_shape, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

/// x is the input, y the output.
pub(super) fn unary(op: &Op, xs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<InputGrads> {
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
        // d gelu(x) = Phi(x) + x phi(x)  (exact erf GELU; beside its forward in tensor::ops::gelu)
        Op::Gelu => x.gelu_backward(g)?,
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

/// Binary ops: each input's gradient is summed back to its own (pre-broadcast) shape.
pub(super) fn binary(op: &Op, xs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let (a, b) = (&xs[0], &xs[1]);
    let dt = g.dtype();
    let (da, db) = match op {
        // d(a + b) = da + db
        Op::Add => (g.clone(), g.clone()),
        // d(a - b) = da - db
        Op::Sub => (g.clone(), g.neg()?),
        // d(ab) = b da + a db
        Op::Mul => (g.mul(b)?, g.mul(a)?),
        // d(a/b) = da / b - (a/b²) db = da / b - (y/b) db
        Op::Div => {
            let ga = g.div(b)?;
            let gb = ga.mul(y)?.neg()?;
            (ga, gb)
        }
        // d max(a, b) = [a > b] da + [a < b] db, ties split in half
        Op::Maximum => {
            let wa = tie_split(a.gt(b), a.eq(b), dt)?;
            (g.mul(&wa)?, g.mul(&wa.affine(-1.0, 1.0)?)?)
        }
        // d min(a, b) = [a < b] da + [a > b] db, ties split in half
        Op::Minimum => {
            let wa = tie_split(a.lt(b), a.eq(b), dt)?;
            (g.mul(&wa)?, g.mul(&wa.affine(-1.0, 1.0)?)?)
        }
        // where(c, a, b): da = [c] g, db = [!c] g
        Op::Where { cond } => {
            let zero = scalar(0.0, dt);
            (cond.where_cond(g, &zero)?, cond.where_cond(&zero, g)?)
        }
        other => return Err(no_rule(other)),
    };
    Ok(vec![Some(sum_to_shape(&da, a.shape())?), Some(sum_to_shape(&db, b.shape())?)])
}

/// The share of the first operand: 1 where it wins, 1/2 on a tie, 0 where it loses.
fn tie_split(wins: Result<Tensor>, ties: Result<Tensor>, dt: tensor::DType) -> Result<Tensor> {
    mask(wins, dt)?.add(&mask(ties, dt)?.affine(0.5, 0.0)?)
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
