//! The reference backend: every device op as a composition of the tensor crate's CPU ops,
//! computed in f32 and rounded once to the op's dtype, as the kernels do. It is the slow twin
//! the kernels are checked against (`conformance`), and it runs the model's device graph on any
//! machine, so that graph is tested without a GPU.

use super::{check, Backend, BinaryOp, DevTensor};
use crate::ops::Activation;
use crate::{DType, Result, Tensor};
use std::sync::Arc;

#[derive(Debug, Default, Clone, Copy)]
pub struct Reference;

type T = DevTensor<Reference>;

impl Reference {
    /// The tensor a device tensor views, as f32.
    fn f32(&self, x: &T) -> Result<Tensor> {
        Ok(x.buf().narrow(0, x.offset(), x.elem_count())?.reshape(x.shape())?.to_dtype(DType::F32))
    }

    /// Wraps an f32 result, rounded to `dtype`.
    fn wrap(&self, t: Tensor, dtype: DType) -> Result<T> {
        let shape = t.shape().to_vec();
        let flat = t.to_dtype(dtype).contiguous().reshape(&[shape.iter().product()])?;
        Ok(DevTensor::from_parts(Arc::new(flat), 0, shape, dtype))
    }
}

fn act(x: Tensor, a: Activation) -> Result<Tensor> {
    match a {
        Activation::None => Ok(x),
        Activation::Relu => x.relu(),
        Activation::Gelu => x.gelu(),
    }
}

impl Reference {
    /// Head-major f32 attention: q `[B, H, nq, d]`, k and v `[B, H, nk, d]` -> `[B, H, nq, d]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&T>,
        mask: Option<&T>,
        scale: f32,
    ) -> Result<Tensor> {
        let (b, h, nq, nk) = (q.shape()[0], q.shape()[1], q.shape()[2], k.shape()[2]);
        let mut s = q.matmul(&k.transpose(2, 3)?)?.affine(scale as f64, 0.0)?;
        if let Some(bias) = bias {
            s = s.add(&self.f32(bias)?)?; // [H, nq, nk] over the batch
        }
        if let Some(m) = mask {
            let nm = m.shape()[0];
            let m = self.f32(m)?.unsqueeze(1)?; // [nm, 1, nq, nk]
            s = s.reshape(&[b / nm, nm, h, nq, nk])?.add(&m)?.reshape(&[b, h, nq, nk])?;
        }
        s.softmax(-1)?.matmul(v)
    }
}

impl Backend for Reference {
    type Buf = Tensor;

    fn name(&self) -> String {
        "reference (tensor CPU ops)".into()
    }

    fn upload(&self, t: &Tensor, dtype: DType) -> Result<T> {
        super::expect_device_dtype("upload", dtype)?;
        t.expect_float("upload")?;
        self.wrap(t.to_dtype(DType::F32), dtype)
    }

    fn download(&self, x: &T) -> Result<Tensor> {
        Ok(x.buf().narrow(0, x.offset(), x.elem_count())?.reshape(x.shape())?.contiguous())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn permute(&self, x: &T, perm: &[usize]) -> Result<T> {
        check::permute(x, perm)?;
        self.wrap(self.f32(x)?.permute(perm)?.contiguous(), x.dtype())
    }

    fn linear(&self, x: &T, w: &T, bias: Option<&T>, a: Activation) -> Result<T> {
        check::linear(x, w, bias)?;
        let b = bias.map(|b| self.f32(b)).transpose()?;
        self.wrap(self.f32(x)?.linear_act(&self.f32(w)?, b.as_ref(), a)?, x.dtype())
    }

    fn binary(&self, a: &T, b: &T, op: BinaryOp) -> Result<T> {
        check::binary(a, b)?;
        let (x, y) = (self.f32(a)?, self.f32(b)?);
        let out = match op {
            BinaryOp::Add => x.add(&y)?,
            BinaryOp::Mul => x.mul(&y)?,
        };
        self.wrap(out, a.dtype())
    }

    fn activation(&self, x: &T, a: Activation) -> Result<T> {
        check::elem("activation", x)?;
        self.wrap(act(self.f32(x)?, a)?, x.dtype())
    }

    fn layer_norm(&self, x: &T, w: &T, b: &T, eps: f32) -> Result<T> {
        check::rows("layer_norm", x, &[w, b])?;
        let y = self.f32(x)?.layer_norm(Some(&self.f32(w)?), Some(&self.f32(b)?), eps as f64)?;
        self.wrap(y, x.dtype())
    }

    fn layer_norm2d(&self, x: &T, w: &T, b: &T, eps: f32) -> Result<T> {
        check::layer_norm2d(x, w, b)?;
        let y = self.f32(x)?.layer_norm2d(Some(&self.f32(w)?), Some(&self.f32(b)?), eps as f64)?;
        self.wrap(y, x.dtype())
    }

    fn softmax_rows(&self, x: &T) -> Result<T> {
        check::rows("softmax_rows", x, &[])?;
        self.wrap(self.f32(x)?.softmax(-1)?, x.dtype())
    }

    fn attention(
        &self,
        q: &T,
        k: &T,
        v: &T,
        heads: usize,
        bias: Option<&T>,
        mask: Option<&T>,
        scale: f32,
    ) -> Result<T> {
        let (b, h, nq, nk, d) = check::attention(q, k, v, heads, bias, mask)?;
        // Token-major [B, n, H·d] -> head-major [B, H, n, d].
        let split = |t: &T, n: usize| -> Result<Tensor> { self.f32(t)?.reshape(&[b, n, h, d])?.permute(&[0, 2, 1, 3]) };
        let o = self.attend(&split(q, nq)?, &split(k, nk)?, &split(v, nk)?, bias, mask, scale)?;
        self.wrap(o.permute(&[0, 2, 1, 3])?.contiguous().reshape(&[b, nq, h * d])?, q.dtype())
    }

    fn attention_packed(&self, qkv: &T, heads: usize, bias: Option<&T>, mask: Option<&T>, scale: f32) -> Result<T> {
        let (b, h, n, d) = check::attention_packed(qkv, heads, bias, mask)?;
        // [B, n, 3, H, d] -> [3, B, H, n, d].
        let parts = self.f32(qkv)?.reshape(&[b, n, 3, h, d])?.permute(&[2, 0, 3, 1, 4])?;
        let o = self.attend(&parts.select(0, 0)?, &parts.select(0, 1)?, &parts.select(0, 2)?, bias, mask, scale)?;
        self.wrap(o.permute(&[0, 2, 1, 3])?.contiguous().reshape(&[b, n, h * d])?, qkv.dtype())
    }

    fn window_partition(&self, x: &T, window: usize, shift: usize) -> Result<T> {
        let [b, h, w, c] = check::windows(x, window, shift)?;
        let s = shift as isize;
        let y = self.f32(x)?.roll(&[-s, -s], &[1, 2])?;
        let (nh, nw) = (h / window, w / window);
        let y = y.reshape(&[b, nh, window, nw, window, c])?.permute(&[0, 1, 3, 2, 4, 5])?.contiguous();
        self.wrap(y.reshape(&[b * nh * nw, window * window, c])?, x.dtype())
    }

    fn window_reverse(&self, x: &T, hw: (usize, usize), window: usize, shift: usize) -> Result<T> {
        let [b, h, w, c] = check::window_reverse(x, hw, window, shift)?;
        let (nh, nw) = (h / window, w / window);
        let y = self.f32(x)?.reshape(&[b, nh, nw, window, window, c])?.permute(&[0, 1, 3, 2, 4, 5])?;
        let y = y.contiguous().reshape(&[b, h, w, c])?;
        let s = shift as isize;
        self.wrap(y.roll(&[s, s], &[1, 2])?, x.dtype())
    }

    fn patch_merge(&self, x: &T) -> Result<T> {
        let [b, h, w, c] = check::patch_merge(x)?;
        // [B, H/2, row parity, W/2, col parity, C] -> (col parity, row parity): Swin's x0..x3.
        let y = self.f32(x)?.reshape(&[b, h / 2, 2, w / 2, 2, c])?.permute(&[0, 1, 3, 4, 2, 5])?;
        self.wrap(y.contiguous().reshape(&[b, h / 2, w / 2, 4 * c])?, x.dtype())
    }

    fn upsample_bilinear(&self, x: &T, size: (usize, usize)) -> Result<T> {
        check::upsample_bilinear(x, size)?;
        self.wrap(self.f32(x)?.interpolate_bilinear(size)?, x.dtype())
    }

    fn upsample_sum_nhwc(&self, maps: &[&T], size: (usize, usize)) -> Result<T> {
        check::upsample_sum(maps, size)?;
        let mut sum: Option<Tensor> = None;
        for m in maps {
            let y = self.f32(m)?;
            let y = if (y.shape()[1], y.shape()[2]) == size {
                y
            } else {
                y.permute(&[0, 3, 1, 2])?.interpolate_bilinear(size)?.permute(&[0, 2, 3, 1])?
            };
            sum = Some(match sum {
                None => y.contiguous(),
                Some(s) => s.add(&y)?,
            });
        }
        self.wrap(sum.expect("at least one map"), maps[0].dtype())
    }

    fn conv_transpose2x2(&self, x: &T, w: &T, bias: &T) -> Result<T> {
        check::conv_transpose2x2(x, w, bias)?;
        let y = self.f32(x)?.conv_transpose2d(&self.f32(w)?, Some(&self.f32(bias)?), (2, 2), (0, 0))?;
        self.wrap(y, x.dtype())
    }

    fn hyper_product(&self, h: &T, u: &T) -> Result<T> {
        check::hyper_product(h, u)?;
        self.wrap(self.f32(h)?.matmul(&self.f32(u)?)?, h.dtype())
    }
}
