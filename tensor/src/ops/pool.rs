//! max_pool2d (NCHW) with PyTorch's ceil_mode rule.
use crate::{Result, Tensor};

impl Tensor {
    pub fn max_pool2d(&self, kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize), ceil_mode: bool) -> Result<Tensor> { todo!() }
}
