//! `extern "ptx-kernel"` entry points: thin wrappers that call the generic bodies with [`Gpu`].
//! Parameter order and types here are the ABI that `tensor::cuda` launches with.

use super::Gpu;
use crate::gemm_tc::{Bf16In, F16In};
use crate::math::Bf16;
use crate::{attention, elementwise, fusion, gemm, gemm_tc, hyper, layernorm, permute, reduce, remap, softmax};

/// `kernel!(name: Elem = body(params))` declares entry point `name` calling `body::<Gpu, Elem>`;
/// `E` in the parameter types is that element type (each entry lives in its own module).
macro_rules! kernel {
    ($name:ident : $e:ty = $($body:ident)::+ ( $($p:ident : $t:ty),* $(,)? )) => {
        #[allow(non_snake_case)]
        mod $name {
            use super::*;
            #[allow(dead_code)]
            type E = $e;
            #[no_mangle]
            pub unsafe extern "ptx-kernel" fn $name($($p: $t),*) {
                $($body)::+::<Gpu, E>(&Gpu, $($p),*)
            }
        }
    };
}

kernel!(ew_binary_f32: f32 = elementwise::binary(a: *const E, b: *const E, out: *mut E, n: u32, nb: u32, op: u32, act: u32));
kernel!(ew_binary_bf16: Bf16 = elementwise::binary(a: *const E, b: *const E, out: *mut E, n: u32, nb: u32, op: u32, act: u32));
kernel!(softmax_rows_f32: f32 = softmax::softmax_rows(x: *const E, out: *mut E, rows: usize, cols: usize));
kernel!(softmax_rows_bf16: Bf16 = softmax::softmax_rows(x: *const E, out: *mut E, rows: usize, cols: usize));
kernel!(reduce_rows_f32: f32 = reduce::reduce_rows(x: *const E, out: *mut E, rows: usize, cols: usize, op: u32));
kernel!(reduce_rows_bf16: Bf16 = reduce::reduce_rows(x: *const E, out: *mut E, rows: usize, cols: usize, op: u32));
kernel!(layernorm_rows_f32: f32 = layernorm::layernorm_rows(x: *const E, g: *const E, b: *const E, out: *mut E, rows: usize, cols: usize, eps: f32));
kernel!(layernorm_rows_bf16: Bf16 = layernorm::layernorm_rows(x: *const E, g: *const E, b: *const E, out: *mut E, rows: usize, cols: usize, eps: f32));
kernel!(layernorm2d_f32: f32 = layernorm::layernorm2d(x: *const E, g: *const E, b: *const E, out: *mut E, n: u32, ch: u32, hw: u32, eps: f32));
kernel!(layernorm2d_bf16: Bf16 = layernorm::layernorm2d(x: *const E, g: *const E, b: *const E, out: *mut E, n: u32, ch: u32, hw: u32, eps: f32));

// GEMM entry points take the strides by value as a `#[repr(C)]` struct of u64s (a byval `.param`).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn gemm_f32(
    a: *const f32,
    b: *const f32,
    bias: *const f32,
    out: *mut f32,
    m: u32,
    n: u32,
    k: u32,
    s: gemm::Strides,
    alpha: f32,
    act: u32,
) {
    gemm::gemm_f32::<Gpu, f32>(&Gpu, a, b, bias, out, m, n, k, &s, alpha, act)
}

/// `gemm_tc!(name: Input -> Output)`: a tensor-core GEMM entry point.
macro_rules! gemm_tc {
    ($name:ident : $i:ty => $o:ty) => {
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            a: *const u16,
            b: *const u16,
            bias: *const f32,
            out: *mut $o,
            m: u32,
            n: u32,
            k: u32,
            s: gemm_tc::Strides,
            alpha: f32,
            act: u32,
        ) {
            gemm_tc::gemm_tc::<Gpu, $i, $o>(&Gpu, a, b, bias, out, m, n, k, &s, alpha, act)
        }
    };
}
gemm_tc!(gemm_tc_bf16_f32: Bf16In => f32);
gemm_tc!(gemm_tc_bf16_bf16: Bf16In => Bf16);
gemm_tc!(gemm_tc_f16_f32: F16In => f32);

/// `attention!(name: Elem, instance)`: fused attention with online softmax. A head dim runs in the
/// smallest instance that holds it, with the lanes past it zero (24 in d32, 100 in d128; see
/// `attention`'s module doc).
macro_rules! attention {
    ($name:ident : $e:ty, $d:literal) => {
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            q: *const $e,
            k: *const $e,
            v: *const $e,
            bias: *const f32,
            mask: *const f32,
            out: *mut $e,
            s: attention::AttnShape,
        ) {
            attention::attention::<Gpu, $e, $d>(&Gpu, q, k, v, bias, mask, out, &s)
        }
    };
}
attention!(attention_d32_f32: f32, 32);
attention!(attention_d32_bf16: Bf16, 32);
attention!(attention_d16_f32: f32, 16);
attention!(attention_d16_bf16: Bf16, 16);
attention!(attention_d8_f32: f32, 8);
attention!(attention_d8_bf16: Bf16, 8);
attention!(attention_d64_f32: f32, 64);
attention!(attention_d64_bf16: Bf16, 64);
attention!(attention_d128_f32: f32, 128);
attention!(attention_d128_bf16: Bf16, 128);

kernel!(window_partition_f32: f32 = remap::window_partition(x: *const E, out: *mut E, b: u32, h: u32, w: u32, ch: u32, ws: u32, shift: u32));
kernel!(window_partition_bf16: Bf16 = remap::window_partition(x: *const E, out: *mut E, b: u32, h: u32, w: u32, ch: u32, ws: u32, shift: u32));
kernel!(window_reverse_f32: f32 = remap::window_reverse(x: *const E, out: *mut E, b: u32, h: u32, w: u32, ch: u32, ws: u32, shift: u32));
kernel!(window_reverse_bf16: Bf16 = remap::window_reverse(x: *const E, out: *mut E, b: u32, h: u32, w: u32, ch: u32, ws: u32, shift: u32));
kernel!(patch_merge_f32: f32 = remap::patch_merge(x: *const E, out: *mut E, b: u32, h: u32, w: u32, ch: u32));
kernel!(patch_merge_bf16: Bf16 = remap::patch_merge(x: *const E, out: *mut E, b: u32, h: u32, w: u32, ch: u32));
kernel!(upsample_bilinear_f32: f32 = remap::upsample_bilinear(x: *const E, out: *mut E, nc: u32, h: u32, w: u32, oh: u32, ow: u32));
kernel!(upsample_bilinear_bf16: Bf16 = remap::upsample_bilinear(x: *const E, out: *mut E, nc: u32, h: u32, w: u32, oh: u32, ow: u32));
kernel!(conv_transpose2x2_f32: f32 = remap::conv_transpose2x2(x: *const E, wt: *const E, bias: *const E, out: *mut E, n: u32, cin: u32, cout: u32, h: u32, w: u32));
kernel!(conv_transpose2x2_bf16: Bf16 = remap::conv_transpose2x2(x: *const E, wt: *const E, bias: *const E, out: *mut E, n: u32, cin: u32, cout: u32, h: u32, w: u32));

/// `kernel_s!(name: Elem = body(params; s: Shape))`: as `kernel!`, with a trailing `#[repr(C)]`
/// shape struct that the entry point takes by value (a byval `.param`) and the body by reference.
macro_rules! kernel_s {
    ($name:ident : $e:ty = $($body:ident)::+ ( $($p:ident : $t:ty),* ; $s:ident : $st:ty )) => {
        #[allow(non_snake_case)]
        mod $name {
            use super::*;
            #[allow(dead_code)]
            type E = $e;
            #[no_mangle]
            pub unsafe extern "ptx-kernel" fn $name($($p: $t,)* $s: $st) {
                $($body)::+::<Gpu, E>(&Gpu, $($p,)* &$s)
            }
        }
    };
}

kernel_s!(permute_f32: f32 = permute::permute(x: *const E, out: *mut E, n: u32; s: permute::PermuteShape));
kernel_s!(permute_bf16: Bf16 = permute::permute(x: *const E, out: *mut E, n: u32; s: permute::PermuteShape));
kernel_s!(upsample_sum_nhwc_f32: f32 = fusion::upsample_sum_nhwc(m0: *const E, m1: *const E, m2: *const E, m3: *const E, out: *mut E; s: fusion::UpsampleSumShape));
kernel_s!(upsample_sum_nhwc_bf16: Bf16 = fusion::upsample_sum_nhwc(m0: *const E, m1: *const E, m2: *const E, m3: *const E, out: *mut E; s: fusion::UpsampleSumShape));
kernel!(hyper_product_f32: f32 = hyper::hyper_product(h: *const E, u: *const E, out: *mut E, m: u32, ch: u32, p: u32));
kernel!(hyper_product_bf16: Bf16 = hyper::hyper_product(h: *const E, u: *const E, out: *mut E, m: u32, ch: u32, p: u32));
