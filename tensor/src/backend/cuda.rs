//! The CUDA backend: the kernels' PTX launched on an NVIDIA GPU through [`crate::cuda`].
//!
//! Each op picks the same kernel, geometry (the kernel module's `config`) and arguments as the
//! emulator backend, which runs the same bodies on the CPU in every test: the two files are
//! twins, op by op, and both fill the kernels' typed argument structs (`kernels::abi`), the
//! description that also declares each PTX entry point. Buffers come from the device's caching pool; a tensor's offset becomes a
//! pointer offset. All work goes to the device's stream; `download` and `synchronize` wait.

use super::kernel_args::*;
use super::{check, Backend, BinaryOp, DevTensor};
use crate::cuda::{CudaDevice, CudaError, DeviceBuffer};
use crate::ops::Activation;
use crate::{bf16, DType, Error, Result, Tensor};
use kernels::abi::*;
use kernels::ctx::LaunchConfig;
use kernels::math::ACT_NONE;
use kernels::{attention, attention_tc, elementwise, fusion, hyper, layernorm, permute, remap, softmax, Bf16, Elem};
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

    /// The device address of `t`'s first element, after checking that `t` lies inside its buffer
    /// with the buffer's dtype.
    fn addr(&self, op: &'static str, t: &T) -> Result<u64> {
        let buf = t.buf();
        if t.dtype() != buf.dtype || t.offset() + t.elem_count() > buf.len {
            return Err(Error::Device { op, msg: format!("{t:?} does not fit its buffer of {}", buf.len) });
        }
        Ok(buf.mem.ptr() + (t.offset() * t.dtype().size_in_bytes()) as u64)
    }

    /// A kernel argument: `t`'s device address as a pointer to the kernel's element type `E`.
    fn ptr<E>(&self, op: &'static str, t: &T) -> Result<*const E> {
        if std::mem::size_of::<E>() != t.dtype().size_in_bytes() {
            return Err(Error::Device { op, msg: format!("{t:?} passed as a {}", std::any::type_name::<E>()) });
        }
        Ok(self.addr(op, t)? as *const E)
    }

    fn opt_ptr<E>(&self, op: &'static str, t: Option<&T>) -> Result<*const E> {
        t.map_or(Ok(std::ptr::null()), |t| self.ptr(op, t))
    }

    fn alloc(&self, op: &'static str, shape: Vec<usize>, dtype: DType) -> Result<T> {
        let len: usize = shape.iter().product();
        let mem = self.dev.alloc::<u8>(len * dtype.size_in_bytes()).map_err(device_err(op))?;
        Ok(DevTensor::from_parts(Arc::new(Buf { mem, len, dtype }), 0, shape, dtype))
    }

    /// A new output of `shape` and `dtype`, filled by one launch of the kernel whose arguments
    /// `args(out)` builds around the output's address (skipped when empty: a launch needs a block).
    fn run<E, K: Kernel>(
        &self,
        op: &'static str,
        cfg: LaunchConfig,
        shape: Vec<usize>,
        dtype: DType,
        args: impl FnOnce(*mut E) -> K,
    ) -> Result<T> {
        let out = self.alloc(op, shape, dtype)?;
        if out.elem_count() > 0 {
            let args = args(self.ptr::<E>(op, &out)? as *mut E);
            self.dev.launch(cfg, &args).map_err(|e| Error::Device { op, msg: format!("{}: {e}", K::NAME) })?;
        }
        Ok(out)
    }

    fn elementwise(&self, op: &'static str, a: &T, b: Option<&T>, code: u32, act: u32) -> Result<T> {
        let (n, nb) = (a.elem_count(), b.map_or(1, |b| b.elem_count()));
        by_dtype!(a.dtype(), E => {
            let (pa, pb) = (self.ptr::<E>(op, a)?, self.opt_ptr::<E>(op, b)?);
            self.run(op, elementwise::config(n), a.shape().to_vec(), a.dtype(), |out| {
                EwBinary { a: pa, b: pb, out, n: n as u32, nb: nb as u32, op: code, act }
            })
        })
    }
}

impl Cuda {
    /// The window-reverse gather (`+ residual`); the caller checked the operands.
    fn reverse_windows(
        &self,
        op: &'static str,
        x: &T,
        [b, h, w, c]: [usize; 4],
        window: usize,
        shift: usize,
        residual: Option<&T>,
    ) -> Result<T> {
        let [b32, h32, w32, ch, ws, shift] = [b, h, w, c, window, shift].map(|v| v as u32);
        by_dtype!(x.dtype(), E => {
            let (px, residual) = (self.ptr::<E>(op, x)?, self.opt_ptr::<E>(op, residual)?);
            self.run(op, remap::config(x.elem_count()), vec![b, h, w, c], x.dtype(), |out| {
                WindowReverse { x: px, residual, out, b: b32, h: h32, w: w32, ch, ws, shift }
            })
        })
    }

    /// The GEMM `plan` describes on operands `a` and `b` (f32: SIMT, bf16: tensor cores), `act`
    /// applied and the residual added in the kernels' output pass. The caller checked the operands.
    fn gemm(
        &self,
        op: &'static str,
        plan: &GemmPlan,
        [a, b]: [&T; 2],
        bias: Option<&T>,
        act: u32,
        residual: Option<&T>,
    ) -> Result<T> {
        let shape = plan.out_shape.clone();
        let pbias = self.opt_ptr::<f32>(op, bias)?;
        if a.dtype() == DType::F32 {
            let (pa, pb, pres) = (self.ptr(op, a)?, self.ptr(op, b)?, self.opt_ptr(op, residual)?);
            self.run(op, plan.f32_config(), shape, DType::F32, |out| plan.f32_args([pa, pb], [pbias, pres], act, out))
        } else {
            let (pa, pb, pres) = (self.ptr(op, a)?, self.ptr(op, b)?, self.opt_ptr(op, residual)?);
            self.run(op, plan.tc_config(), shape, DType::BF16, |out| plan.tc_args([pa, pb], pbias, pres, act, out))
        }
    }

    /// The attention kernel on q, k, v pointers laid out as `s` says; output `[b, nq, h·d]`.
    #[allow(clippy::too_many_arguments)]
    fn attend<E: Elem>(
        &self,
        op: &'static str,
        [q, k, v]: [*const E; 3],
        bias: Option<&T>,
        mask: Option<&T>,
        (b, h, nq, d): (usize, usize, usize, usize),
        s: attention::AttnShape,
        dtype: DType,
    ) -> Result<T>
    where
        Attention<E, 8>: Kernel,
        Attention<E, 16>: Kernel,
        Attention<E, 32>: Kernel,
        Attention<E, 64>: Kernel,
        Attention<E, 128>: Kernel,
    {
        let (bias, mask) = (self.opt_ptr::<f32>(op, bias)?, self.opt_ptr::<f32>(op, mask)?);
        // The instance that holds head dim d (check::attention has kept d <= 128).
        macro_rules! run {
            ($D:literal) => {
                self.run(op, attention::config::<$D>(b, h, nq), vec![b, nq, h * d], dtype, |out| Attention::<E, $D> {
                    q,
                    k,
                    v,
                    bias,
                    mask,
                    out,
                    s,
                })
            };
        }
        // bf16 heads up to 64 wide run on the tensor cores; the CUDA-core kernel is their twin.
        macro_rules! run_tc {
            ($D:literal) => {
                self.run(op, attention_tc::config::<$D>(b, h, nq), vec![b, nq, h * d], dtype, |out: *mut E| {
                    let [q, k, v] = [q, k, v].map(|p| p.cast::<Bf16>());
                    AttentionTc::<Bf16, $D> { q, k, v, bias, mask, out: out.cast(), s }
                })
            };
        }
        if dtype == DType::BF16 {
            match attention_tc::instance(d) {
                Some(16) => return run_tc!(16),
                Some(32) => return run_tc!(32),
                Some(64) => return run_tc!(64),
                _ => {}
            }
        }
        match attention::instance(d) {
            Some(8) => run!(8),
            Some(16) => run!(16),
            Some(32) => run!(32),
            Some(64) => run!(64),
            _ => run!(128),
        }
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
        let p = self.addr("download", x)?;
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
        let n = x.elem_count();
        let s = permute_shape(x.shape(), perm, &shape);
        by_dtype!(x.dtype(), E => {
            let px = self.ptr::<E>(OP, x)?;
            self.run(OP, permute::config(n), shape, x.dtype(), |out| Permute { x: px, out, n: n as u32, s })
        })
    }

    fn linear(&self, x: &T, w: &T, bias: Option<&T>, act: Activation) -> Result<T> {
        let (_, k, n) = check::linear(x, w, bias)?;
        self.gemm("linear", &GemmPlan::linear(x.shape(), k, n), [x, w], bias, act_code(act), None)
    }

    fn linear_add(&self, x: &T, w: &T, bias: Option<&T>, act: Activation, residual: &T) -> Result<T> {
        let (_, k, n) = check::linear_add(x, w, bias, residual)?;
        self.gemm("linear_add", &GemmPlan::linear(x.shape(), k, n), [x, w], bias, act_code(act), Some(residual))
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
        by_dtype!(x.dtype(), E => {
            let (px, g, pb) = (self.ptr::<E>(OP, x)?, self.ptr::<E>(OP, w)?, self.ptr::<E>(OP, b)?);
            self.run(OP, layernorm::config_rows(rows), x.shape().to_vec(), x.dtype(), |out| {
                LayernormRows { x: px, g, b: pb, out, rows, cols, eps }
            })
        })
    }

    fn layer_norm2d(&self, x: &T, w: &T, b: &T, eps: f32) -> Result<T> {
        const OP: &str = "layer_norm2d";
        let [n, ch, h, wd] = check::layer_norm2d(x, w, b)?;
        let [n32, ch32, hw32] = [n, ch, h * wd].map(|v| v as u32);
        by_dtype!(x.dtype(), E => {
            let (px, g, pb) = (self.ptr::<E>(OP, x)?, self.ptr::<E>(OP, w)?, self.ptr::<E>(OP, b)?);
            self.run(OP, layernorm::config_2d(n * h * wd), x.shape().to_vec(), x.dtype(), |out| {
                Layernorm2d { x: px, g, b: pb, out, n: n32, ch: ch32, hw: hw32, eps }
            })
        })
    }

    fn softmax_rows(&self, x: &T) -> Result<T> {
        const OP: &str = "softmax_rows";
        let (rows, cols) = check::rows(OP, x, &[])?;
        by_dtype!(x.dtype(), E => {
            let px = self.ptr::<E>(OP, x)?;
            self.run(OP, softmax::config(rows), x.shape().to_vec(), x.dtype(), |out| {
                SoftmaxRows { x: px, out, rows, cols }
            })
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
        by_dtype!(q.dtype(), E => {
            let p = [self.ptr::<E>(OP, q)?, self.ptr::<E>(OP, k)?, self.ptr::<E>(OP, v)?];
            self.attend::<E>(OP, p, bias, mask, (b, h, nq, d), s, q.dtype())
        })
    }

    fn attention_packed(&self, qkv: &T, heads: usize, bias: Option<&T>, mask: Option<&T>, scale: f32) -> Result<T> {
        const OP: &str = "attention_packed";
        let (b, h, n, d) = check::attention_packed(qkv, heads, bias, mask)?;
        let s = attention_packed_shape((h, n, d), mask, scale);
        let [_, ok, ov] = packed_offsets(h, d);
        by_dtype!(qkv.dtype(), E => {
            // Device addresses: offset without dereferencing (`wrapping_add` is address arithmetic).
            let pq = self.ptr::<E>(OP, qkv)?;
            self.attend::<E>(OP, [pq, pq.wrapping_add(ok), pq.wrapping_add(ov)], bias, mask, (b, h, n, d), s, qkv.dtype())
        })
    }

    fn window_partition(&self, x: &T, window: usize, shift: usize) -> Result<T> {
        const OP: &str = "window_partition";
        let [b, h, w, c] = check::windows(x, window, shift)?;
        let shape = vec![b * (h / window) * (w / window), window * window, c];
        let [b32, h32, w32, ch, ws, shift] = [b, h, w, c, window, shift].map(|v| v as u32);
        by_dtype!(x.dtype(), E => {
            let px = self.ptr::<E>(OP, x)?;
            self.run(OP, remap::config(x.elem_count()), shape, x.dtype(), |out| {
                WindowPartition { x: px, out, b: b32, h: h32, w: w32, ch, ws, shift }
            })
        })
    }

    fn window_reverse(&self, x: &T, hw: (usize, usize), window: usize, shift: usize) -> Result<T> {
        let shape = check::window_reverse(x, hw, window, shift)?;
        self.reverse_windows("window_reverse", x, shape, window, shift, None)
    }

    fn window_reverse_add(&self, x: &T, hw: (usize, usize), window: usize, shift: usize, residual: &T) -> Result<T> {
        let shape = check::window_reverse_add(x, hw, window, shift, residual)?;
        self.reverse_windows("window_reverse_add", x, shape, window, shift, Some(residual))
    }

    fn patch_merge(&self, x: &T) -> Result<T> {
        const OP: &str = "patch_merge";
        let [b, h, w, c] = check::patch_merge(x)?;
        let [b32, h32, w32, ch] = [b, h, w, c].map(|v| v as u32);
        by_dtype!(x.dtype(), E => {
            let px = self.ptr::<E>(OP, x)?;
            self.run(OP, remap::config(x.elem_count()), vec![b, h / 2, w / 2, 4 * c], x.dtype(), |out| {
                PatchMerge { x: px, out, b: b32, h: h32, w: w32, ch }
            })
        })
    }

    fn upsample_bilinear(&self, x: &T, size: (usize, usize)) -> Result<T> {
        const OP: &str = "upsample_bilinear";
        let [n, c, h, w] = check::upsample_bilinear(x, size)?;
        let (oh, ow) = size;
        let [nc, h32, w32, oh32, ow32] = [n * c, h, w, oh, ow].map(|v| v as u32);
        by_dtype!(x.dtype(), E => {
            let px = self.ptr::<E>(OP, x)?;
            self.run(OP, remap::config(n * c * oh * ow), vec![n, c, oh, ow], x.dtype(), |out| {
                UpsampleBilinear { x: px, out, nc, h: h32, w: w32, oh: oh32, ow: ow32 }
            })
        })
    }

    fn upsample_sum_nhwc(&self, maps: &[&T], size: (usize, usize)) -> Result<T> {
        const OP: &str = "upsample_sum_nhwc";
        let (b, c) = check::upsample_sum(maps, size)?;
        let (oh, ow) = size;
        let s = upsample_sum_shape(maps, (b, c), size);
        by_dtype!(maps[0].dtype(), E => {
            let mut p = [std::ptr::null::<E>(); 4];
            for (pi, m) in p.iter_mut().zip(maps) {
                *pi = self.ptr::<E>(OP, m)?;
            }
            let [m0, m1, m2, m3] = p;
            self.run(OP, fusion::config(b * oh * ow * c), vec![b, oh, ow, c], maps[0].dtype(), |out| {
                UpsampleSumNhwc { m0, m1, m2, m3, out, s }
            })
        })
    }

    fn conv_transpose2x2(&self, x: &T, w: &T, bias: &T) -> Result<T> {
        const OP: &str = "conv_transpose2x2";
        let (dims, cout) = check::conv_transpose2x2(x, w, bias)?;
        conv_transpose_by_taps(self, x, w, dims, cout, |rows, w| {
            let plan = GemmPlan::conv_taps(rows.shape()[0], dims[1], cout);
            self.gemm(OP, &plan, [rows, w], Some(bias), ACT_NONE, None)
        })
    }

    fn hyper_product(&self, h: &T, u: &T) -> Result<T> {
        const OP: &str = "hyper_product";
        let (b, m, c, p) = check::hyper_product(h, u)?;
        let [m32, ch, p32] = [m, c, p].map(|v| v as u32);
        by_dtype!(h.dtype(), E => {
            let (ph, pu) = (self.ptr::<E>(OP, h)?, self.ptr::<E>(OP, u)?);
            self.run(OP, hyper::config(b, m, c, p), vec![b, m, p], h.dtype(), |out| {
                HyperProduct { h: ph, u: pu, out, m: m32, ch, p: p32 }
            })
        })
    }
}
