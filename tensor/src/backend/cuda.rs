//! The CUDA backend: the kernels' PTX launched on an NVIDIA GPU through [`crate::cuda`].
//!
//! Each op picks the same kernel, geometry (the kernel module's `config`) and arguments as the
//! emulator backend, which runs the same bodies on the CPU in every test: the two files are
//! twins, op by op. Buffers come from the device's caching pool; a tensor's offset becomes a
//! pointer offset. All work goes to the device's stream; `download` and `synchronize` wait.

use super::kernel_args::*;
use super::{check, Backend, BinaryOp, DevTensor};
use crate::cuda::launch::args;
use crate::cuda::{CudaDevice, CudaError, DeviceBuffer};
use crate::ops::Activation;
use crate::{bf16, DType, Error, Result, Tensor};
use kernels::ctx::LaunchConfig;
use kernels::math::ACT_NONE;
use kernels::{attention, elementwise, fusion, gemm, gemm_tc, hyper, layernorm, permute, remap, softmax};
use std::sync::Arc;

/// Device memory holding `len` elements of `dtype` (F32 or BF16).
pub struct Buf {
    mem: DeviceBuffer<u8>,
    len: usize,
    dtype: DType,
}

impl Buf {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// One GPU. Cheap to clone (the device is shared).
#[derive(Clone)]
pub struct Cuda {
    dev: Arc<CudaDevice>,
}

type T = DevTensor<Cuda>;

fn device_err(op: &'static str) -> impl Fn(CudaError) -> Error {
    move |e| Error::Device { op, msg: e.to_string() }
}

/// The entry point of a kernel for an element type.
fn entry(f32_name: &'static str, bf16_name: &'static str, dtype: DType) -> &'static str {
    if dtype == DType::F32 {
        f32_name
    } else {
        bf16_name
    }
}

impl Cuda {
    /// Opens GPU `ordinal`; `CudaError::Unavailable` without a driver or device.
    pub fn new(ordinal: usize) -> std::result::Result<Cuda, CudaError> {
        Ok(Cuda { dev: CudaDevice::new(ordinal)? })
    }

    /// The backend on an already opened device.
    pub fn from_device(dev: Arc<CudaDevice>) -> Cuda {
        Cuda { dev }
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// A kernel argument: the device address of `t`'s first element, after checking that `t`
    /// lies inside its buffer with the buffer's dtype.
    fn ptr(&self, op: &'static str, t: &T) -> Result<u64> {
        let buf = t.buf();
        if t.dtype() != buf.dtype || t.offset() + t.elem_count() > buf.len {
            return Err(Error::Device { op, msg: format!("{t:?} does not fit its buffer of {}", buf.len) });
        }
        Ok(buf.mem.ptr() + (t.offset() * t.dtype().size_in_bytes()) as u64)
    }

    fn opt_ptr(&self, op: &'static str, t: Option<&T>) -> Result<u64> {
        t.map_or(Ok(0), |t| self.ptr(op, t))
    }

    fn alloc(&self, op: &'static str, shape: Vec<usize>, dtype: DType) -> Result<T> {
        let len: usize = shape.iter().product();
        let mem = self.dev.alloc::<u8>(len * dtype.size_in_bytes()).map_err(device_err(op))?;
        Ok(DevTensor::from_parts(Arc::new(Buf { mem, len, dtype }), 0, shape, dtype))
    }

    /// A new output, filled by one launch of `name` (skipped when empty: a launch needs a block).
    /// `args(out_ptr)` builds the argument list around the output's address.
    fn run(
        &self,
        op: &'static str,
        name: &'static str,
        cfg: LaunchConfig,
        shape: Vec<usize>,
        dtype: DType,
        launch: impl FnOnce(u64, LaunchConfig) -> std::result::Result<(), CudaError>,
    ) -> Result<T> {
        let out = self.alloc(op, shape, dtype)?;
        if out.elem_count() > 0 {
            let po = self.ptr(op, &out)?;
            launch(po, cfg).map_err(|e| Error::Device { op, msg: format!("{name}: {e}") })?;
        }
        Ok(out)
    }

    fn elementwise(&self, op: &'static str, a: &T, b: Option<&T>, code: u32, act: u32) -> Result<T> {
        let (n, nb) = (a.elem_count() as u32, b.map_or(1, |b| b.elem_count()) as u32);
        let (pa, pb) = (self.ptr(op, a)?, self.opt_ptr(op, b)?);
        let name = entry("ew_binary_f32", "ew_binary_bf16", a.dtype());
        self.run(op, name, elementwise::config(n as usize), a.shape().to_vec(), a.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![pa, pb, po, n, nb, code, act])
        })
    }
}

impl Cuda {
    /// The attention kernel on q, k, v addresses laid out as `s` says; output `[b, nq, h·d]`.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        op: &'static str,
        [pq, pk, pv]: [u64; 3],
        bias: Option<&T>,
        mask: Option<&T>,
        (b, h, nq, d): (usize, usize, usize, usize),
        s: attention::AttnShape,
        dtype: DType,
    ) -> Result<T> {
        let (pb, pm) = (self.opt_ptr(op, bias)?, self.opt_ptr(op, mask)?);
        // The instance that holds head dim d (check::attention has kept d <= 128).
        let (f32_name, bf16_name, cfg) = match attention::instance(d) {
            Some(8) => ("attention_d8_f32", "attention_d8_bf16", attention::config::<8>(b, h, nq)),
            Some(16) => ("attention_d16_f32", "attention_d16_bf16", attention::config::<16>(b, h, nq)),
            Some(32) => ("attention_d32_f32", "attention_d32_bf16", attention::config::<32>(b, h, nq)),
            Some(64) => ("attention_d64_f32", "attention_d64_bf16", attention::config::<64>(b, h, nq)),
            _ => ("attention_d128_f32", "attention_d128_bf16", attention::config::<128>(b, h, nq)),
        };
        let name = if dtype == DType::F32 { f32_name } else { bf16_name };
        self.run(op, name, cfg, vec![b, nq, h * d], dtype, |po, cfg| {
            self.dev.launch(name, cfg, &mut args![pq, pk, pv, pb, pm, po, s])
        })
    }
}

impl Backend for Cuda {
    type Buf = Buf;

    fn name(&self) -> String {
        format!("cuda ({})", self.dev.name())
    }

    fn upload(&self, t: &Tensor, dtype: DType) -> Result<T> {
        super::expect_device_dtype("upload", dtype)?;
        t.expect_float("upload")?;
        let h = t.to_dtype(dtype).contiguous();
        let mem = match dtype {
            DType::F32 => self.dev.upload(bytemuck::cast_slice::<f32, u8>(&h.to_vec::<f32>()?)),
            _ => self.dev.upload(bytemuck::cast_slice::<bf16, u8>(&h.to_vec::<bf16>()?)),
        }
        .map_err(device_err("upload"))?;
        let buf = Buf { mem, len: h.elem_count(), dtype };
        Ok(DevTensor::from_parts(Arc::new(buf), 0, t.shape().to_vec(), dtype))
    }

    fn download(&self, x: &T) -> Result<Tensor> {
        let p = self.ptr("download", x)?;
        let bytes =
            self.dev.download_bytes(p, x.elem_count() * x.dtype().size_in_bytes()).map_err(device_err("download"))?;
        match x.dtype() {
            DType::F32 => {
                let v = bytes.as_chunks::<4>().0.iter().map(|c| f32::from_le_bytes(*c)).collect();
                Tensor::from_vec(v, x.shape())
            }
            _ => {
                let v = bytes.as_chunks::<2>().0.iter().map(|c| bf16::from_bits(u16::from_le_bytes(*c))).collect();
                Tensor::from_vec(v, x.shape())
            }
        }
    }

    fn synchronize(&self) -> Result<()> {
        self.dev.synchronize().map_err(device_err("synchronize"))
    }

    fn permute(&self, x: &T, perm: &[usize]) -> Result<T> {
        const OP: &str = "permute";
        let shape = check::permute(x, perm)?;
        let n = x.elem_count() as u32;
        let s = permute_shape(x.shape(), perm, &shape);
        let px = self.ptr(OP, x)?;
        let name = entry("permute_f32", "permute_bf16", x.dtype());
        self.run(OP, name, permute::config(n as usize), shape, x.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![px, po, n, s])
        })
    }

    fn linear(&self, x: &T, w: &T, bias: Option<&T>, act: Activation) -> Result<T> {
        const OP: &str = "linear";
        let (rows, k, n) = check::linear(x, w, bias)?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        let (px, pw, pb) = (self.ptr(OP, x)?, self.ptr(OP, w)?, self.opt_ptr(OP, bias)?);
        let (m32, n32, k32, act, alpha) = (rows as u32, n as u32, k as u32, act_code(act), 1.0f32);
        if x.dtype() == DType::F32 {
            let s = linear_f32_strides(k, n);
            self.run(OP, "gemm_f32", gemm::config(rows, n, 1), shape, DType::F32, |po, cfg| {
                self.dev.launch("gemm_f32", cfg, &mut args![px, pw, pb, po, m32, n32, k32, s, alpha, act])
            })
        } else {
            let s = linear_tc_strides(k, n);
            let name = "gemm_tc_bf16_bf16";
            self.run(OP, name, gemm_tc::config(rows, n, 1), shape, DType::BF16, |po, cfg| {
                self.dev.launch(name, cfg, &mut args![px, pw, pb, po, m32, n32, k32, s, alpha, act])
            })
        }
    }

    fn binary(&self, a: &T, b: &T, op: BinaryOp) -> Result<T> {
        check::binary(a, b)?;
        self.elementwise("binary", a, Some(b), binary_code(op), ACT_NONE)
    }

    fn activation(&self, x: &T, act: Activation) -> Result<T> {
        check::elem("activation", x)?;
        self.elementwise("activation", x, None, elementwise::OP_ADD, act_code(act))
    }

    fn layer_norm(&self, x: &T, w: &T, b: &T, eps: f32) -> Result<T> {
        const OP: &str = "layer_norm";
        let (rows, cols) = check::rows(OP, x, &[w, b])?;
        let (px, pw, pb) = (self.ptr(OP, x)?, self.ptr(OP, w)?, self.ptr(OP, b)?);
        let name = entry("layernorm_rows_f32", "layernorm_rows_bf16", x.dtype());
        self.run(OP, name, layernorm::config_rows(rows), x.shape().to_vec(), x.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![px, pw, pb, po, rows, cols, eps])
        })
    }

    fn layer_norm2d(&self, x: &T, w: &T, b: &T, eps: f32) -> Result<T> {
        const OP: &str = "layer_norm2d";
        let [n, ch, h, wd] = check::layer_norm2d(x, w, b)?;
        let (n32, ch32, hw32) = (n as u32, ch as u32, (h * wd) as u32);
        let (px, pw, pb) = (self.ptr(OP, x)?, self.ptr(OP, w)?, self.ptr(OP, b)?);
        let name = entry("layernorm2d_f32", "layernorm2d_bf16", x.dtype());
        self.run(OP, name, layernorm::config_2d(n * h * wd), x.shape().to_vec(), x.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![px, pw, pb, po, n32, ch32, hw32, eps])
        })
    }

    fn softmax_rows(&self, x: &T) -> Result<T> {
        const OP: &str = "softmax_rows";
        let (rows, cols) = check::rows(OP, x, &[])?;
        let px = self.ptr(OP, x)?;
        let name = entry("softmax_rows_f32", "softmax_rows_bf16", x.dtype());
        self.run(OP, name, softmax::config(rows), x.shape().to_vec(), x.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![px, po, rows, cols])
        })
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
        const OP: &str = "attention";
        let (b, h, nq, nk, d) = check::attention(q, k, v, heads, bias, mask)?;
        let s = attention_shape((h, nq, nk, d), mask, scale);
        let p = [self.ptr(OP, q)?, self.ptr(OP, k)?, self.ptr(OP, v)?];
        self.attend(OP, p, bias, mask, (b, h, nq, d), s, q.dtype())
    }

    fn attention_packed(&self, qkv: &T, heads: usize, bias: Option<&T>, mask: Option<&T>, scale: f32) -> Result<T> {
        const OP: &str = "attention_packed";
        let (b, h, n, d) = check::attention_packed(qkv, heads, bias, mask)?;
        let s = attention_packed_shape((h, n, d), mask, scale);
        let [_, ok, ov] = packed_offsets(h, d);
        let pq = self.ptr(OP, qkv)?;
        let esz = qkv.dtype().size_in_bytes();
        let p = [pq, pq + (ok * esz) as u64, pq + (ov * esz) as u64];
        self.attend(OP, p, bias, mask, (b, h, n, d), s, qkv.dtype())
    }

    fn window_partition(&self, x: &T, window: usize, shift: usize) -> Result<T> {
        const OP: &str = "window_partition";
        let [b, h, w, c] = check::windows(x, window, shift)?;
        let shape = vec![b * (h / window) * (w / window), window * window, c];
        let [b32, h32, w32, c32, ws, sh] = [b, h, w, c, window, shift].map(|v| v as u32);
        let px = self.ptr(OP, x)?;
        let name = entry("window_partition_f32", "window_partition_bf16", x.dtype());
        self.run(OP, name, remap::config(x.elem_count()), shape, x.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![px, po, b32, h32, w32, c32, ws, sh])
        })
    }

    fn window_reverse(&self, x: &T, hw: (usize, usize), window: usize, shift: usize) -> Result<T> {
        const OP: &str = "window_reverse";
        let [b, h, w, c] = check::window_reverse(x, hw, window, shift)?;
        let [b32, h32, w32, c32, ws, sh] = [b, h, w, c, window, shift].map(|v| v as u32);
        let px = self.ptr(OP, x)?;
        let name = entry("window_reverse_f32", "window_reverse_bf16", x.dtype());
        self.run(OP, name, remap::config(x.elem_count()), vec![b, h, w, c], x.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![px, po, b32, h32, w32, c32, ws, sh])
        })
    }

    fn patch_merge(&self, x: &T) -> Result<T> {
        const OP: &str = "patch_merge";
        let [b, h, w, c] = check::patch_merge(x)?;
        let [b32, h32, w32, c32] = [b, h, w, c].map(|v| v as u32);
        let px = self.ptr(OP, x)?;
        let name = entry("patch_merge_f32", "patch_merge_bf16", x.dtype());
        self.run(OP, name, remap::config(x.elem_count()), vec![b, h / 2, w / 2, 4 * c], x.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![px, po, b32, h32, w32, c32])
        })
    }

    fn upsample_bilinear(&self, x: &T, size: (usize, usize)) -> Result<T> {
        const OP: &str = "upsample_bilinear";
        let [n, c, h, w] = check::upsample_bilinear(x, size)?;
        let (oh, ow) = size;
        let [nc, h32, w32, oh32, ow32] = [n * c, h, w, oh, ow].map(|v| v as u32);
        let px = self.ptr(OP, x)?;
        let name = entry("upsample_bilinear_f32", "upsample_bilinear_bf16", x.dtype());
        self.run(OP, name, remap::config(n * c * oh * ow), vec![n, c, oh, ow], x.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![px, po, nc, h32, w32, oh32, ow32])
        })
    }

    fn upsample_sum_nhwc(&self, maps: &[&T], size: (usize, usize)) -> Result<T> {
        const OP: &str = "upsample_sum_nhwc";
        let (b, c) = check::upsample_sum(maps, size)?;
        let (oh, ow) = size;
        let s = upsample_sum_shape(maps, (b, c), size);
        let mut p = [0u64; 4];
        for (pi, m) in p.iter_mut().zip(maps) {
            *pi = self.ptr(OP, m)?;
        }
        let [p0, p1, p2, p3] = p;
        let name = entry("upsample_sum_nhwc_f32", "upsample_sum_nhwc_bf16", maps[0].dtype());
        self.run(OP, name, fusion::config(b * oh * ow * c), vec![b, oh, ow, c], maps[0].dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![p0, p1, p2, p3, po, s])
        })
    }

    fn conv_transpose2x2(&self, x: &T, w: &T, bias: &T) -> Result<T> {
        const OP: &str = "conv_transpose2x2";
        let ([n, cin, h, wd], cout) = check::conv_transpose2x2(x, w, bias)?;
        let [n32, cin32, cout32, h32, w32] = [n, cin, cout, h, wd].map(|v| v as u32);
        let (px, pw, pb) = (self.ptr(OP, x)?, self.ptr(OP, w)?, self.ptr(OP, bias)?);
        let name = entry("conv_transpose2x2_f32", "conv_transpose2x2_bf16", x.dtype());
        let total = n * cout * 4 * h * wd;
        self.run(OP, name, remap::config(total), vec![n, cout, 2 * h, 2 * wd], x.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![px, pw, pb, po, n32, cin32, cout32, h32, w32])
        })
    }

    fn hyper_product(&self, h: &T, u: &T) -> Result<T> {
        const OP: &str = "hyper_product";
        let (b, m, c, p) = check::hyper_product(h, u)?;
        let (m32, c32, p32) = (m as u32, c as u32, p as u32);
        let (ph, pu) = (self.ptr(OP, h)?, self.ptr(OP, u)?);
        let name = entry("hyper_product_f32", "hyper_product_bf16", h.dtype());
        self.run(OP, name, hyper::config(b, m, c, p), vec![b, m, p], h.dtype(), |po, cfg| {
            self.dev.launch(name, cfg, &mut args![ph, pu, po, m32, c32, p32])
        })
    }
}
