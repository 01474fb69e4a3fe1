//! Batched matmul with broadcast batch dims, and linear layers with fused epilogues.
use crate::ops::Activation;
use crate::{Result, Tensor};

impl Tensor {
    /// [..., m, k] @ [..., k, n] -> [..., m, n]; batch dims broadcast; transposed views need no copy.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    /// x [..., in] @ weight[out, in]^T + bias[out].
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> { self.linear_act(weight, bias, Activation::None) }
    /// linear followed by an activation, fused.
    pub fn linear_act(&self, weight: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> { todo!() }
}
