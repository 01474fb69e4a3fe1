//! Elementwise unary ops and activations.
use crate::{Result, Tensor};

impl Tensor {
    pub fn neg(&self) -> Result<Tensor> { todo!() }
    pub fn exp(&self) -> Result<Tensor> { todo!() }
    pub fn log(&self) -> Result<Tensor> { todo!() }
    pub fn sqrt(&self) -> Result<Tensor> { todo!() }
    pub fn sin(&self) -> Result<Tensor> { todo!() }
    pub fn cos(&self) -> Result<Tensor> { todo!() }
    pub fn acos(&self) -> Result<Tensor> { todo!() }
    pub fn tanh(&self) -> Result<Tensor> { todo!() }
    pub fn abs(&self) -> Result<Tensor> { todo!() }
    pub fn sqr(&self) -> Result<Tensor> { todo!() }
    pub fn recip(&self) -> Result<Tensor> { todo!() }
    pub fn sigmoid(&self) -> Result<Tensor> { todo!() }
    pub fn relu(&self) -> Result<Tensor> { todo!() }
    /// Exact (erf) GELU.
    pub fn gelu(&self) -> Result<Tensor> { todo!() }
    /// x * mul + add.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> { todo!() }
    pub fn powf(&self, e: f64) -> Result<Tensor> { todo!() }
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> { todo!() }
    /// PReLU with one slope per channel (dim 1), or a single slope.
    pub fn prelu(&self, weight: &Tensor) -> Result<Tensor> { todo!() }
}
