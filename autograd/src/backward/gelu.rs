//! GELU (tensor::ops::gelu): the rule is a call to the derivative beside the forward.

use super::{no_rule, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], g: &Tensor) -> Result<InputGrads> {
    match op {
        // d gelu(x) = Phi(x) + x phi(x)  (exact erf GELU; beside its forward in tensor::ops::gelu)
        Op::Gelu => Ok(vec![Some(xs[0].gelu_backward(g)?)]),
        other => Err(no_rule(other)),
    }
}
