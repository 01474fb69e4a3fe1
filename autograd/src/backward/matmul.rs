//! matmul and linear (tensor::ops::matmul): compositions of tensor ops.

use super::{if_needed, mask, no_rule, scalar, sum_to_shape, InputGrads};
use crate::op::Op;
use tensor::ops::Activation;
use tensor::{Result, Tensor};

pub(super) fn backward(op: &Op, xs: &[Tensor], needs: &[bool], y: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let (x, w) = (&xs[0], &xs[1]);
    match op {
        // y = a b:  da = g bᵀ,  db = aᵀ g  (summed over broadcast batch dims)
        Op::Matmul => Ok(vec![
            if_needed(needs[0], || sum_to_shape(&g.matmul(&w.t()?)?, x.shape()))?,
            if_needed(needs[1], || sum_to_shape(&x.t()?.matmul(g)?, w.shape()))?,
        ]),
        // y = act(x wᵀ + b):  gz = g act'(z),  dx = gz w,  dw = gzᵀ x,  db = sum gz
        Op::Linear { act, has_bias } => {
            let gz = match act {
                Activation::None => g.clone(),
                // relu'(z) = [z > 0] = [y > 0]
                Activation::Relu => g.mul(&mask(y.gt(&scalar(0.0, y.dtype())), y.dtype())?)?,
                // gelu'(z) with z recomputed by the GEMM and consumed tile by tile, never stored
                // (the composite twin, linear then gelu_backward, is tested equal in the tensor crate)
                Activation::Gelu => x.linear_act_grad(w, xs.get(2).filter(|_| *has_bias), Activation::Gelu, g)?,
            };
            linear_grads(x, w, &gz, *has_bias, needs)
        }
        // y = gelu(z) wᵀ + b:  h = gelu(z) (recomputed, not stored),  dz = (g w) gelu'(z),
        // dw = gᵀ h,  db = sum g. Fed z by the layer before, whose Linear rule then has no GELU to
        // undo: one elementwise pass here instead of a second GEMM there (z recomputed).
        Op::GeluLinear { has_bias } => {
            let (n_in, n_out) = (w.shape()[1], w.shape()[0]);
            let z = x;
            let g2 = g.reshape(&[usize::MAX, n_out])?;
            // h and gelu'(z) from one evaluation of the GELU's pieces when both are wanted.
            let (h, dgelu) = match (needs[0], needs[1]) {
                (true, true) => {
                    let (h, d) = z.gelu_and_derivative()?;
                    (Some(h), Some(d))
                }
                (false, true) => (Some(z.gelu()?), None),
                _ => (None, None),
            };
            let mut out = vec![
                if_needed(needs[0], || match &dgelu {
                    // (g w) ⊙ gelu'(z) in the GEMM's output pass: g w is never stored.
                    Some(d) => g2.matmul_scaled(w, &d.reshape(&[g2.shape()[0], n_in])?)?.reshape(z.shape()),
                    None => z.gelu_backward(&g2.matmul(w)?.reshape(z.shape())?),
                })?,
                match h {
                    Some(h) => Some(g2.t()?.matmul(&h.reshape(&[g2.shape()[0], n_in])?)?),
                    None => None,
                },
            ];
            if *has_bias {
                out.push(if_needed(needs[2], || g2.sum(&[0], false))?);
            }
            Ok(out)
        }
        // y = r + layer(x):  dr = g, and the layer's own rule on the rest
        Op::AddLinear { gelu_input, has_bias } => {
            let layer = match gelu_input {
                true => Op::GeluLinear { has_bias: *has_bias },
                false => Op::Linear { act: Activation::None, has_bias: *has_bias },
            };
            let mut out = vec![if_needed(needs[0], || Ok(g.clone()))?];
            out.extend(backward(&layer, &xs[1..], &needs[1..], y, g)?);
            Ok(out)
        }
        // y = r + L[inverse] with L = x wᵀ + b in the permuted order:  dr = g, dL = index_select's
        // own rule (the composite's bits), then the linear rule on L
        Op::UnpermuteLinearAdd { has_bias, inverse, .. } => {
            let layer = Op::Linear { act: Activation::None, has_bias: *has_bias };
            let mut l_shape = xs[1].shape().to_vec();
            *l_shape.last_mut().expect("a linear input has a feature dim") = xs[2].shape()[0];
            let dl = super::index::index_select_grad(&l_shape, g, 1, inverse)?;
            let mut out = vec![if_needed(needs[0], || Ok(g.clone()))?];
            out.extend(backward(&layer, &xs[1..], &needs[1..], y, &dl)?);
            Ok(out)
        }
        other => Err(no_rule(other)),
    }
}

/// A linear layer's input gradients from gz = dL/d(x wᵀ + b): dx = gz w, dw = gzᵀ x, db = sum gz.
fn linear_grads(x: &Tensor, w: &Tensor, gz: &Tensor, has_bias: bool, needs: &[bool]) -> Result<InputGrads> {
    let (n_in, n_out) = (w.shape()[1], w.shape()[0]);
    let x2 = x.reshape(&[usize::MAX, n_in])?;
    let gz2 = gz.reshape(&[x2.shape()[0], n_out])?;
    let mut out =
        vec![if_needed(needs[0], || gz2.matmul(w)?.reshape(x.shape()))?, if_needed(needs[1], || gz2.t()?.matmul(&x2))?];
    if has_bias {
        out.push(if_needed(needs[2], || gz2.sum(&[0], false))?);
    }
    Ok(out)
}
