//! Swin's fused window attention (tensor::ops::attention). The rule is the tensor crate's
//! `window_attention_backward`, which recomputes the probabilities per window and head:
//! dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(P ∘ dP)), dBias = Σ_windows dS,
//! dQ = scale · dS K, dK = scale · dSᵀ Q.

use super::{no_rule, InputGrads};
use crate::op::Op;
use tensor::{Result, Tensor};

/// xs: the packed qkv, then the bias when present.
pub(super) fn backward(op: &Op, xs: &[Tensor], g: &Tensor) -> Result<InputGrads> {
    let Op::WindowAttention { heads, scale, mask, has_bias } = op else {
        return Err(no_rule(op));
    };
    let bias = has_bias.then(|| &xs[1]);
    let (dqkv, dbias) = xs[0].window_attention_backward(*heads, bias, mask.as_ref(), *scale, g)?;
    Ok(if *has_bias { vec![Some(dqkv), Some(dbias)] } else { vec![Some(dqkv)] })
}
