//! Pooling and interpolation of NCHW images: the gradient goes back along the forward's weights,
//! through the backward primitives beside each forward in the tensor crate.

use super::{no_rule, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    x.expect_rank("image op backward", 4)?;
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let dx = match op {
        // dx = g routed to the first maximum of each window (beside the forward in
        // tensor::ops::pool)
        Op::MaxPool2d { kernel, stride, padding, .. } => g.max_pool2d_backward(x, *kernel, *stride, *padding)?,
        // y[i, j] = sum wy(i, p) wx(j, q) x[p, q]  =>  dx[p, q] = sum wy(i, p) wx(j, q) g[i, j]
        // (beside the forward in tensor::ops::interp)
        Op::InterpolateBilinear => g.interpolate_bilinear_backward((h, w))?,
        // the same, with adaptive average pooling's box weights
        Op::InterpolateArea => g.interpolate_area_backward((h, w))?,
        other => return Err(no_rule(other)),
    };
    Ok(vec![Some(dx)])
}
