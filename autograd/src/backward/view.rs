//! Views and casts (tensor/src/view.rs, `Tensor::to_dtype`): reshape, permute, narrow, step
//! slices, broadcasting, casts.

use super::{from_f32, no_rule, sum_to_shape, InputGrads};
use crate::op::Op;
use tensor::layout::resolve_dim;
use tensor::{Layout, Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    let dx = match op {
        // same elements, other shape
        Op::Reshape | Op::Unsqueeze { .. } | Op::Squeeze { .. } | Op::Contiguous => g.reshape(x.shape())?,
        // permute by p: g permuted by p⁻¹
        Op::Permute { dims } => {
            let mut inv = vec![0; dims.len()];
            for (i, &d) in dims.iter().enumerate() {
                inv[d] = i;
            }
            g.permute(&inv)?
        }
        // narrow: g in the window, 0 elsewhere
        Op::Narrow { dim, start, len } => slice_grad(x, g, *dim, *start, *len, 1)?,
        // x[start:end:step]: g at every step-th position, 0 elsewhere
        Op::SliceStep { dim, start, end, step } => {
            slice_grad(x, g, *dim, *start, (end - start).div_ceil(*step), *step)?
        }
        // broadcast: summed back over the broadcast dims
        Op::BroadcastTo => sum_to_shape(g, x.shape())?,
        // a cast: the gradient cast back (integers take none)
        Op::ToDType { from } => {
            if !from.is_float() {
                return Ok(vec![None]);
            }
            g.to_dtype(*from)
        }
        other => return Err(no_rule(other)),
    };
    Ok(vec![Some(dx)])
}

/// Zeros of x's shape with g written at x[.., start + i·step, ..] for i in 0..count.
fn slice_grad(x: &Tensor, g: &Tensor, dim: isize, start: usize, count: usize, step: usize) -> Result<Tensor> {
    let d = resolve_dim("slice backward", dim, x.rank())?;
    // The slice's own layout inside a contiguous buffer of x's shape says where each g element goes.
    let mut l = Layout::contiguous(x.shape());
    l.offset = start * l.strides[d];
    l.shape[d] = count;
    l.strides[d] *= step;
    let mut out = vec![0f32; x.elem_count()];
    for (off, v) in l.offsets().zip(g.to_f32_vec()?) {
        out[off] = v;
    }
    from_f32(out, x.shape(), g.dtype())
}
