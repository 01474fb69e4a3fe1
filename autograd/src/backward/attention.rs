//! The fused attentions. Both rules are the tensor crate's, which recompute the probabilities
//! per head: dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(P ∘ dP)), then
//! - the decoder's plain attention (`attention_backward`, tensor::ops::cross_attention):
//!   dQ = dS K, dK = dSᵀ Q;
//! - Swin's window attention (`window_attention_backward`, tensor::ops::attention), with a
//!   scale, a bias and a mask: dBias = Σ_windows dS, dQ = scale · dS K, dK = scale · dSᵀ Q.

use super::{no_rule, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

/// xs: q, k, v (`Attention`), or the packed qkv, then the bias when present (`WindowAttention`).
pub(super) fn backward(op: &Op, xs: &[Tensor], g: &Tensor) -> Result<InputGrads> {
    if let Op::Attention = op {
        let (dq, dk, dv) = xs[0].attention_backward(&xs[1], &xs[2], g)?;
        return Ok(vec![Some(dq), Some(dk), Some(dv)]);
    }
    let Op::WindowAttention { heads, scale, mask, has_bias } = op else {
        return Err(no_rule(op));
    };
    let bias = has_bias.then(|| &xs[1]);
    let (dqkv, dbias) = xs[0].window_attention_backward(*heads, bias, mask.as_ref(), *scale, g)?;
    Ok(if *has_bias { vec![Some(dqkv), Some(dbias)] } else { vec![Some(dqkv)] })
}
