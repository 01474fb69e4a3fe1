//! Binary ops with broadcasting (tensor::ops::binary).

use super::{mask, no_rule, scalar, sum_to_shape, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

/// Binary ops: each input's gradient is summed back to its own (pre-broadcast) shape.
pub(super) fn backward(op: &Op, xs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<InputGrads> {
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
