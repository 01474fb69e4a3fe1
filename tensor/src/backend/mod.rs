//! Device backends: the op set the GPU inference path is written against, and three
//! implementations of it.
//!
//! - [`reference::Reference`]: every op as a composition of the tensor crate's CPU ops (the slow
//!   twin every kernel is tested against, and what checks the model's device graph on any machine);
//! - [`emulator::Emulator`]: the `kernels` crate's bodies run under the thread-grid emulator on
//!   host memory (so kernels are checked against the reference without a GPU);
//! - `cuda::Cuda` (feature `cuda`): the same kernels compiled to PTX, launched on an NVIDIA GPU.
//!
//! A [`DevTensor`] is always contiguous and row-major: `buf` + `offset` (elements) + `shape`.
//! Reshapes and slices along the first dimension are free; everything else (a permutation) is an
//! explicit op that writes a new buffer, so the cost of each layout change is visible.
//!
//! Element types: device tensors hold `F32` or `BF16`. Every tensor argument of an op has the
//! op's element type (that of its first input) except where the op says `f32`: linear biases and
//! attention's bias and mask stay f32 in bf16 models (the kernels read them as f32). Kernels
//! compute in f32 and round once on store, and the reference does the same.

pub(crate) mod check;
pub mod conformance;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod emulator;
mod kernel_args;
pub mod reference;

use crate::ops::Activation;
use crate::{DType, Error, Result, Tensor};
use std::sync::Arc;

/// A contiguous device tensor: a shared buffer, an element offset into it and a shape.
pub struct DevTensor<B: Backend + ?Sized> {
    buf: Arc<B::Buf>,
    offset: usize,
    shape: Vec<usize>,
    dtype: DType,
}

impl<B: Backend + ?Sized> Clone for DevTensor<B> {
    fn clone(&self) -> Self {
        DevTensor { buf: self.buf.clone(), offset: self.offset, shape: self.shape.clone(), dtype: self.dtype }
    }
}

impl<B: Backend + ?Sized> std::fmt::Debug for DevTensor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevTensor({:?}, {:?}, offset {})", self.shape, self.dtype, self.offset)
    }
}

impl<B: Backend + ?Sized> DevTensor<B> {
    /// Wraps a buffer (backends only). `buf` must hold `offset + shape.product()` elements.
    pub fn from_parts(buf: Arc<B::Buf>, offset: usize, shape: Vec<usize>, dtype: DType) -> Self {
        DevTensor { buf, offset, shape, dtype }
    }
    pub fn buf(&self) -> &Arc<B::Buf> {
        &self.buf
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
    /// The same elements under another shape of equal size (free).
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if shape.iter().product::<usize>() != self.elem_count() {
            return Err(Error::ShapeMismatch {
                op: "DevTensor::reshape",
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
            });
        }
        Ok(DevTensor { buf: self.buf.clone(), offset: self.offset, shape: shape.to_vec(), dtype: self.dtype })
    }
    /// Rows `start..start + len` of the first dimension (free: contiguous).
    pub fn narrow0(&self, start: usize, len: usize) -> Result<Self> {
        let rows = *self.shape.first().unwrap_or(&0);
        if self.shape.is_empty() || start + len > rows {
            return Err(Error::BadShape {
                op: "DevTensor::narrow0",
                shape: self.shape.clone(),
                expected: format!("at least {} rows in dim 0", start + len),
            });
        }
        let inner: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = len;
        Ok(DevTensor { buf: self.buf.clone(), offset: self.offset + start * inner, shape, dtype: self.dtype })
    }
    /// Index `i` of the first dimension, which is dropped (free).
    pub fn select0(&self, i: usize) -> Result<Self> {
        let t = self.narrow0(i, 1)?;
        t.reshape(&self.shape[1..])
    }
}

/// `a op b` with `b` repeated over `a` (`b`'s element count divides `a`'s: a bias over the last
/// dims, a positional table over the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Mul,
}

/// The op set of the device inference path. Each op checks shapes and dtypes and returns an
/// error naming itself; outputs are new contiguous tensors of the first input's dtype.
pub trait Backend: Send + Sync {
    /// The backend's buffer (host memory, or device memory returned to a pool on drop).
    type Buf: Send + Sync;

    /// What it runs on, for reports ("reference (CPU)", "emulator", "NVIDIA H100 ...").
    fn name(&self) -> String;
    /// Copies a host tensor (any float dtype, any layout) as `dtype` (`F32` or `BF16`).
    fn upload(&self, t: &Tensor, dtype: DType) -> Result<DevTensor<Self>>;
    /// Copies back as a host tensor of the same dtype and shape (waits for queued work).
    fn download(&self, x: &DevTensor<Self>) -> Result<Tensor>;
    /// Waits for queued work (timing).
    fn synchronize(&self) -> Result<()>;

    /// `x` with its dims permuted (`out.shape[i] = x.shape[perm[i]]`), written contiguously.
    fn permute(&self, x: &DevTensor<Self>, perm: &[usize]) -> Result<DevTensor<Self>>;
    /// `act(x wᵀ + bias)`: x `[.., k]`, w `[n, k]` (x's dtype), bias `[n]` f32 -> `[.., n]`.
    fn linear(
        &self,
        x: &DevTensor<Self>,
        w: &DevTensor<Self>,
        bias: Option<&DevTensor<Self>>,
        act: Activation,
    ) -> Result<DevTensor<Self>>;
    /// `act(x wᵀ + bias) + residual`, residual of the output's shape and dtype: a Swin MLP's
    /// `x + fc2(h)` or a decoder's `q + out_proj(a)` in one pass. This default is the composite
    /// twin (a linear, then an add); the device backends fuse the add into the GEMM's output pass,
    /// so the sum is rounded once (in bf16 the two differ by at most that rounding).
    fn linear_add(
        &self,
        x: &DevTensor<Self>,
        w: &DevTensor<Self>,
        bias: Option<&DevTensor<Self>>,
        act: Activation,
        residual: &DevTensor<Self>,
    ) -> Result<DevTensor<Self>> {
        check::linear_add(x, w, bias, residual)?;
        self.binary(&self.linear(x, w, bias, act)?, residual, BinaryOp::Add)
    }
    /// `out[i] = a[i] op b[i % b.len]`.
    fn binary(&self, a: &DevTensor<Self>, b: &DevTensor<Self>, op: BinaryOp) -> Result<DevTensor<Self>>;
    /// `act(x)` elementwise.
    fn activation(&self, x: &DevTensor<Self>, act: Activation) -> Result<DevTensor<Self>>;
    /// LayerNorm over the last dim with weight and bias `[C]`.
    fn layer_norm(
        &self,
        x: &DevTensor<Self>,
        w: &DevTensor<Self>,
        b: &DevTensor<Self>,
        eps: f32,
    ) -> Result<DevTensor<Self>>;
    /// LayerNorm2d over the channels of NCHW `x`, weight and bias `[C]`.
    fn layer_norm2d(
        &self,
        x: &DevTensor<Self>,
        w: &DevTensor<Self>,
        b: &DevTensor<Self>,
        eps: f32,
    ) -> Result<DevTensor<Self>>;
    /// Softmax over the last dim.
    fn softmax_rows(&self, x: &DevTensor<Self>) -> Result<DevTensor<Self>>;
    /// Multi-head `softmax(scale q kᵀ + bias + mask) v` on token-major activations, as Linears
    /// write them: q `[B, nq, heads·d]`, k and v `[B, nk, heads·d]` (head h in columns
    /// `h·d..(h+1)·d`), bias `[heads, nq, nk]` f32, mask `[nm, nq, nk]` f32 (batch item b uses
    /// mask `b % nm`) -> `[B, nq, heads·d]`, ready for the output projection. Head dims 8, 16, 32.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &DevTensor<Self>,
        k: &DevTensor<Self>,
        v: &DevTensor<Self>,
        heads: usize,
        bias: Option<&DevTensor<Self>>,
        mask: Option<&DevTensor<Self>>,
        scale: f32,
    ) -> Result<DevTensor<Self>>;
    /// The same with q, k and v packed in one Linear's output `[B, n, 3·heads·d]` (Swin's qkv,
    /// read in place) -> `[B, n, heads·d]`.
    fn attention_packed(
        &self,
        qkv: &DevTensor<Self>,
        heads: usize,
        bias: Option<&DevTensor<Self>>,
        mask: Option<&DevTensor<Self>>,
        scale: f32,
    ) -> Result<DevTensor<Self>>;
    /// Swin's shift + window partition: `[B, H, W, C]` -> `[B·nW, ws², C]` after rolling by
    /// `-shift` in H and W.
    fn window_partition(&self, x: &DevTensor<Self>, window: usize, shift: usize) -> Result<DevTensor<Self>>;
    /// The inverse: `[B·nW, ws², C]` -> `[B, H, W, C]` (`hw` = (H, W)), rolled back by `+shift`.
    fn window_reverse(
        &self,
        x: &DevTensor<Self>,
        hw: (usize, usize),
        window: usize,
        shift: usize,
    ) -> Result<DevTensor<Self>>;
    /// `residual + window_reverse(x)`: Swin's attention-branch residual. The default is the
    /// composite twin; the device backends add in the gather's pass (the same single rounding).
    fn window_reverse_add(
        &self,
        x: &DevTensor<Self>,
        hw: (usize, usize),
        window: usize,
        shift: usize,
        residual: &DevTensor<Self>,
    ) -> Result<DevTensor<Self>> {
        check::window_reverse_add(x, hw, window, shift, residual)?;
        self.binary(residual, &self.window_reverse(x, hw, window, shift)?, BinaryOp::Add)
    }
    /// Swin's patch merging gather: `[B, H, W, C]` -> `[B, H/2, W/2, 4C]`, order x0, x1, x2, x3.
    fn patch_merge(&self, x: &DevTensor<Self>) -> Result<DevTensor<Self>>;
    /// Bilinear resize of NCHW `x` to `size`, `align_corners=False`.
    fn upsample_bilinear(&self, x: &DevTensor<Self>, size: (usize, usize)) -> Result<DevTensor<Self>>;
    /// The MLP-fusion sum: NHWC maps `[B, h_i, w_i, C]` each resized bilinearly
    /// (`align_corners=False`; the identity at equal size) to `size` and added: `[B, H, W, C]`.
    fn upsample_sum_nhwc(&self, maps: &[&DevTensor<Self>], size: (usize, usize)) -> Result<DevTensor<Self>>;
    /// ConvTranspose2d, kernel 2, stride 2: NCHW `x`, weight `[Cin, Cout, 2, 2]`, bias `[Cout]`.
    fn conv_transpose2x2(
        &self,
        x: &DevTensor<Self>,
        w: &DevTensor<Self>,
        bias: &DevTensor<Self>,
    ) -> Result<DevTensor<Self>>;
    /// The parsing head's hypernetwork product: h `[B, M, C]`, u `[B, C, P]` -> `[B, M, P]`.
    fn hyper_product(&self, h: &DevTensor<Self>, u: &DevTensor<Self>) -> Result<DevTensor<Self>>;
}

/// Checks that every tensor has the dtype `want`, naming the op.
pub(crate) fn expect_dtype<B: Backend + ?Sized>(op: &'static str, want: DType, ts: &[&DevTensor<B>]) -> Result<()> {
    for t in ts {
        if t.dtype() != want {
            return Err(Error::DTypeMismatch { op, lhs: want, rhs: t.dtype() });
        }
    }
    Ok(())
}

/// Device tensors hold f32 or bf16.
pub fn expect_device_dtype(op: &'static str, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::BF16 => Ok(()),
        d => Err(Error::UnsupportedDType { op, dtype: d }),
    }
}
