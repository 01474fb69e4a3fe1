//! softmax and log_softmax along one dimension.
use crate::{Result, Tensor};

impl Tensor {
    pub fn softmax(&self, dim: isize) -> Result<Tensor> { todo!() }
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> { todo!() }
}
