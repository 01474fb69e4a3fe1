//! Concatenation and indexing (tensor::ops::index): gradients go back to where the elements came
//! from; index_select and gather by scatter-adds (private helpers on contiguous f32 data).

use super::{from_f32, no_rule, InputGrads};
use crate::op::Op;
use tensor::cpu::parallel::new_vecs;
use tensor::layout::{contiguous_strides, resolve_dim};
use tensor::{Error, Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], g: &Tensor) -> Result<InputGrads> {
    let x = &xs[0];
    let dx = match op {
        // cat: each input gets its own slice of g along dim
        Op::Cat { dim } => {
            let d = resolve_dim("cat backward", *dim, g.rank())?;
            let mut start = 0;
            let mut out = Vec::with_capacity(xs.len());
            for t in xs {
                let len = t.shape()[d];
                out.push(Some(g.narrow(d as isize, start, len)?));
                start += len;
            }
            return Ok(out);
        }
        // stack: input i gets g[.., i, ..] along dim
        Op::Stack { dim } => {
            let d = resolve_dim("stack backward", *dim, g.rank())? as isize;
            return xs.iter().enumerate().map(|(i, t)| Ok(Some(g.narrow(d, i, 1)?.reshape(t.shape())?))).collect();
        }
        // roll by s: g rolled back by -s
        Op::Roll { shifts, dims } => g.roll(&shifts.iter().map(|s| -s).collect::<Vec<_>>(), dims)?,
        // index_select: dx[.., index[j], ..] += g[.., j, ..]
        Op::IndexSelect { dim, index } => index_select_grad(x.shape(), g, *dim, index)?,
        // gather: dx[.., index[p], ..] += g[p] (p's other coordinates kept)
        Op::Gather { dim, index } => gather_grad(x, g, *dim, index)?,
        other => return Err(no_rule(other)),
    };
    Ok(vec![Some(dx)])
}

/// Index values as usize, each checked against the size of the indexed dim.
fn indices(op: &'static str, index: &Tensor, size: usize) -> Result<Vec<usize>> {
    index
        .to_f64_vec()?
        .into_iter()
        .map(|i| {
            if i >= 0.0 && (i as usize) < size {
                Ok(i as usize)
            } else {
                Err(Error::InvalidArgument { op, msg: format!("index {i} out of range for size {size}") })
            }
        })
        .collect()
}

/// Scatter-add of g [outer, k, inner] into dx [outer, n, inner] at rows index[j].
/// The gradient of `index_select(dim, index)` on an input of shape `x_shape`.
pub(super) fn index_select_grad(x_shape: &[usize], g: &Tensor, dim: isize, index: &Tensor) -> Result<Tensor> {
    const OP: &str = "index_select backward";
    let d = resolve_dim(OP, dim, x_shape.len())?;
    let n = x_shape[d];
    let idx = indices(OP, index, n)?;
    let inner: usize = x_shape[d + 1..].iter().product();
    // Borrowed when g is contiguous f32 (Swin's window gathers): no copy of the gradient.
    let gv = g.f32_slice()?;
    let (g_block, x_block) = (idx.len() * inner, n * inner);
    // One task per outer block (an image of Swin's window gathers), each adding its indices in
    // order: the same sums as one loop. No index leaves the blocks zero; an empty x makes none.
    let ([out], _) = new_vecs(x_shape.iter().product(), x_block, true, |start, [xb]| {
        let gb = &gv[start / x_block * g_block..][..g_block];
        for (j, &i) in idx.iter().enumerate() {
            for (o, v) in xb[i * inner..(i + 1) * inner].iter_mut().zip(&gb[j * inner..(j + 1) * inner]) {
                *o += v;
            }
        }
    });
    from_f32(out, x_shape, g.dtype())
}

/// Scatter-add of g into dx: the element at position p of index goes to p with coordinate `dim`
/// replaced by index[p].
fn gather_grad(x: &Tensor, g: &Tensor, dim: isize, index: &Tensor) -> Result<Tensor> {
    const OP: &str = "gather backward";
    let d = resolve_dim(OP, dim, x.rank())?;
    let idx = indices(OP, index, x.shape()[d])?;
    let gv = g.to_f32_vec()?;
    let xs = contiguous_strides(x.shape());
    let ishape = index.shape();
    let mut coord = vec![0usize; ishape.len()];
    let mut out = vec![0f32; x.elem_count()];
    for (&i, &v) in idx.iter().zip(&gv) {
        let off: usize =
            coord.iter().zip(&xs).enumerate().map(|(k, (&c, &s))| if k == d { i * s } else { c * s }).sum();
        out[off] += v;
        // Next row-major position of the index tensor.
        for k in (0..coord.len()).rev() {
            coord[k] += 1;
            if coord[k] < ishape[k] {
                break;
            }
            coord[k] = 0;
        }
    }
    from_f32(out, x.shape(), g.dtype())
}
