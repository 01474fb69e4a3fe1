//! The emulator backend: the `kernels` crate's bodies run under its thread-grid emulator
//! ([`kernels::emu`]) on host memory.
//!
//! Each op picks the kernel, the geometry (the kernel module's `config`) and the arguments exactly
//! as the CUDA backend does, so a kernel that passes the conformance harness here runs the same
//! code path on the GPU. Both launch the kernels' argument structs (`kernels::abi`), the
//! description that also declares each PTX entry point. Kernels whose threads cooperate (barriers,
//! shared memory, warp shuffles, tensor-core ops) run with a fiber per GPU thread; kernels
//! whose threads never cooperate (elementwise, gathers) run one thread after another
//! ([`emu::launch_args`]: the description says which).
//!
//! Every output buffer is filled with NaN bytes (0xff) before its launch, so an element that no
//! thread writes fails any comparison. Blocks and threads start in the emulator's [`Order`]
//! (shuffled by default), so a kernel that relies on a lucky schedule fails too.
//!
//! Slow (software tensor cores, a fiber switch per warp operation): for tests, up to the model's shapes.

use super::kernel_args::*;
use super::{check, Backend, BinaryOp, DevTensor};
use crate::ops::Activation;
use crate::{bf16, DType, Error, Result, Tensor};
use kernels::abi::*;
/// The start order of blocks and threads ([`Emulator::new`]).
pub use kernels::emu::Order;
use kernels::emu::{self, LaunchConfig};
use kernels::math::ACT_NONE;
use kernels::{attention, attention_tc, elementwise, fusion, hyper, layernorm, permute, remap, softmax, Bf16, Elem};
use std::sync::Arc;

/// 16 bytes, 16-byte aligned: the unit of an emulator buffer, so that the kernels' vector loads
/// (`gemm_tc` reads 16 bytes at once) see the alignment device allocations have.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Chunk([u8; 16]);

/// Host memory holding `len` elements of `dtype` (F32 or BF16, bf16 as its bit pattern).
///
/// Emulated GPU threads write a buffer only while the op that creates it runs (through a pointer
/// taken from the still-unshared allocation); once wrapped in a [`DevTensor`] it is read-only, so
/// no interior mutability is needed.
pub struct Buf {
    chunks: Box<[Chunk]>,
    len: usize,
    dtype: DType,
}

impl Buf {
    /// `len` elements of `dtype`, every byte 0xff (NaN as f32 and as bf16).
    fn poisoned(len: usize, dtype: DType) -> Buf {
        let bytes = len * dtype.size_in_bytes();
        Buf { chunks: vec![Chunk([0xff; 16]); bytes.div_ceil(16)].into_boxed_slice(), len, dtype }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn as_ptr<E>(&self) -> *const E {
        self.chunks.as_ptr() as *const E
    }
    fn as_mut_ptr<E>(&mut self) -> *mut E {
        self.chunks.as_mut_ptr() as *mut E
    }
    /// Elements `start..start + n` as f32 (converting bf16).
    fn f32_range(&self, start: usize, n: usize) -> Vec<f32> {
        assert!(start + n <= self.len, "range {start}+{n} of a buffer of {}", self.len);
        unsafe {
            match self.dtype {
                DType::F32 => std::slice::from_raw_parts(self.as_ptr::<f32>().add(start), n).to_vec(),
                _ => {
                    std::slice::from_raw_parts(self.as_ptr::<Bf16>().add(start), n).iter().map(|b| b.to_f32()).collect()
                }
            }
        }
    }
    /// Elements `start..start + n` as bf16 bit patterns.
    fn bf16_range(&self, start: usize, n: usize) -> Vec<bf16> {
        assert!(self.dtype == DType::BF16 && start + n <= self.len);
        unsafe {
            std::slice::from_raw_parts(self.as_ptr::<u16>().add(start), n).iter().map(|&b| bf16::from_bits(b)).collect()
        }
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "emulator::Buf({} x {:?})", self.len, self.dtype)
    }
}

/// The emulator backend. `order` is the start order of blocks and threads of every launch.
#[derive(Debug, Clone, Copy)]
pub struct Emulator {
    order: Order,
}

impl Default for Emulator {
    /// A shuffled order (the schedule least like the hardware's in-order start).
    fn default() -> Self {
        Emulator { order: Order::Shuffled(0x5eed) }
    }
}

type T = DevTensor<Emulator>;

impl Emulator {
    pub fn new(order: Order) -> Self {
        Emulator { order }
    }
    pub fn order(&self) -> Order {
        self.order
    }

    /// Checks that `t` lies inside its buffer with the buffer's dtype (a `DevTensor` assembled by
    /// hand must not send a kernel out of bounds).
    fn fits(&self, op: &'static str, t: &T) -> Result<()> {
        let buf = t.buf();
        if t.dtype() != buf.dtype() || t.offset() + t.elem_count() > buf.len() {
            return Err(Error::Device { op, msg: format!("{t:?} does not fit its buffer {buf:?}") });
        }
        Ok(())
    }

    /// A kernel argument: the pointer to `t`'s first element, as the kernel's element type `E`.
    fn arg<E>(&self, op: &'static str, t: &T) -> Result<*const E> {
        self.fits(op, t)?;
        if std::mem::size_of::<E>() != t.dtype().size_in_bytes() {
            return Err(Error::Device { op, msg: format!("{t:?} passed as a {}", std::any::type_name::<E>()) });
        }
        Ok(unsafe { t.buf().as_ptr::<E>().add(t.offset()) })
    }

    fn opt_arg<E>(&self, op: &'static str, t: Option<&T>) -> Result<*const E> {
        t.map_or(Ok(std::ptr::null()), |t| self.arg(op, t))
    }

    /// A new output of `shape` and `dtype`, poisoned, then filled by `fill(out)` (skipped when
    /// empty: a launch needs at least one block).
    fn output<E>(&self, shape: Vec<usize>, dtype: DType, fill: impl FnOnce(*mut E)) -> T {
        let n = shape.iter().product();
        let mut buf = Buf::poisoned(n, dtype);
        if n > 0 {
            fill(buf.as_mut_ptr());
        }
        DevTensor::from_parts(Arc::new(buf), 0, shape, dtype)
    }

    /// # Safety
    /// As [`emu::launch_args`]: the pointers in `args` are valid for what the kernel accesses
    /// under `cfg`.
    unsafe fn launch<K: Args>(&self, cfg: LaunchConfig, args: &K) {
        emu::launch_args(cfg, self.order, args)
    }

    /// `out = act(a op b[i % nb])` (`b` null: the activation only), as the CUDA binary wrapper.
    fn elementwise(&self, op: &'static str, a: &T, b: Option<&T>, code: u32, act: u32) -> Result<T> {
        let (n, nb) = (a.elem_count(), b.map_or(1, |b| b.elem_count()));
        Ok(by_dtype!(a.dtype(), E => {
            let (pa, pb) = (self.arg::<E>(op, a)?, self.opt_arg::<E>(op, b)?);
            self.output::<E>(a.shape().to_vec(), a.dtype(), |out| unsafe {
                let (n, nb) = (n as u32, nb as u32);
                self.launch(elementwise::config(n as usize), &EwBinary { a: pa, b: pb, out, n, nb, op: code, act })
            })
        }))
    }
}

impl Emulator {
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
        let n = b * h * w * c;
        let [b32, h32, w32, ch, ws, shift] = [b, h, w, c, window, shift].map(|v| v as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let (px, residual) = (self.arg::<E>(op, x)?, self.opt_arg::<E>(op, residual)?);
            self.output::<E>(vec![b, h, w, c], x.dtype(), |out| unsafe {
                let args = WindowReverse { x: px, residual, out, b: b32, h: h32, w: w32, ch, ws, shift };
                self.launch(remap::config(n), &args)
            })
        }))
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
        let pbias = self.opt_arg::<f32>(op, bias)?;
        if a.dtype() == DType::F32 {
            let (pa, pb, pres) = (self.arg(op, a)?, self.arg(op, b)?, self.opt_arg(op, residual)?);
            Ok(self.output::<f32>(shape, DType::F32, |out| unsafe {
                self.launch(plan.f32_config(), &plan.f32_args([pa, pb], [pbias, pres], act, out))
            }))
        } else {
            let (pa, pb, pres) = (self.arg(op, a)?, self.arg(op, b)?, self.opt_arg(op, residual)?);
            Ok(self.output::<Bf16>(shape, DType::BF16, |out| unsafe {
                self.launch(plan.tc_config(), &plan.tc_args([pa, pb], pbias, pres, act, out))
            }))
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
    ) -> Result<T> {
        let (bias, mask) = (self.opt_arg::<f32>(op, bias)?, self.opt_arg::<f32>(op, mask)?);
        // The body is compiled per instance (a const parameter), as the device entry points
        // attention_d{8,16,32,64,128}_*; the head dim itself travels in `s`.
        macro_rules! run {
            ($D:literal) => {
                self.output::<E>(vec![b, nq, h * d], dtype, |out| unsafe {
                    let args = Attention::<E, $D> { q, k, v, bias, mask, out, s };
                    self.launch(attention::config::<$D>(b, h, nq), &args)
                })
            };
        }
        // bf16 heads up to 64 wide run on the tensor cores; the CUDA-core kernel is their twin.
        macro_rules! run_tc {
            ($D:literal) => {
                self.output::<E>(vec![b, nq, h * d], dtype, |out| unsafe {
                    let [q, k, v] = [q, k, v].map(|p| p.cast::<Bf16>());
                    let args = AttentionTc::<Bf16, $D> { q, k, v, bias, mask, out: out.cast(), s };
                    self.launch(attention_tc::config::<$D>(b, h, nq), &args)
                })
            };
        }
        if dtype == DType::BF16 {
            match attention_tc::instance(d) {
                Some(16) => return Ok(run_tc!(16)),
                Some(32) => return Ok(run_tc!(32)),
                Some(64) => return Ok(run_tc!(64)),
                _ => {}
            }
        }
        Ok(match attention::instance(d) {
            Some(8) => run!(8),
            Some(16) => run!(16),
            Some(32) => run!(32),
            Some(64) => run!(64),
            _ => run!(128),
        })
    }
}

impl Backend for Emulator {
    type Buf = Buf;

    fn name(&self) -> String {
        format!("emulator (kernels under kernels::emu, order {:?})", self.order)
    }

    fn upload(&self, t: &Tensor, dtype: DType) -> Result<T> {
        super::expect_device_dtype("upload", dtype)?;
        t.expect_float("upload")?;
        let h = t.to_dtype(dtype).contiguous();
        let n = h.elem_count();
        let mut buf = Buf::poisoned(n, dtype);
        match dtype {
            DType::F32 => {
                let v = h.to_vec::<f32>()?;
                unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf.as_mut_ptr::<f32>(), n) };
            }
            _ => {
                let v = h.to_vec::<bf16>()?;
                unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf.as_mut_ptr::<bf16>(), n) };
            }
        }
        Ok(DevTensor::from_parts(Arc::new(buf), 0, t.shape().to_vec(), dtype))
    }

    fn download(&self, x: &T) -> Result<Tensor> {
        self.fits("download", x)?;
        let (buf, off, n) = (x.buf(), x.offset(), x.elem_count());
        match x.dtype() {
            DType::F32 => Tensor::from_vec(buf.f32_range(off, n), x.shape()),
            _ => Tensor::from_vec(buf.bf16_range(off, n), x.shape()),
        }
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn permute(&self, x: &T, perm: &[usize]) -> Result<T> {
        const OP: &str = "permute";
        let shape = check::permute(x, perm)?;
        let n = x.elem_count();
        let s = permute_shape(x.shape(), perm, &shape);
        Ok(by_dtype!(x.dtype(), E => {
            let px = self.arg::<E>(OP, x)?;
            self.output::<E>(shape, x.dtype(), |out| unsafe {
                self.launch(permute::config(n), &Permute { x: px, out, n: n as u32, s })
            })
        }))
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
        Ok(by_dtype!(x.dtype(), E => {
            let (px, g, pb) = (self.arg::<E>(OP, x)?, self.arg::<E>(OP, w)?, self.arg::<E>(OP, b)?);
            self.output::<E>(x.shape().to_vec(), x.dtype(), |out| unsafe {
                let args = LayernormRows { x: px, g, b: pb, out, rows, cols, eps };
                self.launch(layernorm::config_rows(rows), &args)
            })
        }))
    }

    fn layer_norm2d(&self, x: &T, w: &T, b: &T, eps: f32) -> Result<T> {
        const OP: &str = "layer_norm2d";
        let [n, ch, h, wd] = check::layer_norm2d(x, w, b)?;
        let [n32, ch32, hw32] = [n, ch, h * wd].map(|v| v as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let (px, g, pb) = (self.arg::<E>(OP, x)?, self.arg::<E>(OP, w)?, self.arg::<E>(OP, b)?);
            self.output::<E>(x.shape().to_vec(), x.dtype(), |out| unsafe {
                let args = Layernorm2d { x: px, g, b: pb, out, n: n32, ch: ch32, hw: hw32, eps };
                self.launch(layernorm::config_2d(n * h * wd), &args)
            })
        }))
    }

    fn softmax_rows(&self, x: &T) -> Result<T> {
        const OP: &str = "softmax_rows";
        let (rows, cols) = check::rows(OP, x, &[])?;
        Ok(by_dtype!(x.dtype(), E => {
            let px = self.arg::<E>(OP, x)?;
            self.output::<E>(x.shape().to_vec(), x.dtype(), |out| unsafe {
                self.launch(softmax::config(rows), &SoftmaxRows { x: px, out, rows, cols })
            })
        }))
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
            let (pq, pk, pv) = (self.arg::<E>(OP, q)?, self.arg::<E>(OP, k)?, self.arg::<E>(OP, v)?);
            self.attend::<E>(OP, [pq, pk, pv], bias, mask, (b, h, nq, d), s, q.dtype())
        })
    }

    fn attention_packed(&self, qkv: &T, heads: usize, bias: Option<&T>, mask: Option<&T>, scale: f32) -> Result<T> {
        const OP: &str = "attention_packed";
        let (b, h, n, d) = check::attention_packed(qkv, heads, bias, mask)?;
        let s = attention_packed_shape((h, n, d), mask, scale);
        let [_, ok, ov] = packed_offsets(h, d);
        by_dtype!(qkv.dtype(), E => {
            let pq = self.arg::<E>(OP, qkv)?;
            let (pk, pv) = unsafe { (pq.add(ok), pq.add(ov)) };
            self.attend::<E>(OP, [pq, pk, pv], bias, mask, (b, h, n, d), s, qkv.dtype())
        })
    }

    fn window_partition(&self, x: &T, window: usize, shift: usize) -> Result<T> {
        const OP: &str = "window_partition";
        let [b, h, w, c] = check::windows(x, window, shift)?;
        let n = b * h * w * c;
        let shape = vec![b * (h / window) * (w / window), window * window, c];
        let [b32, h32, w32, ch, ws, shift] = [b, h, w, c, window, shift].map(|v| v as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let px = self.arg::<E>(OP, x)?;
            self.output::<E>(shape, x.dtype(), |out| unsafe {
                let args = WindowPartition { x: px, out, b: b32, h: h32, w: w32, ch, ws, shift };
                self.launch(remap::config(n), &args)
            })
        }))
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
        let n = b * h * w * c;
        let [b32, h32, w32, ch] = [b, h, w, c].map(|v| v as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let px = self.arg::<E>(OP, x)?;
            self.output::<E>(vec![b, h / 2, w / 2, 4 * c], x.dtype(), |out| unsafe {
                self.launch(remap::config(n), &PatchMerge { x: px, out, b: b32, h: h32, w: w32, ch })
            })
        }))
    }

    fn upsample_bilinear(&self, x: &T, size: (usize, usize)) -> Result<T> {
        const OP: &str = "upsample_bilinear";
        let [n, c, h, w] = check::upsample_bilinear(x, size)?;
        let (oh, ow) = size;
        let total = n * c * oh * ow;
        let [nc, h32, w32, oh32, ow32] = [n * c, h, w, oh, ow].map(|v| v as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let px = self.arg::<E>(OP, x)?;
            self.output::<E>(vec![n, c, oh, ow], x.dtype(), |out| unsafe {
                let args = UpsampleBilinear { x: px, out, nc, h: h32, w: w32, oh: oh32, ow: ow32 };
                self.launch(remap::config(total), &args)
            })
        }))
    }

    fn upsample_sum_nhwc(&self, maps: &[&T], size: (usize, usize)) -> Result<T> {
        const OP: &str = "upsample_sum_nhwc";
        let (b, c) = check::upsample_sum(maps, size)?;
        let (oh, ow) = size;
        let n = b * oh * ow * c;
        let s = upsample_sum_shape(maps, (b, c), size);
        Ok(by_dtype!(maps[0].dtype(), E => {
            let mut p = [std::ptr::null::<E>(); 4];
            for (pi, m) in p.iter_mut().zip(maps) {
                *pi = self.arg::<E>(OP, m)?;
            }
            let [m0, m1, m2, m3] = p;
            self.output::<E>(vec![b, oh, ow, c], maps[0].dtype(), |out| unsafe {
                self.launch(fusion::config(n), &UpsampleSumNhwc { m0, m1, m2, m3, out, s })
            })
        }))
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
        Ok(by_dtype!(h.dtype(), E => {
            let (ph, pu) = (self.arg::<E>(OP, h)?, self.arg::<E>(OP, u)?);
            self.output::<E>(vec![b, m, p], h.dtype(), |out| unsafe {
                self.launch(hyper::config(b, m, c, p), &HyperProduct { h: ph, u: pu, out, m: m32, ch, p: p32 })
            })
        }))
    }
}
