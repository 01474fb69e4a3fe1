//! LayerNorm over the last dimension, and per pixel over channels (LayerNorm2d, NCHW).
use crate::{Result, Tensor};

impl Tensor {
    /// Normalise over the last dim: (x - mean) / sqrt(var + eps) * weight + bias (biased variance).
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> { todo!() }
    /// Normalise NCHW over C for each pixel; weight and bias have shape [C].
    pub fn layer_norm2d(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> { todo!() }
}
