//! Interpolation of NCHW images: bilinear (align_corners=False, no antialias) and area.
use crate::{Result, Tensor};

impl Tensor {
    pub fn interpolate_bilinear(&self, size: (usize, usize)) -> Result<Tensor> { todo!() }
    /// PyTorch's mode='area' (adaptive average pooling).
    pub fn interpolate_area(&self, size: (usize, usize)) -> Result<Tensor> { todo!() }
}
