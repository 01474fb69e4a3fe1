//! Kernel arguments built from device tensors, shared by the two backends that launch the
//! kernels (the emulator and CUDA), so the twins cannot drift apart: both pass exactly these.
//! Shapes are checked before (`check.rs`); every size here fits in u32.

use super::{Backend, BinaryOp, DevTensor};
use crate::ops::Activation;
use kernels::abi::{GemmF32, GemmTc};
use kernels::attention::AttnShape;
use kernels::ctx::LaunchConfig;
use kernels::fusion::UpsampleSumShape;
use kernels::math::{ACT_GELU, ACT_NONE, ACT_RELU};
use kernels::permute::PermuteShape;
use kernels::{elementwise, gemm, gemm_tc, Bf16};

/// Runs `$body` with `$E` the kernels' element type for `$dt` (f32 or `kernels::Bf16`), so one
/// generic expression builds the f32 or the bf16 instance of a kernel's argument struct.
macro_rules! by_dtype {
    ($dt:expr, $E:ident => $body:expr) => {
        match $dt {
            $crate::DType::F32 => {
                type $E = f32;
                $body
            }
            _ => {
                type $E = kernels::Bf16;
                $body
            }
        }
    };
}
pub(super) use by_dtype;

pub fn act_code(a: Activation) -> u32 {
    match a {
        Activation::None => ACT_NONE,
        Activation::Relu => ACT_RELU,
        Activation::Gelu => ACT_GELU,
    }
}

pub fn binary_code(op: BinaryOp) -> u32 {
    match op {
        BinaryOp::Add => elementwise::OP_ADD,
        BinaryOp::Mul => elementwise::OP_MUL,
    }
}

/// `x` (contiguous, dims `in_dims`) permuted by `perm` into `out_dims`: output dim d walks input
/// dim perm[d], whose contiguous stride is the product of the input dims after it.
pub fn permute_shape(in_dims: &[usize], perm: &[usize], out_dims: &[usize]) -> PermuteShape {
    let mut s = PermuteShape { rank: perm.len() as u32, out_dims: [1; 6], in_strides: [0; 6] };
    for (d, &p) in perm.iter().enumerate() {
        s.out_dims[d] = out_dims[d] as u32;
        s.in_strides[d] = in_dims[p + 1..].iter().product::<usize>() as u32;
    }
    s
}

/// One GEMM launch as both device backends make it: `batch` products `C = A B (+ bias)` of
/// `m x n x k`, laid out as `f32` says for the SIMT kernel and as `tc` says for the tensor-core
/// kernel (which reads B k-contiguous), into a new tensor of `out_shape`. The dtype picks the
/// kernel.
pub struct GemmPlan {
    pub out_shape: Vec<usize>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub f32: gemm::Strides,
    pub tc: gemm_tc::Strides,
}

impl GemmPlan {
    /// `linear` on x of shape `[.., k]`: A = x as `[rows, k]`, B = wᵀ with w `[n, k]`, C
    /// `[rows, n]`, shaped `[.., n]`.
    pub fn linear(x_shape: &[usize], k: usize, n: usize) -> GemmPlan {
        let (k64, n64) = (k as u64, n as u64);
        let mut out_shape = x_shape.to_vec();
        *out_shape.last_mut().expect("rank >= 1") = n;
        GemmPlan {
            m: x_shape[..x_shape.len() - 1].iter().product(),
            out_shape,
            n,
            k,
            batch: 1,
            f32: gemm::Strides {
                a_rs: k64,
                a_cs: 1,
                b_rs: 1,
                b_cs: k64,
                c_rs: n64,
                batch_a: 0,
                batch_b: 0,
                batch_c: 0,
            },
            tc: gemm_tc::Strides { lda: k64, ldb: k64, ldc: n64, batch_a: 0, batch_b: 0, batch_c: 0 },
        }
    }

    /// `conv_transpose2x2` as a GEMM batched over the kernel's four taps `t = 2·dy + dx`: A is x
    /// in NHWC `[rows = N·H·W, Cin]` and C is `[rows, 4, Cout]` (tap t in columns `t·Cout..`), the
    /// bias added per tap. The f32 GEMM reads tap t of the weight `[Cin, Cout, 2, 2]` in place
    /// (`B_t[ci][co] = w[ci, co, t]`); the tensor cores read `B_t` `[Cout, Cin]`, tap t of the
    /// weight permuted to `[4, Cout, Cin]` ([`conv_transpose_by_taps`] does that).
    pub fn conv_taps(rows: usize, cin: usize, cout: usize) -> GemmPlan {
        let (ci, co) = (cin as u64, cout as u64);
        GemmPlan {
            out_shape: vec![rows, 4 * cout],
            m: rows,
            n: cout,
            k: cin,
            batch: 4,
            f32: gemm::Strides {
                a_rs: ci,
                a_cs: 1,
                b_rs: 4 * co,
                b_cs: 4,
                c_rs: 4 * co,
                batch_a: 0,
                batch_b: 1,
                batch_c: co,
            },
            tc: gemm_tc::Strides { lda: ci, ldb: ci, ldc: 4 * co, batch_a: 0, batch_b: co * ci, batch_c: co },
        }
    }

    /// The SIMT kernel's launch geometry.
    pub fn f32_config(&self) -> LaunchConfig {
        gemm::config(self.m, self.n, self.batch)
    }

    /// The SIMT kernel's arguments (f32 operands; a null bias or residual is absent).
    pub fn f32_args(
        &self,
        [a, b]: [*const f32; 2],
        [bias, residual]: [*const f32; 2],
        act: u32,
        out: *mut f32,
    ) -> GemmF32<f32> {
        let (m, n, k) = (self.m as u32, self.n as u32, self.k as u32);
        GemmF32 { a, b, bias, residual, out, m, n, k, s: self.f32, alpha: 1.0, act }
    }

    /// The tensor-core kernel's launch geometry.
    pub fn tc_config(&self) -> LaunchConfig {
        gemm_tc::config(self.m, self.n, self.batch)
    }

    /// The tensor-core kernel's arguments (bf16 operands, residual and output; f32 bias).
    pub fn tc_args(
        &self,
        [a, b]: [*const Bf16; 2],
        bias: *const f32,
        residual: *const Bf16,
        act: u32,
        out: *mut Bf16,
    ) -> GemmTc<Bf16, Bf16> {
        let (m, n, k) = (self.m as u32, self.n as u32, self.k as u32);
        GemmTc { a, b, bias, residual, out, m, n, k, s: self.tc, alpha: 1.0, act }
    }
}

/// `conv_transpose2x2` around `taps`, the backend's GEMM over the four taps: x `[N, Cin, H, W]` goes
/// to NHWC rows, the weight to the tap-major `[4, Cout, Cin]` the tensor-core GEMM reads (f32 reads
/// it in place), and the GEMM's `[N, H, W, dy, dx, Cout]` to NCHW `[N, Cout, 2H, 2W]`. A direct
/// kernel (`remap::conv_transpose2x2`, one thread per output pixel) computes the same; at the
/// decoder's shapes it ran 35x slower than this on an H200 (8.7 ms at batch 64, bf16), because it
/// is a 26 GFLOP product done on the CUDA cores one dot at a time.
pub fn conv_transpose_by_taps<B: Backend + ?Sized>(
    be: &B,
    x: &DevTensor<B>,
    w: &DevTensor<B>,
    [n, cin, h, wd]: [usize; 4],
    cout: usize,
    taps: impl FnOnce(&DevTensor<B>, &DevTensor<B>) -> crate::Result<DevTensor<B>>,
) -> crate::Result<DevTensor<B>> {
    let rows = be.permute(x, &[0, 2, 3, 1])?.reshape(&[n * h * wd, cin])?;
    let w = match x.dtype() {
        crate::DType::F32 => w.clone(),
        _ => be.permute(&w.reshape(&[cin, cout, 4])?, &[2, 1, 0])?,
    };
    let y = taps(&rows, &w)?.reshape(&[n, h, wd, 2, 2, cout])?;
    be.permute(&y, &[0, 5, 1, 3, 2, 4])?.reshape(&[n, cout, 2 * h, 2 * wd])
}

/// Batch item b uses mask `b % n_mask`; without a mask every item uses "mask 0" (never read).
fn n_mask<B: Backend + ?Sized>(mask: Option<&DevTensor<B>>) -> usize {
    mask.map_or(1, |m| m.shape()[0])
}

/// Token-major q `[B, nq, h·d]`, k and v `[B, nk, h·d]`, out `[B, nq, h·d]`.
pub fn attention_shape<B: Backend + ?Sized>(
    (h, nq, nk, d): (usize, usize, usize, usize),
    mask: Option<&DevTensor<B>>,
    scale: f32,
) -> AttnShape {
    let w = h * d;
    AttnShape::token_major(h, nq, nk, n_mask(mask), scale, d, (w, w, w))
}

/// Packed qkv `[B, n, 3C]` (q, k, v at column offsets 0, C, 2C: see [`packed_offsets`]), out
/// `[B, n, C]`, C = h·d.
pub fn attention_packed_shape<B: Backend + ?Sized>(
    (h, n, d): (usize, usize, usize),
    mask: Option<&DevTensor<B>>,
    scale: f32,
) -> AttnShape {
    let c = h * d;
    AttnShape::token_major(h, n, n, n_mask(mask), scale, d, (3 * c, 3 * c, c))
}

/// Element offsets of q, k and v inside a packed qkv row of 3·h·d.
pub fn packed_offsets(h: usize, d: usize) -> [usize; 3] {
    [0, h * d, 2 * h * d]
}

/// The fusion sum over `maps` (each `[b, h_i, w_i, c]`) to `[b, size.0, size.1, c]`.
pub fn upsample_sum_shape<B: Backend + ?Sized>(
    maps: &[&DevTensor<B>],
    (b, c): (usize, usize),
    (oh, ow): (usize, usize),
) -> UpsampleSumShape {
    let mut s = UpsampleSumShape {
        n_maps: maps.len() as u32,
        b: b as u32,
        c: c as u32,
        oh: oh as u32,
        ow: ow as u32,
        h: [0; 4],
        w: [0; 4],
    };
    for (i, m) in maps.iter().enumerate() {
        (s.h[i], s.w[i]) = (m.shape()[1] as u32, m.shape()[2] as u32);
    }
    s
}
