//! Every derivative rule, one module per op family, one arm per op beside its formula. The modules
//! are named after the tensor crate's op families (`tensor/src/ops/{unary,gelu,binary,reduce,
//! softmax,norm,index,matmul,attention,conv,pool,interp}.rs`; `view.rs` after `tensor/src/view.rs`). `g` is
//! dL/d(out); each rule returns dL/d(input) for every input in order (None where no gradient
//! flows), already reduced to the input's shape and in the input's dtype. `needs[i]` says whether
//! input i wants its gradient: the rules whose input gradients are products of their own (matmul,
//! linear, conv) skip the unwanted ones (a frozen weight, the constant input image); the others
//! compute every gradient and the engine drops the unwanted.
//!
//! Rules recompute what they need from the inputs' values and the output value (nothing extra is
//! saved at forward time). The numerical backward primitives (max-pool routing, bilinear and area
//! backward, conv weight gradients, GELU's derivative) live beside their forwards in the tensor
//! crate; the scatter-adds of the indexing ops' backwards (strided slices, index_select, gather)
//! are private helpers in `index.rs` and `view.rs` working on contiguous f32 data.
//!
//! Ties: max/min reductions and maximum/minimum split the gradient evenly between tied elements
//! (as PyTorch does); max_pool2d routes it to the first maximum of each window (as PyTorch does).

mod attention;
mod binary;
mod conv;
mod gelu;
mod index;
mod interp;
mod matmul;
mod norm;
mod pool;
mod reduce;
mod softmax;
mod unary;
mod view;

use crate::op::Op;
use crate::var::Var;
use tensor::layout::resolve_dim;
use tensor::{DType, Error, Result, Tensor};

pub(crate) type InputGrads = Vec<Option<Tensor>>;

pub(crate) fn backward_op(op: &Op, inputs: &[Var], needs: &[bool], out: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let xs: Vec<Tensor> = inputs.iter().map(Var::value).collect();
    use Op::*;
    match op {
        Neg
        | Exp
        | Log
        | Sqrt
        | Sin
        | Cos
        | Acos
        | Tanh
        | Abs
        | Sqr
        | Recip
        | Sigmoid
        | Relu
        | Affine { .. }
        | Powf { .. }
        | Clamp { .. }
        | Prelu => unary::backward(op, &xs, out, g),
        Gelu => gelu::backward(op, &xs, g),
        Add | Sub | Mul | Div | Maximum | Minimum | Where { .. } => binary::backward(op, &xs, out, g),
        Sum { .. } | Mean { .. } | Max { .. } | Min { .. } => reduce::backward(op, &xs, out, g),
        Softmax { .. } | LogSoftmax { .. } => softmax::backward(op, out, g),
        LayerNorm { .. } | LayerNorm2d { .. } => norm::backward(op, &xs, g),
        Cat { .. } | Stack { .. } | Roll { .. } | IndexSelect { .. } | Gather { .. } => index::backward(op, &xs, g),
        Reshape
        | Permute { .. }
        | Narrow { .. }
        | SliceStep { .. }
        | BroadcastTo
        | Unsqueeze { .. }
        | Squeeze { .. }
        | Contiguous
        | ToDType { .. } => view::backward(op, &xs, g),
        Matmul | Linear { .. } | GeluLinear { .. } | AddLinear { .. } | UnpermuteLinearAdd { .. } => {
            matmul::backward(op, &xs, needs, out, g)
        }
        Attention | WindowAttention { .. } => attention::backward(op, &xs, g),
        Conv2d { .. } | ConvTranspose2d { .. } => conv::backward(op, &xs, needs, g),
        MaxPool2d { .. } => pool::backward(op, &xs, g),
        InterpolateBilinear | InterpolateArea => interp::backward(op, &xs, g),
    }
}

/// `Some(f())` when the input wants its gradient, else `None` without computing it.
fn if_needed(needed: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    needed.then(f).transpose()
}

/// The error for an op handed to a family that has no rule for it (a dispatch bug).
fn no_rule(op: &Op) -> Error {
    Error::InvalidArgument { op: "backward", msg: format!("no derivative rule for {op:?}") }
}

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
    if dims.is_empty() {
        return g.reshape(shape);
    }
    g.sum(&dims, true)?.reshape(shape)
}

/// A rank-0 constant that broadcasts against anything of `dtype`.
fn scalar(v: f64, dtype: DType) -> Tensor {
    Tensor::full(v, &[], dtype)
}

/// A u8 mask (from a comparison) as 0/1 values of `dtype`.
fn mask(m: Result<Tensor>, dtype: DType) -> Result<Tensor> {
    Ok(m?.to_dtype(dtype))
}

/// f32 results of a helper as a tensor of `dtype`.
fn from_f32(v: Vec<f32>, shape: &[usize], dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, shape)?.to_dtype(dtype))
}

/// The reduced dims of a reduction, resolved and sorted (empty = every dim).
fn reduced_dims(op: &'static str, dims: &[isize], rank: usize) -> Result<Vec<usize>> {
    let mut ds: Vec<usize> = if dims.is_empty() {
        (0..rank).collect()
    } else {
        dims.iter().map(|&d| resolve_dim(op, d, rank)).collect::<Result<_>>()?
    };
    ds.sort_unstable();
    ds.dedup();
    Ok(ds)
}

/// A reduction's output gradient broadcast back over the reduced dims of `in_shape`.
fn expand_reduced(g: &Tensor, in_shape: &[usize], dims: &[usize]) -> Result<Tensor> {
    let mut keep = in_shape.to_vec();
    for &d in dims {
        keep[d] = 1;
    }
    g.reshape(&keep)?.broadcast_to(in_shape)
}
