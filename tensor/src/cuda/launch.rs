//! Typed launch wrappers, one per kernel: they check the arguments against the buffers (an error
//! naming the kernel and shapes, never an out-of-bounds launch), pick the geometry from the kernel
//! module's `config`, and launch on the default stream.

use super::{drv, CudaDevice, CudaError, CudaResult, DeviceBuffer};
use cudarc::driver::result;
use half::{bf16, f16};
use kernels::ctx::LaunchConfig;
use kernels::{attention, elementwise, gemm, gemm_tc, layernorm, remap, softmax};
use std::ffi::c_void;

pub use kernels::attention::AttnShape;
pub use kernels::elementwise::{OP_ADD, OP_MUL};
pub use kernels::gemm::Strides as GemmStrides;
pub use kernels::gemm_tc::Strides as TcStrides;
pub use kernels::math::{ACT_GELU, ACT_NONE, ACT_RELU};

/// Element types with f32/bf16 kernel variants.
pub trait DevElem: Copy + Default {
    const SUFFIX: &'static str;
}
impl DevElem for f32 {
    const SUFFIX: &'static str = "f32";
}
impl DevElem for bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// Kernel names per element type (`&'static str` for the function table).
fn pick<E: DevElem>(f32_name: &'static str, bf16_name: &'static str) -> &'static str {
    if E::SUFFIX == "f32" {
        f32_name
    } else {
        bf16_name
    }
}

/// Pointers to each argument value, as `cuLaunchKernel` takes them.
macro_rules! args {
    ($($a:ident),* $(,)?) => { [$(&$a as *const _ as *mut std::ffi::c_void),*] };
}
pub(crate) use args;

fn invalid(kernel: &'static str, reason: String) -> CudaError {
    CudaError::Invalid { kernel, reason }
}

fn null_or<T>(b: Option<&DeviceBuffer<T>>) -> u64 {
    b.map_or(0, |b| b.ptr())
}

impl CudaDevice {
    /// Launches kernel `name` on this device's stream (`args`: pointers to each argument).
    pub(crate) fn launch(&self, name: &'static str, cfg: LaunchConfig, args: &mut [*mut c_void]) -> CudaResult<()> {
        self.bind()?;
        let (g, b) = (cfg.grid, cfg.block);
        drv("cuLaunchKernel", unsafe {
            result::launch_kernel(
                self.function(name),
                (g.x, g.y, g.z),
                (b.x, b.y, b.z),
                cfg.shared_bytes as u32,
                self.stream(),
                args,
            )
        })
    }

    /// `out = act(a op b[i % nb])`; `b = None` applies only the activation.
    pub fn binary<E: DevElem>(
        &self,
        a: &DeviceBuffer<E>,
        b: Option<&DeviceBuffer<E>>,
        out: &DeviceBuffer<E>,
        op: u32,
        act: u32,
    ) -> CudaResult<()> {
        let name = pick::<E>("ew_binary_f32", "ew_binary_bf16");
        let (n, nb) = (a.len(), b.map_or(1, |b| b.len()));
        if out.len() != n || nb == 0 || n % nb != 0 || n >= 1 << 31 {
            return Err(invalid(name, format!("a {n}, b {nb}, out {}: need out = a, a a multiple of b", out.len())));
        }
        if n == 0 {
            return Ok(());
        }
        let (pa, pb, po, n32, nb32) = (a.ptr(), null_or(b), out.ptr(), n as u32, nb as u32);
        self.launch(name, elementwise::config(n), &mut args![pa, pb, po, n32, nb32, op, act])
    }

    /// Softmax over rows of `[rows, cols]`.
    pub fn softmax_rows<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        out: &DeviceBuffer<E>,
        rows: usize,
        cols: usize,
    ) -> CudaResult<()> {
        let name = pick::<E>("softmax_rows_f32", "softmax_rows_bf16");
        if x.len() < rows * cols || out.len() < rows * cols {
            return Err(invalid(name, format!("[{rows}, {cols}] with x {} and out {}", x.len(), out.len())));
        }
        if rows * cols == 0 {
            return Ok(());
        }
        let (px, po) = (x.ptr(), out.ptr());
        self.launch(name, softmax::config(rows), &mut args![px, po, rows, cols])
    }

    /// LayerNorm over the last dim of `[rows, cols]`; gamma/beta hold `cols` or are absent.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_rows<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        gamma: Option<&DeviceBuffer<E>>,
        beta: Option<&DeviceBuffer<E>>,
        out: &DeviceBuffer<E>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> CudaResult<()> {
        let name = pick::<E>("layernorm_rows_f32", "layernorm_rows_bf16");
        let affine_ok = gamma.is_none_or(|g| g.len() >= cols) && beta.is_none_or(|b| b.len() >= cols);
        if x.len() < rows * cols || out.len() < rows * cols || !affine_ok {
            return Err(invalid(name, format!("[{rows}, {cols}] with x {} and out {}", x.len(), out.len())));
        }
        if rows * cols == 0 {
            return Ok(());
        }
        let (px, pg, pb, po) = (x.ptr(), null_or(gamma), null_or(beta), out.ptr());
        self.launch(name, layernorm::config_rows(rows), &mut args![px, pg, pb, po, rows, cols, eps])
    }

    /// LayerNorm2d over channels of NCHW `[n, ch, hw]`.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm2d<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        gamma: Option<&DeviceBuffer<E>>,
        beta: Option<&DeviceBuffer<E>>,
        out: &DeviceBuffer<E>,
        n: usize,
        ch: usize,
        hw: usize,
        eps: f32,
    ) -> CudaResult<()> {
        let name = pick::<E>("layernorm2d_f32", "layernorm2d_bf16");
        let total = n * ch * hw;
        let affine_ok = gamma.is_none_or(|g| g.len() >= ch) && beta.is_none_or(|b| b.len() >= ch);
        if x.len() < total || out.len() < total || !affine_ok || total >= 1 << 31 {
            return Err(invalid(name, format!("[{n}, {ch}, {hw}] with x {} and out {}", x.len(), out.len())));
        }
        if total == 0 {
            return Ok(());
        }
        let (px, pg, pb, po) = (x.ptr(), null_or(gamma), null_or(beta), out.ptr());
        let (n32, c32, hw32) = (n as u32, ch as u32, hw as u32);
        self.launch(name, layernorm::config_2d(n * hw), &mut args![px, pg, pb, po, n32, c32, hw32, eps])
    }

    /// f32 batched GEMM with arbitrary strides (see `kernels::gemm`).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f32(
        &self,
        a: &DeviceBuffer<f32>,
        b: &DeviceBuffer<f32>,
        bias: Option<&DeviceBuffer<f32>>,
        out: &DeviceBuffer<f32>,
        (batch, m, n, k): (usize, usize, usize, usize),
        s: GemmStrides,
        alpha: f32,
        act: u32,
    ) -> CudaResult<()> {
        let name = "gemm_f32";
        let last = |bs: u64, rs: u64, cs: u64, r: usize, c: usize| {
            (batch - 1) * bs as usize + (r - 1) * rs as usize + (c - 1) * cs as usize + 1
        };
        if batch * m * n == 0 {
            return Ok(());
        }
        let fits = k == 0
            || (a.len() >= last(s.batch_a, s.a_rs, s.a_cs, m, k) && b.len() >= last(s.batch_b, s.b_rs, s.b_cs, k, n));
        if !fits || out.len() < last(s.batch_c, s.c_rs, 1, m, n) || bias.is_some_and(|b| b.len() < n) {
            return Err(invalid(name, format!("batch {batch} m {m} n {n} k {k} {s:?}: buffers too small")));
        }
        let (pa, pb, pbias, po) = (a.ptr(), b.ptr(), null_or(bias), out.ptr());
        let (m32, n32, k32) = (m as u32, n as u32, k as u32);
        self.launch(name, gemm::config(m, n, batch), &mut args![pa, pb, pbias, po, m32, n32, k32, s, alpha, act])
    }

    /// Tensor-core GEMM `C = act(alpha * A B^T + bias)`, A `[m, k]`, B `[n, k]`, 16-bit inputs
    /// (bf16 or f16), f32 accumulation, output f32 or bf16.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_tc<I: TcInput, O: TcOutput>(
        &self,
        a: &DeviceBuffer<I>,
        b: &DeviceBuffer<I>,
        bias: Option<&DeviceBuffer<f32>>,
        out: &DeviceBuffer<O>,
        (batch, m, n, k): (usize, usize, usize, usize),
        s: TcStrides,
        alpha: f32,
        act: u32,
    ) -> CudaResult<()> {
        let name = match (I::NAME, O::NAME) {
            ("bf16", "f32") => "gemm_tc_bf16_f32",
            ("bf16", "bf16") => "gemm_tc_bf16_bf16",
            ("f16", "f32") => "gemm_tc_f16_f32",
            (i, o) => return Err(invalid("gemm_tc", format!("no variant for {i} inputs and {o} output"))),
        };
        if batch * m * n == 0 {
            return Ok(());
        }
        let last = |bs: u64, ld: u64, r: usize, c: usize| (batch - 1) * bs as usize + (r - 1) * ld as usize + c;
        let fits = k == 0 || (a.len() >= last(s.batch_a, s.lda, m, k) && b.len() >= last(s.batch_b, s.ldb, n, k));
        if !fits || out.len() < last(s.batch_c, s.ldc, m, n) || bias.is_some_and(|b| b.len() < n) {
            return Err(invalid(name, format!("batch {batch} m {m} n {n} k {k} {s:?}: buffers too small")));
        }
        let (pa, pb, pbias, po) = (a.ptr(), b.ptr(), null_or(bias), out.ptr());
        let (m32, n32, k32) = (m as u32, n as u32, k as u32);
        self.launch(name, gemm_tc::config(m, n, batch), &mut args![pa, pb, pbias, po, m32, n32, k32, s, alpha, act])
    }

    /// Fused attention, head dim 32: q/out `[batch, heads, nq, 32]`, k/v `[batch, heads, nk, 32]`,
    /// bias `[heads, nq, nk]`, mask `[n_mask, nq, nk]` (batch item b uses mask b % n_mask).
    #[allow(clippy::too_many_arguments)]
    pub fn attention<E: DevElem>(
        &self,
        q: &DeviceBuffer<E>,
        k: &DeviceBuffer<E>,
        v: &DeviceBuffer<E>,
        bias: Option<&DeviceBuffer<f32>>,
        mask: Option<&DeviceBuffer<f32>>,
        out: &DeviceBuffer<E>,
        batch: usize,
        s: AttnShape,
    ) -> CudaResult<()> {
        const D: usize = 32;
        let name = pick::<E>("attention_d32_f32", "attention_d32_bf16");
        let (h, nq, nk, nm) = (s.heads as usize, s.nq as usize, s.nk as usize, s.n_mask as usize);
        // This typed wrapper takes whole head-major buffers; strided layouts go through
        // `backend::cuda`, which checks the views it launches on.
        let hm = AttnShape::head_major(h, nq, nk, nm, s.scale, D);
        let strides = |a: &AttnShape| [a.q_bs, a.q_hs, a.q_rs, a.kv_bs, a.kv_hs, a.kv_rs, a.o_bs, a.o_hs, a.o_rs];
        if strides(&s) != strides(&hm) {
            return Err(invalid(name, format!("{s:?}: this wrapper takes head-major [batch, heads, n, {D}] buffers")));
        }
        let ok = q.len() >= batch * h * nq * D
            && out.len() >= batch * h * nq * D
            && k.len() >= batch * h * nk * D
            && v.len() >= batch * h * nk * D
            && bias.is_none_or(|b| b.len() >= h * nq * nk)
            && mask.is_none_or(|m| nm > 0 && m.len() >= nm * nq * nk)
            && nm > 0
            && nk > 0;
        if !ok {
            return Err(invalid(name, format!("batch {batch} {s:?}: buffers too small or empty keys")));
        }
        if batch * h * nq == 0 {
            return Ok(());
        }
        let (pq, pk, pv, pb, pm, po) = (q.ptr(), k.ptr(), v.ptr(), null_or(bias), null_or(mask), out.ptr());
        self.launch(name, attention::config::<D>(batch, h, nq), &mut args![pq, pk, pv, pb, pm, po, s])
    }

    /// Checks an index-remapping launch: element counts below 2^31 and buffers large enough.
    fn remap_check(
        name: &'static str,
        need_in: usize,
        inp: usize,
        need_out: usize,
        out: usize,
        shape: String,
    ) -> CudaResult<()> {
        if need_in > inp || need_out > out || need_in.max(need_out) >= 1 << 31 {
            return Err(invalid(
                name,
                format!("{shape}: input {inp} (need {need_in}), output {out} (need {need_out})"),
            ));
        }
        Ok(())
    }

    /// Swin window partition of `[b, h, w, ch]` (h, w multiples of `ws`) after a cyclic shift by
    /// `-shift`; `reverse` does the inverse (windows back to `[b, h, w, ch]`, shifted back).
    #[allow(clippy::too_many_arguments)]
    pub fn window_partition<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        out: &DeviceBuffer<E>,
        (b, h, w, ch): (usize, usize, usize, usize),
        ws: usize,
        shift: usize,
        reverse: bool,
    ) -> CudaResult<()> {
        let name = match (reverse, E::SUFFIX) {
            (false, "f32") => "window_partition_f32",
            (false, _) => "window_partition_bf16",
            (true, "f32") => "window_reverse_f32",
            (true, _) => "window_reverse_bf16",
        };
        let n = b * h * w * ch;
        if ws == 0 || h % ws != 0 || w % ws != 0 {
            return Err(invalid(name, format!("[{b}, {h}, {w}, {ch}] is not a whole number of {ws}x{ws} windows")));
        }
        Self::remap_check(name, n, x.len(), n, out.len(), format!("[{b}, {h}, {w}, {ch}]"))?;
        if n == 0 {
            return Ok(());
        }
        let (px, po) = (x.ptr(), out.ptr());
        let (b, h, w, ch, ws, shift) = (b as u32, h as u32, w as u32, ch as u32, ws as u32, shift as u32);
        self.launch(name, remap::config(n), &mut args![px, po, b, h, w, ch, ws, shift])
    }

    /// Patch merging gather `[b, h, w, ch]` -> `[b, h/2, w/2, 4ch]` (Swin's order).
    pub fn patch_merge<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        out: &DeviceBuffer<E>,
        (b, h, w, ch): (usize, usize, usize, usize),
    ) -> CudaResult<()> {
        let name = pick::<E>("patch_merge_f32", "patch_merge_bf16");
        if h % 2 != 0 || w % 2 != 0 {
            return Err(invalid(name, format!("[{b}, {h}, {w}, {ch}]: h and w must be even")));
        }
        let n = b * h * w * ch;
        Self::remap_check(name, n, x.len(), n, out.len(), format!("[{b}, {h}, {w}, {ch}]"))?;
        if n == 0 {
            return Ok(());
        }
        let (px, po, b, h, w, ch) = (x.ptr(), out.ptr(), b as u32, h as u32, w as u32, ch as u32);
        self.launch(name, remap::config(n), &mut args![px, po, b, h, w, ch])
    }

    /// Bilinear resize (`align_corners=False`) of NCHW planes `[nc, h, w]` to `[nc, oh, ow]`.
    pub fn upsample_bilinear<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        out: &DeviceBuffer<E>,
        (nc, h, w): (usize, usize, usize),
        (oh, ow): (usize, usize),
    ) -> CudaResult<()> {
        let name = pick::<E>("upsample_bilinear_f32", "upsample_bilinear_bf16");
        if h * w == 0 && nc * oh * ow > 0 {
            return Err(invalid(name, format!("empty input plane [{h}, {w}]")));
        }
        Self::remap_check(
            name,
            nc * h * w,
            x.len(),
            nc * oh * ow,
            out.len(),
            format!("[{nc}, {h}, {w}] -> [{oh}, {ow}]"),
        )?;
        if nc * oh * ow == 0 {
            return Ok(());
        }
        let (px, po) = (x.ptr(), out.ptr());
        let (nc, h, w, oh32, ow32) = (nc as u32, h as u32, w as u32, oh as u32, ow as u32);
        self.launch(name, remap::config(nc as usize * oh * ow), &mut args![px, po, nc, h, w, oh32, ow32])
    }

    /// Transposed convolution, kernel 2 stride 2: `[n, cin, h, w]` -> `[n, cout, 2h, 2w]`, weight
    /// `[cin, cout, 2, 2]`, optional bias `[cout]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose2x2<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        wt: &DeviceBuffer<E>,
        bias: Option<&DeviceBuffer<E>>,
        out: &DeviceBuffer<E>,
        (n, cin, h, w): (usize, usize, usize, usize),
        cout: usize,
    ) -> CudaResult<()> {
        let name = pick::<E>("conv_transpose2x2_f32", "conv_transpose2x2_bf16");
        let n_out = n * cout * 4 * h * w;
        if wt.len() < cin * cout * 4 || bias.is_some_and(|b| b.len() < cout) {
            return Err(invalid(name, format!("weight {} for [{cin}, {cout}, 2, 2] or bias too small", wt.len())));
        }
        Self::remap_check(
            name,
            n * cin * h * w,
            x.len(),
            n_out,
            out.len(),
            format!("[{n}, {cin}, {h}, {w}] -> {cout}"),
        )?;
        if n_out == 0 {
            return Ok(());
        }
        let (px, pw, pb, po) = (x.ptr(), wt.ptr(), null_or(bias), out.ptr());
        let (n, cin, cout, h, w) = (n as u32, cin as u32, cout as u32, h as u32, w as u32);
        self.launch(name, remap::config(n_out), &mut args![px, pw, pb, po, n, cin, cout, h, w])
    }
}

/// 16-bit input formats of the tensor-core GEMM.
pub trait TcInput: Copy + Default {
    const NAME: &'static str;
}
impl TcInput for bf16 {
    const NAME: &'static str = "bf16";
}
impl TcInput for f16 {
    const NAME: &'static str = "f16";
}
/// Output formats of the tensor-core GEMM.
pub trait TcOutput: Copy + Default {
    const NAME: &'static str;
}
impl TcOutput for f32 {
    const NAME: &'static str = "f32";
}
impl TcOutput for bf16 {
    const NAME: &'static str = "bf16";
}
