//! Every derivative rule, one arm per op. `g` is dL/d(out); each arm returns dL/d(input) for
//! every input in order (None where no gradient flows), already reduced to the input's shape.

use crate::op::Op;
use crate::var::Var;
use tensor::{Error, Result, Tensor};

/// Sum a broadcast gradient back down to `shape` (the inverse of broadcasting).
pub(crate) fn sum_to_shape(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let lead = g.rank() - shape.len();
    let mut dims: Vec<isize> = (0..lead as isize).collect();
    for (i, &n) in shape.iter().enumerate() {
        if n == 1 && g.shape()[lead + i] != 1 {
            dims.push((lead + i) as isize);
        }
    }
    g.sum(&dims, true)?.reshape(shape)
}

pub(crate) fn backward_op(op: &Op, inputs: &[Var], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let x = || inputs[0].value();
    let _ = out;
    Ok(match op {
        // d(a+b) = da + db
        Op::Add => vec![Some(sum_to_shape(g, &inputs[0].shape())?), Some(sum_to_shape(g, &inputs[1].shape())?)],
        // d(a-b) = da - db
        Op::Sub => vec![Some(sum_to_shape(g, &inputs[0].shape())?), Some(sum_to_shape(&g.neg()?, &inputs[1].shape())?)],
        // d(a*b) = b da + a db
        Op::Mul => vec![
            Some(sum_to_shape(&g.mul(&inputs[1].value())?, &inputs[0].shape())?),
            Some(sum_to_shape(&g.mul(&x())?, &inputs[1].shape())?),
        ],
        // Views and copies: the gradient has the input's shape once reshaped.
        Op::Reshape | Op::Contiguous => vec![Some(g.reshape(&inputs[0].shape())?)],
        other => {
            return Err(Error::InvalidArgument { op: "backward", msg: format!("no derivative rule for {other:?}") })
        }
    })
}
