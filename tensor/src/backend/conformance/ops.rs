//! The op table: every op of [`Backend`] the harness calls, with its name, parameters,
//! tolerance per dtype, and the call itself.

use crate::backend::{Backend, BinaryOp, DevTensor};
use crate::ops::Activation;
use crate::{DType, Result};

/// How an input is uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// As the op's dtype.
    Elem,
    /// Always f32 (linear bias, attention bias and mask).
    F32,
    /// As the other device dtype (to provoke a dtype error).
    Other,
    /// Always bf16 (to provoke a dtype error where f32 is required).
    Bf16,
}

/// An op call; optional arguments are flags and their tensors follow the required ones.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Permute(Vec<usize>),
    /// `linear`, or `linear_add` with a residual (the last input).
    Linear {
        act: Activation,
        bias: bool,
        residual: bool,
    },
    Binary(BinaryOp),
    Act(Activation),
    LayerNorm(f32),
    LayerNorm2d(f32),
    Softmax,
    /// Token-major q, k, v (`packed`: one qkv tensor).
    Attention {
        heads: usize,
        packed: bool,
        scale: f32,
        bias: bool,
        mask: bool,
    },
    WindowPartition {
        window: usize,
        shift: usize,
    },
    /// `window_reverse`, or `window_reverse_add` with a residual (the second input).
    WindowReverse {
        hw: (usize, usize),
        window: usize,
        shift: usize,
        residual: bool,
    },
    PatchMerge,
    Upsample((usize, usize)),
    UpsampleSum((usize, usize)),
    ConvTranspose,
    Hyper,
}

impl Op {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Op::Permute(_) => "permute",
            Op::Linear { residual: false, .. } => "linear",
            Op::Linear { residual: true, .. } => "linear_add",
            Op::Binary(_) => "binary",
            Op::Act(_) => "activation",
            Op::LayerNorm(_) => "layer_norm",
            Op::LayerNorm2d(_) => "layer_norm2d",
            Op::Softmax => "softmax_rows",
            Op::Attention { packed: false, .. } => "attention",
            Op::Attention { packed: true, .. } => "attention_packed",
            Op::WindowPartition { .. } => "window_partition",
            Op::WindowReverse { residual: false, .. } => "window_reverse",
            Op::WindowReverse { residual: true, .. } => "window_reverse_add",
            Op::PatchMerge => "patch_merge",
            Op::Upsample(_) => "upsample_bilinear",
            Op::UpsampleSum(_) => "upsample_sum_nhwc",
            Op::ConvTranspose => "conv_transpose2x2",
            Op::Hyper => "hyper_product",
        }
    }

    /// The parameters worth printing.
    pub(super) fn params(&self) -> String {
        match self {
            Op::Permute(p) => format!(" perm {p:?}"),
            Op::Linear { act, bias, residual } => {
                format!(" {act:?}{}{}", if *bias { " +bias" } else { "" }, if *residual { " +residual" } else { "" })
            }
            Op::Binary(op) => format!(" {op:?}"),
            Op::Act(a) => format!(" {a:?}"),
            Op::LayerNorm(eps) | Op::LayerNorm2d(eps) => format!(" eps {eps:e}"),
            Op::Attention { heads, bias, mask, .. } => {
                format!(" {heads} heads{}{}", if *bias { " +bias" } else { "" }, if *mask { " +mask" } else { "" })
            }
            Op::WindowPartition { window, shift } => format!(" window {window} shift {shift}"),
            Op::WindowReverse { hw, window, shift, residual } => {
                format!(" to {hw:?} window {window} shift {shift}{}", if *residual { " +residual" } else { "" })
            }
            Op::Upsample(s) | Op::UpsampleSum(s) => format!(" to {s:?}"),
            Op::Softmax | Op::PatchMerge | Op::ConvTranspose | Op::Hyper => String::new(),
        }
    }

    /// The tolerance on the scale-relative error (see the module doc).
    pub(super) fn tol(&self, dtype: DType) -> f64 {
        let exact = matches!(
            self,
            Op::Permute(_)
                | Op::WindowPartition { .. }
                | Op::WindowReverse { .. }
                | Op::PatchMerge
                | Op::Binary(_)
                | Op::Act(Activation::None | Activation::Relu)
        );
        if exact {
            return 0.0;
        }
        if dtype == DType::BF16 {
            return 1e-2;
        }
        match self {
            Op::Act(_) => 2e-6,
            Op::Linear { .. } | Op::Attention { .. } | Op::ConvTranspose | Op::Hyper => 2e-5,
            _ => 1e-5,
        }
    }

    /// Runs the op on `b` with the uploaded inputs in case order.
    pub(super) fn run<B: Backend>(&self, b: &B, x: &[DevTensor<B>]) -> Result<DevTensor<B>> {
        let opt = |flag: bool, i: usize| if flag { x.get(i) } else { None };
        match self {
            Op::Permute(p) => b.permute(&x[0], p),
            Op::Linear { act, bias, residual: false } => b.linear(&x[0], &x[1], opt(*bias, 2), *act),
            Op::Linear { act, bias, residual: true } => {
                b.linear_add(&x[0], &x[1], opt(*bias, 2), *act, x.last().expect("a residual"))
            }
            Op::Binary(op) => b.binary(&x[0], &x[1], *op),
            Op::Act(a) => b.activation(&x[0], *a),
            Op::LayerNorm(eps) => b.layer_norm(&x[0], &x[1], &x[2], *eps),
            Op::LayerNorm2d(eps) => b.layer_norm2d(&x[0], &x[1], &x[2], *eps),
            Op::Softmax => b.softmax_rows(&x[0]),
            Op::Attention { heads, packed: false, scale, bias, mask } => {
                let bias_t = opt(*bias, 3);
                let mask_t = opt(*mask, if *bias { 4 } else { 3 });
                b.attention(&x[0], &x[1], &x[2], *heads, bias_t, mask_t, *scale)
            }
            Op::Attention { heads, packed: true, scale, bias, mask } => {
                let bias_t = opt(*bias, 1);
                let mask_t = opt(*mask, if *bias { 2 } else { 1 });
                b.attention_packed(&x[0], *heads, bias_t, mask_t, *scale)
            }
            Op::WindowPartition { window, shift } => b.window_partition(&x[0], *window, *shift),
            Op::WindowReverse { hw, window, shift, residual: false } => b.window_reverse(&x[0], *hw, *window, *shift),
            Op::WindowReverse { hw, window, shift, residual: true } => {
                b.window_reverse_add(&x[0], *hw, *window, *shift, &x[1])
            }
            Op::PatchMerge => b.patch_merge(&x[0]),
            Op::Upsample(s) => b.upsample_bilinear(&x[0], *s),
            Op::UpsampleSum(s) => b.upsample_sum_nhwc(&x.iter().collect::<Vec<_>>(), *s),
            Op::ConvTranspose => b.conv_transpose2x2(&x[0], &x[1], &x[2]),
            Op::Hyper => b.hyper_product(&x[0], &x[1]),
        }
    }
}
