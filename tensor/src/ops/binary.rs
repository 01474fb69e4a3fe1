//! Elementwise binary ops with NumPy broadcasting, comparisons and `where_cond`.
use crate::{Result, Tensor};

impl Tensor {
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    /// Comparisons return u8 tensors (1 where true).
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> { todo!() }
    /// `self` is a u8 condition; picks `on_true` where nonzero, else `on_false` (all broadcast).
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> { todo!() }
}
