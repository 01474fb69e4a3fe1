//! Reductions (tensor::ops::reduce): sum, mean, max, min.

use super::{expand_reduced, mask, no_rule, reduced_dims, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

/// x is the input, y the output.
pub(super) fn backward(op: &Op, xs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    let dx = match op {
        // d sum(x) / dx = 1 (broadcast back over the reduced dims)
        Op::Sum { dims, .. } => expand_reduced(g, x.shape(), &reduced_dims("sum", dims, x.rank())?)?,
        // d mean(x) / dx = 1/n
        Op::Mean { dims, .. } => {
            let ds = reduced_dims("mean", dims, x.rank())?;
            let n: usize = ds.iter().map(|&d| x.shape()[d]).product();
            expand_reduced(g, x.shape(), &ds)?.affine(1.0 / n.max(1) as f64, 0.0)?
        }
        // d max(x) / dx = [x == max] / (number of tied maxima)
        Op::Max { dims, .. } => extremum_grad("max", x, y, g, dims)?,
        // d min(x) / dx = [x == min] / (number of tied minima)
        Op::Min { dims, .. } => extremum_grad("min", x, y, g, dims)?,
        other => return Err(no_rule(other)),
    };
    Ok(vec![Some(dx)])
}

/// Gradient of max/min over `dims`: split evenly between the elements equal to the extremum.
fn extremum_grad(op: &'static str, x: &Tensor, y: &Tensor, g: &Tensor, dims: &[isize]) -> Result<Tensor> {
    let ds = reduced_dims(op, dims, x.rank())?;
    let yb = expand_reduced(y, x.shape(), &ds)?;
    let hit = mask(x.eq(&yb), x.dtype())?;
    let dims_i: Vec<isize> = ds.iter().map(|&d| d as isize).collect();
    let count = hit.sum(&dims_i, true)?;
    expand_reduced(g, x.shape(), &ds)?.mul(&hit)?.div(&count)
}
