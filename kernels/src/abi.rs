//! The launch ABI: one description per kernel drives its `extern "ptx-kernel"` entry points (on
//! nvptx), the emulator launch and the CUDA launch (on the host).
//!
//! For each kernel, [`kernels!`] declares a plain struct of its parameters in the entry point's
//! order (`EwBinary<E> { a, b, out, n, nb, op, act }`), an [`Args`] impl that runs the generic
//! body with any [`Ctx`] (the emulator) and lists pointers to the fields in order (what
//! `cuLaunchKernel` takes), and per entry point a module that names the instance ([`Kernel`]) and,
//! on nvptx, declares the entry with exactly those parameters. A host caller fills the struct by
//! field name, so a parameter added, removed, renamed or retyped in a body fails to compile on the
//! host instead of failing on a GPU; the committed PTX is checked against the same description
//! (names and parameter sizes) by `tests/abi.rs`.

use crate::attention::{self, AttnShape};
use crate::attention_tc;
use crate::ctx::Ctx;
use crate::fusion::{self, UpsampleSumShape};
use crate::gemm_tc::{self, MmaInput};
use crate::math::{Bf16, Elem, F16};
use crate::permute::{self, PermuteShape};
use crate::{elementwise, gemm, hyper, layernorm, reduce, remap, softmax};
use core::ffi::c_void;

/// How a kernel's threads interact, which decides how the emulator runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// Barriers, shared memory or warp-level ops: every thread of a block alive at once.
    Cooperative,
    /// No interaction: threads may run one after another.
    Independent,
}

/// A kernel's parameters, for any instance (element type, head dim).
pub trait Args {
    const THREADS: Threads;
    /// `size_of` each parameter, in order (checked against the committed PTX's `.param`s).
    const PARAM_SIZES: &'static [usize];
    /// Runs the kernel body as thread `c`.
    ///
    /// # Safety
    /// The pointers are valid for what the body accesses under the kernel's `config`.
    unsafe fn run<C: Ctx>(&self, c: &C);
    /// Pointers to each parameter, in the entry point's order (`cuLaunchKernel`'s `kernelParams`),
    /// valid while `self` is; the first `PARAM_SIZES.len()` are used, the rest are null.
    fn params(&self) -> [*mut c_void; MAX_PARAMS];
}

/// The most parameters a kernel may have (a fixed array keeps launches allocation-free).
pub const MAX_PARAMS: usize = 12;

/// One instance of a kernel: the entry point the host looks up in the PTX.
pub trait Kernel: Args {
    const NAME: &'static str;
}

/// An entry point of the committed PTX: its name and the `size_of` of each parameter.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub name: &'static str,
    pub param_sizes: &'static [usize],
}

/// How an entry parameter reaches the body: scalars and pointers by value, shape structs (a
/// byval `.param` on the device) by reference.
pub trait Pass {
    type As<'a>
    where
        Self: 'a;
    fn pass(&self) -> Self::As<'_>;
}

macro_rules! pass_by_value {
    ($($t:ty),*) => {$(
        impl Pass for $t {
            type As<'a> = $t;
            #[inline(always)]
            fn pass(&self) -> $t {
                *self
            }
        }
    )*};
}
pass_by_value!(u32, usize, f32);

impl<T> Pass for *const T {
    type As<'a>
        = *const T
    where
        T: 'a;
    #[inline(always)]
    fn pass(&self) -> *const T {
        *self
    }
}
impl<T> Pass for *mut T {
    type As<'a>
        = *mut T
    where
        T: 'a;
    #[inline(always)]
    fn pass(&self) -> *mut T {
        *self
    }
}

macro_rules! pass_by_ref {
    ($($t:ty),*) => {$(
        impl Pass for $t {
            type As<'a> = &'a $t;
            #[inline(always)]
            fn pass(&self) -> &$t {
                self
            }
        }
    )*};
}
pass_by_ref!(gemm::Strides, gemm_tc::Strides, AttnShape, PermuteShape, UpsampleSumShape);

/// `kernels! { Threads Name[uses][bounds] (params) => body_path { entry { aliases } ... } ... }`:
/// the struct `Name<uses>` with `params` as public fields, its [`Args`] impl calling `body_path`,
/// and per entry a module whose aliases (`type E = f32;`, `const D: usize = 8;`) fix the instance
/// that it names ([`Kernel`]) and, on nvptx, exports as `extern "ptx-kernel" fn entry(params)`.
/// Also [`ENTRIES`], every entry point.
macro_rules! kernels {
    ($(
        $(#[$meta:meta])*
        $threads:ident $name:ident $uses:tt [$($bounds:tt)*] $params:tt => $body:path {
            $($entry:ident { $($alias:item)* })*
        }
    )*) => {
        $(
            kernels!(@args [$(#[$meta])*] $threads $name $uses [$($bounds)*] $params $body);
            $(kernels!(@entry $entry [$($alias)*] $name $uses $params $body);)*
        )*

        /// Every entry point in the PTX, in declaration order.
        pub const ENTRIES: &[Entry] = &[$($(
            Entry { name: stringify!($entry), param_sizes: $entry::PARAM_SIZES },
        )*)*];
    };

    (@args [$($meta:tt)*] $threads:ident $name:ident [$($u:ident),*] [$($bounds:tt)*]
        ($($p:ident : $t:ty),* $(,)?) $body:path) => {
        $($meta)*
        #[derive(Clone, Copy, Debug)]
        pub struct $name<$($bounds)*> {
            $(pub $p: $t,)*
        }

        impl<$($bounds)*> Args for $name<$($u),*> {
            const THREADS: Threads = Threads::$threads;
            const PARAM_SIZES: &'static [usize] = &[$(core::mem::size_of::<$t>()),*];
            #[inline(always)]
            unsafe fn run<C: Ctx>(&self, c: &C) {
                $body(c, $(Pass::pass(&self.$p)),*)
            }
            fn params(&self) -> [*mut c_void; MAX_PARAMS] {
                let mut p = [core::ptr::null_mut(); MAX_PARAMS];
                for (slot, arg) in p.iter_mut().zip([$(&self.$p as *const $t as *mut c_void),*]) {
                    *slot = arg;
                }
                p
            }
        }
    };

    (@entry $entry:ident [$($alias:item)*] $name:ident [$($u:ident),*]
        ($($p:ident : $t:ty),* $(,)?) $body:path) => {
        #[doc = concat!("The `", stringify!($entry), "` instance of [`", stringify!($name), "`].")]
        pub mod $entry {
            use super::*;
            $($alias)*
            impl Kernel for $name<$($u),*> {
                const NAME: &'static str = stringify!($entry);
            }
            pub const PARAM_SIZES: &[usize] = <$name<$($u),*> as Args>::PARAM_SIZES;
            const _: () = assert!(PARAM_SIZES.len() <= MAX_PARAMS, "more parameters than MAX_PARAMS");

            #[cfg(target_arch = "nvptx64")]
            #[no_mangle]
            pub unsafe extern "ptx-kernel" fn $entry($($p: $t),*) {
                $body(&crate::device::Gpu, $(Pass::pass(&$p)),*)
            }
        }
    };
}

kernels! {
    /// `out = act(a op b[i % nb])`; `b` null applies only the activation.
    Independent EwBinary[E][E: Elem]
    (a: *const E, b: *const E, out: *mut E, n: u32, nb: u32, op: u32, act: u32) => elementwise::binary::<_, E> {
        ew_binary_f32 { type E = f32; }
        ew_binary_bf16 { type E = Bf16; }
    }

    /// Softmax over the last dim of `[rows, cols]`.
    Cooperative SoftmaxRows[E][E: Elem]
    (x: *const E, out: *mut E, rows: usize, cols: usize) => softmax::softmax_rows::<_, E> {
        softmax_rows_f32 { type E = f32; }
        softmax_rows_bf16 { type E = Bf16; }
    }

    /// Sum, mean or max over the last dim of `[rows, cols]`.
    Cooperative ReduceRows[E][E: Elem]
    (x: *const E, out: *mut E, rows: usize, cols: usize, op: u32) => reduce::reduce_rows::<_, E> {
        reduce_rows_f32 { type E = f32; }
        reduce_rows_bf16 { type E = Bf16; }
    }

    /// LayerNorm over the last dim of `[rows, cols]`; `g`, `b` null or `cols` long.
    Cooperative LayernormRows[E][E: Elem]
    (x: *const E, g: *const E, b: *const E, out: *mut E, rows: usize, cols: usize, eps: f32)
        => layernorm::layernorm_rows::<_, E> {
        layernorm_rows_f32 { type E = f32; }
        layernorm_rows_bf16 { type E = Bf16; }
    }

    /// LayerNorm2d over the channels of NCHW `[n, ch, hw]`.
    Independent Layernorm2d[E][E: Elem]
    (x: *const E, g: *const E, b: *const E, out: *mut E, n: u32, ch: u32, hw: u32, eps: f32)
        => layernorm::layernorm2d::<_, E> {
        layernorm2d_f32 { type E = f32; }
        layernorm2d_bf16 { type E = Bf16; }
    }

    /// Batched f32 GEMM with arbitrary strides, alpha, bias, activation and residual (SIMT).
    Cooperative GemmF32[O][O: Elem]
    (a: *const f32, b: *const f32, bias: *const f32, residual: *const O, out: *mut O, m: u32, n: u32, k: u32,
        s: gemm::Strides, alpha: f32, act: u32) => gemm::gemm_f32::<_, O> {
        gemm_f32 { type O = f32; }
    }

    /// Tensor-core GEMM `C = act(alpha A Bᵀ + bias) + R`, 16-bit inputs `I`, output `O`.
    Cooperative GemmTc[I, O][I: MmaInput, O: Elem]
    (a: *const I, b: *const I, bias: *const f32, residual: *const O, out: *mut O, m: u32, n: u32, k: u32,
        s: gemm_tc::Strides, alpha: f32, act: u32) => gemm_tc::gemm_tc::<_, I, O> {
        gemm_tc_bf16_f32 { type I = Bf16; type O = f32; }
        gemm_tc_bf16_bf16 { type I = Bf16; type O = Bf16; }
        gemm_tc_f16_f32 { type I = F16; type O = f32; }
    }

    /// Fused attention; head dims up to `D` run in the instance `D` (see `attention::instance`).
    Cooperative Attention[E, D][E: Elem, const D: usize]
    (q: *const E, k: *const E, v: *const E, bias: *const f32, mask: *const f32, out: *mut E,
        s: AttnShape) => attention::attention::<_, E, D> {
        attention_d32_f32 { type E = f32; const D: usize = 32; }
        attention_d32_bf16 { type E = Bf16; const D: usize = 32; }
        attention_d16_f32 { type E = f32; const D: usize = 16; }
        attention_d16_bf16 { type E = Bf16; const D: usize = 16; }
        attention_d8_f32 { type E = f32; const D: usize = 8; }
        attention_d8_bf16 { type E = Bf16; const D: usize = 8; }
        attention_d64_f32 { type E = f32; const D: usize = 64; }
        attention_d64_bf16 { type E = Bf16; const D: usize = 64; }
        attention_d128_f32 { type E = f32; const D: usize = 128; }
        attention_d128_bf16 { type E = Bf16; const D: usize = 128; }
    }

    /// Tensor-core attention (`mma.sync`, bf16 or f16 in and out, f32 softmax), the twin of
    /// [`Attention`]; head dims up to `D` run in the instance `D` (see `attention_tc::instance`).
    Cooperative AttentionTc[I, D][I: MmaInput + Elem, const D: usize]
    (q: *const I, k: *const I, v: *const I, bias: *const f32, mask: *const f32, out: *mut I,
        s: AttnShape) => attention_tc::attention_tc::<_, I, D> {
        attention_tc_d16_bf16 { type I = Bf16; const D: usize = 16; }
        attention_tc_d32_bf16 { type I = Bf16; const D: usize = 32; }
        attention_tc_d64_bf16 { type I = Bf16; const D: usize = 64; }
        attention_tc_d16_f16 { type I = F16; const D: usize = 16; }
        attention_tc_d32_f16 { type I = F16; const D: usize = 32; }
        attention_tc_d64_f16 { type I = F16; const D: usize = 64; }
    }

    /// Swin windows `[b, h, w, ch]` -> `[b·nW, ws², ch]` after a cyclic shift by `-shift`.
    Independent WindowPartition[E][E: Elem]
    (x: *const E, out: *mut E, b: u32, h: u32, w: u32, ch: u32, ws: u32, shift: u32)
        => remap::window_partition::<_, E> {
        window_partition_f32 { type E = f32; }
        window_partition_bf16 { type E = Bf16; }
    }

    /// The inverse of [`WindowPartition`].
    Independent WindowReverse[E][E: Elem]
    (x: *const E, residual: *const E, out: *mut E, b: u32, h: u32, w: u32, ch: u32, ws: u32, shift: u32)
        => remap::window_reverse::<_, E> {
        window_reverse_f32 { type E = f32; }
        window_reverse_bf16 { type E = Bf16; }
    }

    /// `[b, h, w, ch]` -> `[b, h/2, w/2, 4ch]` in Swin's order.
    Independent PatchMerge[E][E: Elem]
    (x: *const E, out: *mut E, b: u32, h: u32, w: u32, ch: u32) => remap::patch_merge::<_, E> {
        patch_merge_f32 { type E = f32; }
        patch_merge_bf16 { type E = Bf16; }
    }

    /// Bilinear resize (`align_corners=False`) of NCHW planes `[nc, h, w]` to `[nc, oh, ow]`.
    Independent UpsampleBilinear[E][E: Elem]
    (x: *const E, out: *mut E, nc: u32, h: u32, w: u32, oh: u32, ow: u32)
        => remap::upsample_bilinear::<_, E> {
        upsample_bilinear_f32 { type E = f32; }
        upsample_bilinear_bf16 { type E = Bf16; }
    }

    /// Transposed conv, kernel 2 stride 2: `[n, cin, h, w]` -> `[n, cout, 2h, 2w]`.
    Independent ConvTranspose2x2[E][E: Elem]
    (x: *const E, wt: *const E, bias: *const f32, out: *mut E, n: u32, cin: u32, cout: u32, h: u32,
        w: u32) => remap::conv_transpose2x2::<_, E> {
        conv_transpose2x2_f32 { type E = f32; }
        conv_transpose2x2_bf16 { type E = Bf16; }
    }

    /// Strided gather of `n` elements into a contiguous output (rank <= 6).
    Independent Permute[E][E: Elem]
    (x: *const E, out: *mut E, n: u32, s: PermuteShape) => permute::permute::<_, E> {
        permute_f32 { type E = f32; }
        permute_bf16 { type E = Bf16; }
    }

    /// Up to 4 NHWC maps bilinearly resized to one size and summed.
    Independent UpsampleSumNhwc[E][E: Elem]
    (m0: *const E, m1: *const E, m2: *const E, m3: *const E, out: *mut E, s: UpsampleSumShape)
        => fusion::upsample_sum_nhwc::<_, E> {
        upsample_sum_nhwc_f32 { type E = f32; }
        upsample_sum_nhwc_bf16 { type E = Bf16; }
    }

    /// `out[b,m,p] = Σ_c h[b,m,c] u[b,c,p]` (the parsing head's hypernetwork product).
    Cooperative HyperProduct[E][E: Elem]
    (h: *const E, u: *const E, out: *mut E, m: u32, ch: u32, p: u32) => hyper::hyper_product::<_, E> {
        hyper_product_f32 { type E = f32; }
        hyper_product_bf16 { type E = Bf16; }
    }
}
