//! The emulator backend: the `kernels` crate's bodies run under its thread-grid emulator
//! ([`kernels::emu`]) on host memory.
//!
//! Each op picks the kernel, the geometry (the kernel module's `config`) and the arguments exactly
//! as the CUDA backend does, so a kernel that passes the conformance harness here runs the same
//! code path on the GPU. Kernels whose threads cooperate (barriers, shared memory, warp shuffles,
//! tensor-core ops) run with one OS thread per GPU thread ([`emu::launch`]); kernels whose threads
//! never cooperate (elementwise, gathers) run one thread after another ([`emu::launch_independent`],
//! which panics on a barrier or warp op, so a misclassified kernel cannot pass silently).
//!
//! Every output buffer is filled with NaN bytes (0xff) before its launch, so an element that no
//! thread writes fails any comparison. Blocks and threads start in the emulator's [`Order`]
//! (shuffled by default), so a kernel that relies on a lucky schedule fails too.
//!
//! Slow (an OS thread per GPU thread): for tests on small shapes.

use super::kernel_args::*;
use super::{check, Backend, BinaryOp, DevTensor};
use crate::ops::Activation;
use crate::{bf16, DType, Error, Result, Tensor};
/// The start order of blocks and threads ([`Emulator::new`]).
pub use kernels::emu::Order;
use kernels::emu::{self, EmuCtx, LaunchConfig};
use kernels::math::ACT_NONE;
use kernels::{attention, elementwise, fusion, gemm, gemm_tc, hyper, layernorm, permute, remap, softmax, Bf16, Elem};
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

/// Runs `$body` with `$E` the kernel element type of `$dt` (f32 or Bf16).
macro_rules! by_dtype {
    ($dt:expr, $E:ident => $body:expr) => {
        match $dt {
            DType::F32 => {
                type $E = f32;
                $body
            }
            _ => {
                type $E = Bf16;
                $body
            }
        }
    };
}

/// How the threads of a kernel interact, which decides how the emulator runs them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Threads {
    /// Barriers, shared memory or warp-level ops: every GPU thread alive at once.
    Cooperative,
    /// No interaction: one thread after another.
    Independent,
}

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
    /// As [`emu::launch`]: the kernel's pointers are valid for what it accesses under `cfg`.
    unsafe fn launch<F: Fn(&EmuCtx)>(&self, cfg: LaunchConfig, threads: Threads, kernel: F) {
        match threads {
            Threads::Cooperative => emu::launch(cfg, self.order, kernel),
            Threads::Independent => emu::launch_independent(cfg, self.order, kernel),
        }
    }

    /// `out = act(a op b[i % nb])` (`b` null: the activation only), as the CUDA binary wrapper.
    fn elementwise(&self, op: &'static str, a: &T, b: Option<&T>, code: u32, act: u32) -> Result<T> {
        let (n, nb) = (a.elem_count(), b.map_or(1, |b| b.elem_count()));
        Ok(by_dtype!(a.dtype(), E => {
            let (pa, pb) = (self.arg::<E>(op, a)?, self.opt_arg::<E>(op, b)?);
            self.output::<E>(a.shape().to_vec(), a.dtype(), |po| unsafe {
                self.launch(elementwise::config(n), Threads::Independent, |c| {
                    elementwise::binary(c, pa, pb, po, n as u32, nb as u32, code, act)
                })
            })
        }))
    }
}

impl Emulator {
    /// The attention kernel on q, k, v pointers laid out as `s` says; output `[b, nq, h·d]`.
    #[allow(clippy::too_many_arguments)]
    fn attend<E: Elem>(
        &self,
        op: &'static str,
        [pq, pk, pv]: [*const E; 3],
        bias: Option<&T>,
        mask: Option<&T>,
        (b, h, nq, d): (usize, usize, usize, usize),
        s: &attention::AttnShape,
        dtype: DType,
    ) -> Result<T> {
        let (pbias, pmask) = (self.opt_arg::<f32>(op, bias)?, self.opt_arg::<f32>(op, mask)?);
        // The body is compiled per instance (a const parameter), as the device entry points
        // attention_d{8,16,32,64,128}_*; the head dim itself travels in `s`.
        macro_rules! run {
            ($D:literal) => {
                self.output::<E>(vec![b, nq, h * d], dtype, |po| unsafe {
                    self.launch(attention::config::<$D>(b, h, nq), Threads::Cooperative, |c| {
                        attention::attention::<_, E, $D>(c, pq, pk, pv, pbias, pmask, po, s)
                    })
                })
            };
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
            self.output::<E>(shape, x.dtype(), |po| unsafe {
                self.launch(permute::config(n), Threads::Independent, |c| permute::permute(c, px, po, n as u32, &s))
            })
        }))
    }

    fn linear(&self, x: &T, w: &T, bias: Option<&T>, act: Activation) -> Result<T> {
        const OP: &str = "linear";
        let (rows, k, n) = check::linear(x, w, bias)?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        let pb = self.opt_arg::<f32>(OP, bias)?;
        let (m32, n32, k32, act) = (rows as u32, n as u32, k as u32, act_code(act));
        if x.dtype() == DType::F32 {
            let (px, pw) = (self.arg::<f32>(OP, x)?, self.arg::<f32>(OP, w)?);
            let s = linear_f32_strides(k, n);
            Ok(self.output::<f32>(shape, DType::F32, |po| unsafe {
                self.launch(gemm::config(rows, n, 1), Threads::Cooperative, |c| {
                    gemm::gemm_f32::<_, f32>(c, px, pw, pb, po, m32, n32, k32, &s, 1.0, act)
                })
            }))
        } else {
            let (px, pw) = (self.arg::<u16>(OP, x)?, self.arg::<u16>(OP, w)?);
            let s = linear_tc_strides(k, n);
            Ok(self.output::<Bf16>(shape, DType::BF16, |po| unsafe {
                self.launch(gemm_tc::config(rows, n, 1), Threads::Cooperative, |c| {
                    gemm_tc::gemm_tc::<_, gemm_tc::Bf16In, Bf16>(c, px, pw, pb, po, m32, n32, k32, &s, 1.0, act)
                })
            }))
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
        Ok(by_dtype!(x.dtype(), E => {
            let (px, pw, pb) = (self.arg::<E>(OP, x)?, self.arg::<E>(OP, w)?, self.arg::<E>(OP, b)?);
            self.output::<E>(x.shape().to_vec(), x.dtype(), |po| unsafe {
                self.launch(layernorm::config_rows(rows), Threads::Cooperative, |c| {
                    layernorm::layernorm_rows(c, px, pw, pb, po, rows, cols, eps)
                })
            })
        }))
    }

    fn layer_norm2d(&self, x: &T, w: &T, b: &T, eps: f32) -> Result<T> {
        const OP: &str = "layer_norm2d";
        let [n, ch, h, wd] = check::layer_norm2d(x, w, b)?;
        let (n32, ch32, hw32) = (n as u32, ch as u32, (h * wd) as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let (px, pw, pb) = (self.arg::<E>(OP, x)?, self.arg::<E>(OP, w)?, self.arg::<E>(OP, b)?);
            self.output::<E>(x.shape().to_vec(), x.dtype(), |po| unsafe {
                self.launch(layernorm::config_2d(n * h * wd), Threads::Independent, |c| {
                    layernorm::layernorm2d(c, px, pw, pb, po, n32, ch32, hw32, eps)
                })
            })
        }))
    }

    fn softmax_rows(&self, x: &T) -> Result<T> {
        const OP: &str = "softmax_rows";
        let (rows, cols) = check::rows(OP, x, &[])?;
        Ok(by_dtype!(x.dtype(), E => {
            let px = self.arg::<E>(OP, x)?;
            self.output::<E>(x.shape().to_vec(), x.dtype(), |po| unsafe {
                self.launch(softmax::config(rows), Threads::Cooperative, |c| softmax::softmax_rows(c, px, po, rows, cols))
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
            self.attend::<E>(OP, [pq, pk, pv], bias, mask, (b, h, nq, d), &s, q.dtype())
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
            self.attend::<E>(OP, [pq, pk, pv], bias, mask, (b, h, n, d), &s, qkv.dtype())
        })
    }

    fn window_partition(&self, x: &T, window: usize, shift: usize) -> Result<T> {
        const OP: &str = "window_partition";
        let [b, h, w, c] = check::windows(x, window, shift)?;
        let n = b * h * w * c;
        let shape = vec![b * (h / window) * (w / window), window * window, c];
        let a = [b, h, w, c, window, shift].map(|v| v as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let px = self.arg::<E>(OP, x)?;
            self.output::<E>(shape, x.dtype(), |po| unsafe {
                self.launch(remap::config(n), Threads::Independent, |ctx| {
                    remap::window_partition(ctx, px, po, a[0], a[1], a[2], a[3], a[4], a[5])
                })
            })
        }))
    }

    fn window_reverse(&self, x: &T, hw: (usize, usize), window: usize, shift: usize) -> Result<T> {
        const OP: &str = "window_reverse";
        let [b, h, w, c] = check::window_reverse(x, hw, window, shift)?;
        let n = b * h * w * c;
        let a = [b, h, w, c, window, shift].map(|v| v as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let px = self.arg::<E>(OP, x)?;
            self.output::<E>(vec![b, h, w, c], x.dtype(), |po| unsafe {
                self.launch(remap::config(n), Threads::Independent, |ctx| {
                    remap::window_reverse(ctx, px, po, a[0], a[1], a[2], a[3], a[4], a[5])
                })
            })
        }))
    }

    fn patch_merge(&self, x: &T) -> Result<T> {
        const OP: &str = "patch_merge";
        let [b, h, w, c] = check::patch_merge(x)?;
        let n = b * h * w * c;
        let a = [b, h, w, c].map(|v| v as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let px = self.arg::<E>(OP, x)?;
            self.output::<E>(vec![b, h / 2, w / 2, 4 * c], x.dtype(), |po| unsafe {
                self.launch(remap::config(n), Threads::Independent, |ctx| {
                    remap::patch_merge(ctx, px, po, a[0], a[1], a[2], a[3])
                })
            })
        }))
    }

    fn upsample_bilinear(&self, x: &T, size: (usize, usize)) -> Result<T> {
        const OP: &str = "upsample_bilinear";
        let [n, c, h, w] = check::upsample_bilinear(x, size)?;
        let (oh, ow) = size;
        let total = n * c * oh * ow;
        let a = [n * c, h, w, oh, ow].map(|v| v as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let px = self.arg::<E>(OP, x)?;
            self.output::<E>(vec![n, c, oh, ow], x.dtype(), |po| unsafe {
                self.launch(remap::config(total), Threads::Independent, |ctx| {
                    remap::upsample_bilinear(ctx, px, po, a[0], a[1], a[2], a[3], a[4])
                })
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
            self.output::<E>(vec![b, oh, ow, c], maps[0].dtype(), |po| unsafe {
                self.launch(fusion::config(n), Threads::Independent, |ctx| {
                    fusion::upsample_sum_nhwc(ctx, p[0], p[1], p[2], p[3], po, &s)
                })
            })
        }))
    }

    fn conv_transpose2x2(&self, x: &T, w: &T, bias: &T) -> Result<T> {
        const OP: &str = "conv_transpose2x2";
        let ([n, cin, h, wd], cout) = check::conv_transpose2x2(x, w, bias)?;
        let total = n * cout * 4 * h * wd;
        let a = [n, cin, cout, h, wd].map(|v| v as u32);
        Ok(by_dtype!(x.dtype(), E => {
            let (px, pw, pb) = (self.arg::<E>(OP, x)?, self.arg::<E>(OP, w)?, self.arg::<E>(OP, bias)?);
            self.output::<E>(vec![n, cout, 2 * h, 2 * wd], x.dtype(), |po| unsafe {
                self.launch(remap::config(total), Threads::Independent, |ctx| {
                    remap::conv_transpose2x2(ctx, px, pw, pb, po, a[0], a[1], a[2], a[3], a[4])
                })
            })
        }))
    }

    fn hyper_product(&self, h: &T, u: &T) -> Result<T> {
        const OP: &str = "hyper_product";
        let (b, m, c, p) = check::hyper_product(h, u)?;
        let (m32, c32, p32) = (m as u32, c as u32, p as u32);
        Ok(by_dtype!(h.dtype(), E => {
            let (ph, pu) = (self.arg::<E>(OP, h)?, self.arg::<E>(OP, u)?);
            self.output::<E>(vec![b, m, p], h.dtype(), |po| unsafe {
                self.launch(hyper::config(b, m, c, p), Threads::Cooperative, |ctx| {
                    hyper::hyper_product(ctx, ph, pu, po, m32, c32, p32)
                })
            })
        }))
    }
}
