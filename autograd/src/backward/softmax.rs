//! softmax and log_softmax (tensor::ops::softmax), from the output value.

use super::{no_rule, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

/// y is the output.
pub(super) fn backward(op: &Op, y: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let dx = match op {
        // dx = y (g - sum(g y))
        Op::Softmax { dim } => y.mul(&g.sub(&g.mul(y)?.sum(&[*dim], true)?)?)?,
        // dx = g - exp(y) sum(g)
        Op::LogSoftmax { dim } => g.sub(&y.exp()?.mul(&g.sum(&[*dim], true)?)?)?,
        other => return Err(no_rule(other)),
    };
    Ok(vec![Some(dx)])
}
