//! Launching the kernels' typed argument structs (`kernels::abi`: one per kernel, the same
//! description that declares its PTX entry point), and checked wrappers on whole buffers, one per
//! kernel: they check the arguments against the buffers (an error naming the kernel and shapes,
//! never an out-of-bounds launch), pick the geometry from the kernel module's `config`, and launch.
//! The backend (`backend::cuda`) launches the same structs on tensor views.

use super::{drv, CudaDevice, CudaError, CudaResult, DeviceBuffer};
use cudarc::driver::result;
use half::{bf16, f16};
use kernels::abi::{
    Attention, AttentionTc, ConvTranspose2x2, EwBinary, GemmF32, GemmTc, Layernorm2d, LayernormRows, PatchMerge,
    SoftmaxRows, UpsampleBilinear, WindowPartition, WindowReverse,
};
use kernels::ctx::LaunchConfig;
use kernels::{attention, attention_tc, elementwise, gemm, gemm_tc, layernorm, remap, softmax, Elem, Kernel};

pub use kernels::attention::AttnShape;
pub use kernels::elementwise::{OP_ADD, OP_MUL};
pub use kernels::gemm::Strides as GemmStrides;
pub use kernels::gemm_tc::Strides as TcStrides;
pub use kernels::math::{ACT_GELU, ACT_NONE, ACT_RELU};

/// Host element types of device buffers, and the kernels' element type each one is.
pub trait DevElem: Copy + Default {
    type K: Elem;
}
impl DevElem for f32 {
    type K = f32;
}
impl DevElem for bf16 {
    type K = kernels::Bf16;
}

/// 16-bit input formats of the tensor-core GEMM.
pub trait TcInput: Copy + Default {
    type K: gemm_tc::MmaInput;
}
impl TcInput for bf16 {
    type K = kernels::Bf16;
}
impl TcInput for f16 {
    type K = kernels::F16;
}

/// A buffer's device address as a kernel pointer of element type `K`.
fn p<T, K>(b: &DeviceBuffer<T>) -> *const K {
    b.ptr() as *const K
}
fn p_mut<T, K>(b: &DeviceBuffer<T>) -> *mut K {
    b.ptr() as *mut K
}
fn p_opt<T, K>(b: Option<&DeviceBuffer<T>>) -> *const K {
    b.map_or(std::ptr::null(), p)
}

fn invalid(kernel: &'static str, reason: String) -> CudaError {
    CudaError::Invalid { kernel, reason }
}

impl CudaDevice {
    /// Launches the kernel instance `K` with `args` on this device's stream. The pointers in
    /// `args` are device addresses; the caller keeps them inside its buffers for `cfg`.
    pub fn launch<K: Kernel>(&self, cfg: LaunchConfig, args: &K) -> CudaResult<()> {
        self.bind()?;
        let (g, b) = (cfg.grid, cfg.block);
        let mut params = args.params();
        drv("cuLaunchKernel", unsafe {
            result::launch_kernel(
                self.function(K::NAME),
                (g.x, g.y, g.z),
                (b.x, b.y, b.z),
                cfg.shared_bytes as u32,
                self.stream(),
                &mut params[..K::PARAM_SIZES.len()],
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
    ) -> CudaResult<()>
    where
        EwBinary<E::K>: Kernel,
    {
        let (n, nb) = (a.len(), b.map_or(1, |b| b.len()));
        if out.len() != n || nb == 0 || n % nb != 0 || n >= 1 << 31 {
            let reason = format!("a {n}, b {nb}, out {}: need out = a, a a multiple of b", out.len());
            return Err(invalid(EwBinary::<E::K>::NAME, reason));
        }
        if n == 0 {
            return Ok(());
        }
        let args = EwBinary { a: p(a), b: p_opt(b), out: p_mut(out), n: n as u32, nb: nb as u32, op, act };
        self.launch(elementwise::config(n), &args)
    }

    /// Softmax over rows of `[rows, cols]`.
    pub fn softmax_rows<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        out: &DeviceBuffer<E>,
        rows: usize,
        cols: usize,
    ) -> CudaResult<()>
    where
        SoftmaxRows<E::K>: Kernel,
    {
        if x.len() < rows * cols || out.len() < rows * cols {
            let reason = format!("[{rows}, {cols}] with x {} and out {}", x.len(), out.len());
            return Err(invalid(SoftmaxRows::<E::K>::NAME, reason));
        }
        if rows * cols == 0 {
            return Ok(());
        }
        self.launch(softmax::config(rows), &SoftmaxRows { x: p(x), out: p_mut(out), rows, cols })
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
    ) -> CudaResult<()>
    where
        LayernormRows<E::K>: Kernel,
    {
        let affine_ok = gamma.is_none_or(|g| g.len() >= cols) && beta.is_none_or(|b| b.len() >= cols);
        if x.len() < rows * cols || out.len() < rows * cols || !affine_ok {
            let reason = format!("[{rows}, {cols}] with x {} and out {}", x.len(), out.len());
            return Err(invalid(LayernormRows::<E::K>::NAME, reason));
        }
        if rows * cols == 0 {
            return Ok(());
        }
        let args = LayernormRows { x: p(x), g: p_opt(gamma), b: p_opt(beta), out: p_mut(out), rows, cols, eps };
        self.launch(layernorm::config_rows(rows), &args)
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
    ) -> CudaResult<()>
    where
        Layernorm2d<E::K>: Kernel,
    {
        let total = n * ch * hw;
        let affine_ok = gamma.is_none_or(|g| g.len() >= ch) && beta.is_none_or(|b| b.len() >= ch);
        if x.len() < total || out.len() < total || !affine_ok || total >= 1 << 31 {
            let reason = format!("[{n}, {ch}, {hw}] with x {} and out {}", x.len(), out.len());
            return Err(invalid(Layernorm2d::<E::K>::NAME, reason));
        }
        if total == 0 {
            return Ok(());
        }
        let (x, g, b, out) = (p(x), p_opt(gamma), p_opt(beta), p_mut(out));
        let args = Layernorm2d { x, g, b, out, n: n as u32, ch: ch as u32, hw: hw as u32, eps };
        self.launch(layernorm::config_2d(n * hw), &args)
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
        let last = |bs: u64, rs: u64, cs: u64, r: usize, c: usize| {
            (batch - 1) * bs as usize + (r - 1) * rs as usize + (c - 1) * cs as usize + 1
        };
        if batch * m * n == 0 {
            return Ok(());
        }
        let fits = k == 0
            || (a.len() >= last(s.batch_a, s.a_rs, s.a_cs, m, k) && b.len() >= last(s.batch_b, s.b_rs, s.b_cs, k, n));
        if !fits || out.len() < last(s.batch_c, s.c_rs, 1, m, n) || bias.is_some_and(|b| b.len() < n) {
            let reason = format!("batch {batch} m {m} n {n} k {k} {s:?}: buffers too small");
            return Err(invalid(GemmF32::<f32>::NAME, reason));
        }
        let (m, n, k) = (m as u32, n as u32, k as u32);
        let residual = std::ptr::null();
        let args = GemmF32 { a: p(a), b: p(b), bias: p_opt(bias), residual, out: p_mut(out), m, n, k, s, alpha, act };
        self.launch(gemm::config(m as usize, n as usize, batch), &args)
    }

    /// Tensor-core GEMM `C = act(alpha * A B^T + bias)`, A `[m, k]`, B `[n, k]`, 16-bit inputs
    /// (bf16 or f16), f32 accumulation, output f32 or bf16 (the instances that exist: a missing
    /// one does not compile).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_tc<I: TcInput, O: DevElem>(
        &self,
        a: &DeviceBuffer<I>,
        b: &DeviceBuffer<I>,
        bias: Option<&DeviceBuffer<f32>>,
        out: &DeviceBuffer<O>,
        (batch, m, n, k): (usize, usize, usize, usize),
        s: TcStrides,
        alpha: f32,
        act: u32,
    ) -> CudaResult<()>
    where
        GemmTc<I::K, O::K>: Kernel,
    {
        if batch * m * n == 0 {
            return Ok(());
        }
        let last = |bs: u64, ld: u64, r: usize, c: usize| (batch - 1) * bs as usize + (r - 1) * ld as usize + c;
        let fits = k == 0 || (a.len() >= last(s.batch_a, s.lda, m, k) && b.len() >= last(s.batch_b, s.ldb, n, k));
        if !fits || out.len() < last(s.batch_c, s.ldc, m, n) || bias.is_some_and(|b| b.len() < n) {
            let reason = format!("batch {batch} m {m} n {n} k {k} {s:?}: buffers too small");
            return Err(invalid(GemmTc::<I::K, O::K>::NAME, reason));
        }
        let (m, n, k) = (m as u32, n as u32, k as u32);
        let residual = std::ptr::null();
        let args = GemmTc { a: p(a), b: p(b), bias: p_opt(bias), residual, out: p_mut(out), m, n, k, s, alpha, act };
        self.launch(gemm_tc::config(m as usize, n as usize, batch), &args)
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
    ) -> CudaResult<()>
    where
        Attention<E::K, 32>: Kernel,
    {
        const D: usize = 32;
        if !attention_fits(Attention::<E::K, D>::NAME, D, [q.len(), k.len(), v.len(), out.len()], bias, mask, batch, s)?
        {
            return Ok(());
        }
        let (q, k, v, out) = (p(q), p(k), p(v), p_mut(out));
        let args = Attention::<E::K, D> { q, k, v, bias: p_opt(bias), mask: p_opt(mask), out, s };
        self.launch(attention::config::<D>(batch, s.heads as usize, s.nq as usize), &args)
    }

    /// [`Self::attention`] on the tensor cores (`attention_tc`: bf16, head dim 32), the same
    /// buffers and shapes.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_tc(
        &self,
        q: &DeviceBuffer<bf16>,
        k: &DeviceBuffer<bf16>,
        v: &DeviceBuffer<bf16>,
        bias: Option<&DeviceBuffer<f32>>,
        mask: Option<&DeviceBuffer<f32>>,
        out: &DeviceBuffer<bf16>,
        batch: usize,
        s: AttnShape,
    ) -> CudaResult<()> {
        const D: usize = 32;
        type K = AttentionTc<kernels::Bf16, D>;
        if !attention_fits(K::NAME, D, [q.len(), k.len(), v.len(), out.len()], bias, mask, batch, s)? {
            return Ok(());
        }
        let (q, k, v, out) = (p(q), p(k), p(v), p_mut(out));
        let args = K { q, k, v, bias: p_opt(bias), mask: p_opt(mask), out, s };
        self.launch(attention_tc::config::<D>(batch, s.heads as usize, s.nq as usize), &args)
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
    ) -> CudaResult<()>
    where
        WindowPartition<E::K>: Kernel,
        WindowReverse<E::K>: Kernel,
    {
        let name = if reverse { WindowReverse::<E::K>::NAME } else { WindowPartition::<E::K>::NAME };
        let n = b * h * w * ch;
        if ws == 0 || h % ws != 0 || w % ws != 0 {
            return Err(invalid(name, format!("[{b}, {h}, {w}, {ch}] is not a whole number of {ws}x{ws} windows")));
        }
        Self::remap_check(name, n, x.len(), n, out.len(), format!("[{b}, {h}, {w}, {ch}]"))?;
        if n == 0 {
            return Ok(());
        }
        let (x, out) = (p(x), p_mut(out));
        let [b, h, w, ch, ws, shift] = [b, h, w, ch, ws, shift].map(|v| v as u32);
        if reverse {
            self.launch(remap::config(n), &WindowReverse { x, residual: std::ptr::null(), out, b, h, w, ch, ws, shift })
        } else {
            self.launch(remap::config(n), &WindowPartition { x, out, b, h, w, ch, ws, shift })
        }
    }

    /// Patch merging gather `[b, h, w, ch]` -> `[b, h/2, w/2, 4ch]` (Swin's order).
    pub fn patch_merge<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        out: &DeviceBuffer<E>,
        (b, h, w, ch): (usize, usize, usize, usize),
    ) -> CudaResult<()>
    where
        PatchMerge<E::K>: Kernel,
    {
        let name = PatchMerge::<E::K>::NAME;
        if h % 2 != 0 || w % 2 != 0 {
            return Err(invalid(name, format!("[{b}, {h}, {w}, {ch}]: h and w must be even")));
        }
        let n = b * h * w * ch;
        Self::remap_check(name, n, x.len(), n, out.len(), format!("[{b}, {h}, {w}, {ch}]"))?;
        if n == 0 {
            return Ok(());
        }
        let [b, h, w, ch] = [b, h, w, ch].map(|v| v as u32);
        self.launch(remap::config(n), &PatchMerge { x: p(x), out: p_mut(out), b, h, w, ch })
    }

    /// Bilinear resize (`align_corners=False`) of NCHW planes `[nc, h, w]` to `[nc, oh, ow]`.
    pub fn upsample_bilinear<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        out: &DeviceBuffer<E>,
        (nc, h, w): (usize, usize, usize),
        (oh, ow): (usize, usize),
    ) -> CudaResult<()>
    where
        UpsampleBilinear<E::K>: Kernel,
    {
        let name = UpsampleBilinear::<E::K>::NAME;
        if h * w == 0 && nc * oh * ow > 0 {
            return Err(invalid(name, format!("empty input plane [{h}, {w}]")));
        }
        let shape = format!("[{nc}, {h}, {w}] -> [{oh}, {ow}]");
        Self::remap_check(name, nc * h * w, x.len(), nc * oh * ow, out.len(), shape)?;
        if nc * oh * ow == 0 {
            return Ok(());
        }
        let total = nc * oh * ow;
        let [nc, h, w, oh, ow] = [nc, h, w, oh, ow].map(|v| v as u32);
        self.launch(remap::config(total), &UpsampleBilinear { x: p(x), out: p_mut(out), nc, h, w, oh, ow })
    }

    /// Transposed convolution, kernel 2 stride 2: `[n, cin, h, w]` -> `[n, cout, 2h, 2w]`, weight
    /// `[cin, cout, 2, 2]`, optional bias `[cout]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose2x2<E: DevElem>(
        &self,
        x: &DeviceBuffer<E>,
        wt: &DeviceBuffer<E>,
        bias: Option<&DeviceBuffer<f32>>,
        out: &DeviceBuffer<E>,
        (n, cin, h, w): (usize, usize, usize, usize),
        cout: usize,
    ) -> CudaResult<()>
    where
        ConvTranspose2x2<E::K>: Kernel,
    {
        let name = ConvTranspose2x2::<E::K>::NAME;
        let n_out = n * cout * 4 * h * w;
        if wt.len() < cin * cout * 4 || bias.is_some_and(|b| b.len() < cout) {
            return Err(invalid(name, format!("weight {} for [{cin}, {cout}, 2, 2] or bias too small", wt.len())));
        }
        let shape = format!("[{n}, {cin}, {h}, {w}] -> {cout}");
        Self::remap_check(name, n * cin * h * w, x.len(), n_out, out.len(), shape)?;
        if n_out == 0 {
            return Ok(());
        }
        let (x, wt, bias, out) = (p(x), p(wt), p_opt(bias), p_mut(out));
        let [n, cin, cout, h, w] = [n, cin, cout, h, w].map(|v| v as u32);
        self.launch(remap::config(n_out), &ConvTranspose2x2 { x, wt, bias, out, n, cin, cout, h, w })
    }
}

/// Checks the typed attention wrappers' head-major buffers (q, k, v, out lengths) for head dim `d`:
/// an error naming the kernel, or whether there is anything to compute.
#[allow(clippy::too_many_arguments)]
fn attention_fits(
    name: &'static str,
    d: usize,
    [q, k, v, out]: [usize; 4],
    bias: Option<&DeviceBuffer<f32>>,
    mask: Option<&DeviceBuffer<f32>>,
    batch: usize,
    s: AttnShape,
) -> CudaResult<bool> {
    let (h, nq, nk, nm) = (s.heads as usize, s.nq as usize, s.nk as usize, s.n_mask as usize);
    // These wrappers take whole head-major buffers; strided layouts go through `backend::cuda`,
    // which checks the views it launches on.
    let hm = AttnShape::head_major(h, nq, nk, nm, s.scale, d);
    let strides = |a: &AttnShape| [a.q_bs, a.q_hs, a.q_rs, a.kv_bs, a.kv_hs, a.kv_rs, a.o_bs, a.o_hs, a.o_rs];
    if strides(&s) != strides(&hm) {
        return Err(invalid(name, format!("{s:?}: this wrapper takes head-major [batch, heads, n, {d}] buffers")));
    }
    let ok = q >= batch * h * nq * d
        && out >= batch * h * nq * d
        && k >= batch * h * nk * d
        && v >= batch * h * nk * d
        && bias.is_none_or(|b| b.len() >= h * nq * nk)
        && mask.is_none_or(|m| nm > 0 && m.len() >= nm * nq * nk)
        && nm > 0
        && nk > 0;
    if !ok {
        return Err(invalid(name, format!("batch {batch} {s:?}: buffers too small or empty keys")));
    }
    Ok(batch * h * nq > 0)
}
