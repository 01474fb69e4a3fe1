//! max_pool2d (tensor::ops::pool): the gradient goes to each window's first maximum, through
//! `Tensor::max_pool2d_backward` beside the forward.

use super::{no_rule, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    x.expect_rank("image op backward", 4)?;
    match op {
        // dx = g routed to the first maximum of each window
        Op::MaxPool2d { kernel, stride, padding, .. } => {
            Ok(vec![Some(g.max_pool2d_backward(x, *kernel, *stride, *padding)?)])
        }
        other => Err(no_rule(other)),
    }
}
