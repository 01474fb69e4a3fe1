//! Concatenate, stack, cyclic roll, index_select and gather.
use crate::{Result, Tensor};

impl Tensor {
    pub fn cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> { todo!() }
    pub fn stack(tensors: &[&Tensor], dim: isize) -> Result<Tensor> { todo!() }
    /// torch.roll: element i moves to (i + shift) mod n along each dim.
    pub fn roll(&self, shifts: &[isize], dims: &[isize]) -> Result<Tensor> { todo!() }
    /// Pick slices along `dim` at the i64 indices of the 1-D `index`.
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Result<Tensor> { todo!() }
    /// torch.gather: out[..i..] = self[..index[..i..]..] along `dim`.
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> { todo!() }
}
