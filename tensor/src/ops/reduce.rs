//! Reductions over any set of axes.
use crate::{Result, Tensor};

impl Tensor {
    /// Sum over `dims` (negative allowed; empty = all dims).
    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> { todo!() }
    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> { todo!() }
    pub fn max(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> { todo!() }
    pub fn min(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> { todo!() }
    /// Index of the first maximum along `dim`, as i64.
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Result<Tensor> { todo!() }
    /// Sum of all elements, as a rank-0 tensor.
    pub fn sum_all(&self) -> Result<Tensor> { self.sum(&[], false) }
}
