//! Kernel arguments built from device tensors, shared by the two backends that launch the
//! kernels (the emulator and CUDA), so the twins cannot drift apart: both pass exactly these.
//! Shapes are checked before (`check.rs`); every size here fits in u32.

use super::{Backend, BinaryOp, DevTensor};
use crate::ops::Activation;
use kernels::attention::AttnShape;
use kernels::fusion::UpsampleSumShape;
use kernels::math::{ACT_GELU, ACT_NONE, ACT_RELU};
use kernels::permute::PermuteShape;
use kernels::{elementwise, gemm, gemm_tc};

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

/// `linear`'s f32 GEMM: A = x `[rows, k]`, B = wᵀ (element (kk, j) is w[j, kk]), C `[rows, n]`.
pub fn linear_f32_strides(k: usize, n: usize) -> gemm::Strides {
    let (k, n) = (k as u64, n as u64);
    gemm::Strides { a_rs: k, a_cs: 1, b_rs: 1, b_cs: k, c_rs: n, batch_a: 0, batch_b: 0, batch_c: 0 }
}

/// `linear`'s tensor-core GEMM: A = x `[rows, k]`, B = w `[n, k]`, C `[rows, n]`.
pub fn linear_tc_strides(k: usize, n: usize) -> gemm_tc::Strides {
    let (k, n) = (k as u64, n as u64);
    gemm_tc::Strides { lda: k, ldb: k, ldc: n, batch_a: 0, batch_b: 0, batch_c: 0 }
}

/// `conv_transpose2x2` as a GEMM batched over the kernel's four taps `t = 2·dy + dx`: A is x in
/// NHWC `[N·H·W, Cin]` and C is `[N·H·W, 4, Cout]` (tap t in columns `t·Cout..`), the bias added
/// per tap. The f32 GEMM reads tap t of the weight `[Cin, Cout, 2, 2]` in place:
/// `B_t[ci][co] = w[ci, co, t]`.
pub fn conv_taps_f32_strides(cin: usize, cout: usize) -> gemm::Strides {
    let (cin, cout) = (cin as u64, cout as u64);
    gemm::Strides { a_rs: cin, a_cs: 1, b_rs: 4 * cout, b_cs: 4, c_rs: 4 * cout, batch_a: 0, batch_b: 1, batch_c: cout }
}

/// The same on the tensor cores, whose B operand is k-contiguous: `B_t` `[Cout, Cin]` is tap t of
/// the weight permuted to `[4, Cout, Cin]` ([`conv_transpose_by_taps`] does that).
pub fn conv_taps_tc_strides(cin: usize, cout: usize) -> gemm_tc::Strides {
    let (cin, cout) = (cin as u64, cout as u64);
    gemm_tc::Strides { lda: cin, ldb: cin, ldc: 4 * cout, batch_a: 0, batch_b: cout * cin, batch_c: cout }
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
