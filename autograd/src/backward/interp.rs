//! Bilinear and area interpolation (tensor::ops::interp): the gradient goes back along the
//! forward's weights, through the backward primitives beside the forwards.

use super::{no_rule, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    x.expect_rank("image op backward", 4)?;
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let dx = match op {
        // y[i, j] = sum wy(i, p) wx(j, q) x[p, q]  =>  dx[p, q] = sum wy(i, p) wx(j, q) g[i, j]
        Op::InterpolateBilinear => g.interpolate_bilinear_backward((h, w))?,
        // the same, with adaptive average pooling's box weights
        Op::InterpolateArea => g.interpolate_area_backward((h, w))?,
        other => return Err(no_rule(other)),
    };
    Ok(vec![Some(dx)])
}
