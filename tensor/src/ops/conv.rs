//! conv2d and conv_transpose2d (NCHW).
use crate::{Result, Tensor};

impl Tensor {
    /// x [N,C,H,W], weight [O,C,kh,kw], bias [O].
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> { todo!() }
    /// x [N,C,H,W], weight [C,O,kh,kw] (PyTorch layout), bias [O].
    pub fn conv_transpose2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> { todo!() }
}
