//! The cases: seeded inputs for every op at small odd shapes and at the model's shapes, and the
//! calls each op must refuse.

use super::ops::{Kind, Op};
use crate::backend::BinaryOp;
use crate::ops::Activation;
use crate::{DType, Tensor};

/// One call: the op and its host inputs (f32).
pub(super) struct Case {
    pub(super) op: Op,
    pub(super) inputs: Vec<(Tensor, Kind)>,
    /// For an error case: what is wrong with it.
    pub(super) bad: Option<&'static str>,
}

impl Case {
    pub(super) fn describe(&self) -> String {
        let shapes: Vec<String> = self.inputs.iter().map(|(t, _)| format!("{:?}", t.shape())).collect();
        let what = format!("{}{}", shapes.join(" "), self.op.params());
        match self.bad {
            Some(bad) => format!("{bad}: {what}"),
            None => what,
        }
    }
}

/// Seeded random host tensors.
pub(super) struct Gen {
    pub(super) seed: u64,
}

impl Gen {
    /// Uniform in [lo, hi).
    fn uniform(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        Tensor::rand_uniform(shape, lo, hi, self.seed, DType::F32)
    }
    fn rand(&mut self, shape: &[usize]) -> Tensor {
        self.uniform(shape, -1.0, 1.0)
    }
    /// Swin's shifted-window mask: 0 or -100, a different pattern per window.
    fn mask(&mut self, shape: &[usize]) -> Tensor {
        let u = self.uniform(shape, 0.0, 1.0);
        let v: Vec<f32> = u.to_f32_vec().expect("f32").iter().map(|&x| if x < 0.3 { -100.0 } else { 0.0 }).collect();
        Tensor::from_vec(v, shape).expect("mask shape")
    }
}

fn case(op: Op, inputs: Vec<(Tensor, Kind)>) -> Case {
    Case { op, inputs, bad: None }
}

use Kind::{Elem as E, F32 as F};

fn linear_case(g: &mut Gen, lead: &[usize], k: usize, n: usize, act: Activation, bias: bool) -> Case {
    let mut xs = lead.to_vec();
    xs.push(k);
    let mut ins = vec![(g.rand(&xs), E), (g.uniform(&[n, k], -0.5, 0.5), E)];
    if bias {
        ins.push((g.rand(&[n]), F));
    }
    case(Op::Linear { act, bias, residual: false }, ins)
}

/// [`linear_case`] plus a residual of the output's shape (`linear_add`).
fn linear_add_case(g: &mut Gen, lead: &[usize], k: usize, n: usize, act: Activation, bias: bool) -> Case {
    let mut c = linear_case(g, lead, k, n, act, bias);
    let mut out = lead.to_vec();
    out.push(n);
    c.inputs.push((g.rand(&out), E));
    c.op = Op::Linear { act, bias, residual: true };
    c
}

/// Token-major q `[b, nq, h·d]`, k and v `[b, nk, h·d]`.
fn attention_case(g: &mut Gen, (b, h, nq, nk, d): (usize, usize, usize, usize, usize), bias: bool, nm: usize) -> Case {
    let w = h * d;
    let mut ins = vec![(g.rand(&[b, nq, w]), E), (g.rand(&[b, nk, w]), E), (g.rand(&[b, nk, w]), E)];
    if bias {
        ins.push((g.uniform(&[h, nq, nk], -2.0, 2.0), F));
    }
    if nm > 0 {
        ins.push((g.mask(&[nm, nq, nk]), F));
    }
    // A scale larger than 1/sqrt(d) so the softmax is far from uniform.
    case(Op::Attention { heads: h, packed: false, scale: 2.0 / (d as f32).sqrt(), bias, mask: nm > 0 }, ins)
}

/// Swin's packed qkv `[b, n, 3·h·d]`.
fn attention_packed_case(g: &mut Gen, (b, h, n, d): (usize, usize, usize, usize), bias: bool, nm: usize) -> Case {
    let mut ins = vec![(g.rand(&[b, n, 3 * h * d]), E)];
    if bias {
        ins.push((g.uniform(&[h, n, n], -2.0, 2.0), F));
    }
    if nm > 0 {
        ins.push((g.mask(&[nm, n, n]), F));
    }
    case(Op::Attention { heads: h, packed: true, scale: 2.0 / (d as f32).sqrt(), bias, mask: nm > 0 }, ins)
}

fn norm_case(g: &mut Gen, shape: &[usize], two_d: bool) -> Case {
    let c = if two_d { shape[1] } else { shape[shape.len() - 1] };
    // An offset and spread unlike 0 and 1, so the mean and variance matter.
    let ins = vec![(g.uniform(shape, -1.0, 3.0), E), (g.rand(&[c]), E), (g.rand(&[c]), E)];
    case(if two_d { Op::LayerNorm2d(1e-6) } else { Op::LayerNorm(1e-5) }, ins)
}

pub(super) fn small_cases(g: &mut Gen) -> Vec<Case> {
    use Activation::{Gelu, None as NoAct, Relu};
    let mut v = vec![
        case(Op::Permute(vec![0, 2, 1, 3]), vec![(g.rand(&[2, 3, 4, 5]), E)]),
        case(Op::Permute(vec![2, 0, 1]), vec![(g.rand(&[3, 1, 7]), E)]),
        case(Op::Permute(vec![5, 3, 1, 0, 2, 4]), vec![(g.rand(&[2, 1, 3, 2, 3, 2]), E)]),
        case(Op::Permute(vec![0]), vec![(g.rand(&[9]), E)]),
        // More than one block of the grid-stride loop.
        case(Op::Permute(vec![2, 0, 1]), vec![(g.rand(&[4, 9, 10]), E)]),
    ];
    for (act, bias) in [(NoAct, true), (Relu, true), (Gelu, true), (NoAct, false)] {
        v.push(linear_case(g, &[37], 40, 24, act, bias));
    }
    v.push(linear_case(g, &[2, 3], 19, 5, Gelu, true));
    // More than one tile in M and N (64 for f32, 128 for bf16), K not a multiple of the depth.
    v.push(linear_case(g, &[130], 33, 136, NoAct, true));
    // No inputs features: the bias alone.
    v.push(linear_case(g, &[3], 0, 4, NoAct, true));
    // The fused residual: several tiles, with and without bias, after an activation.
    v.push(linear_add_case(g, &[130], 33, 136, NoAct, true));
    v.push(linear_add_case(g, &[2, 3], 19, 5, Gelu, false));
    v.push(case(Op::Binary(BinaryOp::Add), vec![(g.rand(&[6, 7, 5]), E), (g.rand(&[5]), E)]));
    v.push(case(Op::Binary(BinaryOp::Mul), vec![(g.rand(&[6, 7, 5]), E), (g.rand(&[7, 5]), E)]));
    v.push(case(Op::Binary(BinaryOp::Add), vec![(g.rand(&[3, 11]), E), (g.rand(&[3, 11]), E)]));
    v.push(case(Op::Binary(BinaryOp::Mul), vec![(g.rand(&[2, 4, 3]), E), (g.rand(&[1, 4, 3]), E)]));
    for a in [Relu, Gelu, NoAct] {
        v.push(case(Op::Act(a), vec![(g.uniform(&[3, 101], -4.0, 4.0), E)]));
    }
    v.push(norm_case(g, &[37, 40], false));
    v.push(norm_case(g, &[3, 2, 129], false));
    v.push(norm_case(g, &[5, 1], false));
    v.push(norm_case(g, &[2, 5, 7, 9], true));
    v.push(norm_case(g, &[1, 3, 1, 1], true));
    v.push(case(Op::Softmax, vec![(g.uniform(&[37, 40], -4.0, 4.0), E)]));
    v.push(case(Op::Softmax, vec![(g.uniform(&[2, 3, 70], -8.0, 8.0), E)]));
    v.push(case(Op::Softmax, vec![(g.rand(&[5, 1]), E)]));
    for d in [8, 16, 32] {
        v.push(attention_case(g, (2, 2, 9, 13, d), true, 2));
    }
    v.push(attention_case(g, (2, 2, 9, 13, 32), false, 0));
    v.push(attention_case(g, (4, 1, 5, 7, 16), false, 2));
    // More keys than one shared-memory tile (64), more queries than one block (64).
    v.push(attention_case(g, (1, 1, 3, 70, 16), false, 0));
    v.push(attention_case(g, (1, 1, 67, 5, 8), true, 1));
    v.push(attention_packed_case(g, (4, 2, 9, 16), true, 2));
    v.push(attention_packed_case(g, (1, 3, 70, 8), false, 0));
    // Head dims beside 8, 16, 32: 64 and 128 (their own instances; 128 splits each row over two
    // threads), and dims that run padded in the next instance up (24, 48 in 32, 64; 5, 12, 100).
    for d in [24, 48, 64, 128] {
        v.push(attention_case(g, (2, 2, 9, 13, d), true, 2));
        v.push(attention_packed_case(g, (2, 2, 11, d), true, 2));
    }
    // Several key tiles (64 rows for d <= 64, 32 for 128) and a second, partly filled query block.
    v.push(attention_case(g, (1, 1, 67, 70, 64), false, 0));
    v.push(attention_case(g, (1, 2, 67, 75, 128), true, 1));
    v.push(attention_case(g, (1, 1, 70, 66, 24), true, 0));
    v.push(attention_packed_case(g, (2, 1, 49, 100), true, 2));
    v.push(attention_case(g, (1, 3, 5, 7, 5), false, 0));
    v.push(attention_packed_case(g, (1, 2, 6, 12), false, 0));
    v.push(case(Op::WindowPartition { window: 3, shift: 1 }, vec![(g.rand(&[2, 6, 9, 3]), E)]));
    v.push(case(Op::WindowPartition { window: 2, shift: 0 }, vec![(g.rand(&[1, 4, 2, 5]), E)]));
    v.push(case(
        Op::WindowReverse { hw: (6, 9), window: 3, shift: 2, residual: false },
        vec![(g.rand(&[12, 9, 3]), E)],
    ));
    v.push(case(Op::WindowReverse { hw: (4, 2), window: 2, shift: 0, residual: false }, vec![(g.rand(&[2, 4, 5]), E)]));
    v.push(case(
        Op::WindowReverse { hw: (6, 9), window: 3, shift: 2, residual: true },
        vec![(g.rand(&[12, 9, 3]), E), (g.rand(&[2, 6, 9, 3]), E)],
    ));
    v.push(case(Op::PatchMerge, vec![(g.rand(&[2, 4, 6, 3]), E)]));
    v.push(case(Op::Upsample((11, 8)), vec![(g.rand(&[2, 3, 5, 7]), E)]));
    v.push(case(Op::Upsample((3, 4)), vec![(g.rand(&[1, 2, 7, 9]), E)]));
    v.push(case(Op::Upsample((5, 7)), vec![(g.rand(&[1, 2, 5, 7]), E)]));
    let maps = |g: &mut Gen, sizes: &[usize], c: usize| -> Vec<(Tensor, Kind)> {
        sizes.iter().map(|&s| (g.rand(&[2, s, s, c]), E)).collect()
    };
    v.push(case(Op::UpsampleSum((8, 8)), maps(g, &[8, 4, 2, 1], 5)));
    v.push(case(Op::UpsampleSum((7, 7)), maps(g, &[3], 4)));
    v.push(case(Op::UpsampleSum((9, 6)), vec![(g.rand(&[1, 9, 6, 3]), E), (g.rand(&[1, 4, 5, 3]), E)]));
    v.push(case(Op::ConvTranspose, vec![(g.rand(&[2, 5, 3, 4]), E), (g.rand(&[5, 6, 2, 2]), E), (g.rand(&[6]), F)]));
    v.push(case(Op::ConvTranspose, vec![(g.rand(&[1, 1, 1, 1]), E), (g.rand(&[1, 3, 2, 2]), E), (g.rand(&[3]), F)]));
    v.push(case(Op::Hyper, vec![(g.rand(&[2, 11, 7]), E), (g.rand(&[2, 7, 50]), E)]));
    v.push(case(Op::Hyper, vec![(g.rand(&[1, 32, 64]), E), (g.rand(&[1, 64, 33]), E)]));
    v.push(case(Op::Hyper, vec![(g.rand(&[1, 3, 5]), E), (g.rand(&[1, 5, 300]), E)]));
    v
}

/// The shapes of FaceXFormer with its Swin-B encoder at 224x224, batch 1.
pub(super) fn model_cases(g: &mut Gen) -> Vec<Case> {
    use Activation::{Gelu, None as NoAct};
    let scale32 = 1.0 / 32f32.sqrt();
    let mut v = vec![
        // Patch embedding as a permutation (im2col), and the qkv split of a window block.
        case(Op::Permute(vec![0, 2, 4, 1, 3, 5]), vec![(g.rand(&[1, 3, 56, 4, 56, 4]), E)]),
        case(Op::Permute(vec![2, 0, 3, 1, 4]), vec![(g.rand(&[64, 49, 3, 4, 32]), E)]),
        case(Op::Permute(vec![0, 2, 1]), vec![(g.rand(&[1, 3136, 256]), E)]),
        linear_case(g, &[3136], 48, 128, NoAct, true),
        linear_case(g, &[3136], 128, 384, NoAct, true),
        linear_case(g, &[3136], 128, 512, Gelu, true),
        linear_case(g, &[3136], 512, 128, NoAct, true),
        // Swin stage 1's fc2 with its residual; the decoder's out_proj (128 -> 256) with its.
        linear_add_case(g, &[3136], 512, 128, NoAct, true),
        linear_add_case(g, &[18], 128, 256, NoAct, true),
        linear_case(g, &[49], 1024, 3072, NoAct, true),
        linear_case(g, &[18], 256, 2048, Gelu, true),
        case(Op::Binary(BinaryOp::Add), vec![(g.rand(&[1, 3136, 128]), E), (g.rand(&[1, 3136, 128]), E)]),
        case(Op::Binary(BinaryOp::Add), vec![(g.rand(&[1, 3136, 256]), E), (g.rand(&[3136, 256]), E)]),
        case(Op::Act(Gelu), vec![(g.uniform(&[1, 64, 112, 112], -4.0, 4.0), E)]),
        norm_case(g, &[3136, 128], false),
        norm_case(g, &[49, 1024], false),
        norm_case(g, &[1, 64, 112, 112], true),
        case(Op::Softmax, vec![(g.uniform(&[1152, 49], -8.0, 8.0), E)]),
        case(Op::Softmax, vec![(g.uniform(&[144, 3136], -8.0, 8.0), E)]),
    ];
    // Swin window attention (shifted: the mask), stage 4 (one window), and the decoder's
    // token-to-image, image-to-token and self attention.
    let with_scale = |mut c: Case, scale: f32| {
        if let Op::Attention { scale: s, .. } = &mut c.op {
            *s = scale;
        }
        c
    };
    v.push(with_scale(attention_packed_case(g, (64, 4, 49, 32), true, 64), scale32));
    v.push(with_scale(attention_packed_case(g, (1, 32, 49, 32), true, 0), scale32));
    v.push(with_scale(attention_case(g, (1, 8, 18, 3136, 16), false, 0), 0.25));
    v.push(with_scale(attention_case(g, (1, 8, 3136, 18, 16), false, 0), 0.25));
    v.push(with_scale(attention_case(g, (1, 8, 18, 18, 32), false, 0), scale32));
    v.extend([
        case(Op::WindowPartition { window: 7, shift: 3 }, vec![(g.rand(&[1, 56, 56, 128]), E)]),
        case(
            Op::WindowReverse { hw: (56, 56), window: 7, shift: 3, residual: false },
            vec![(g.rand(&[64, 49, 128]), E)],
        ),
        case(
            Op::WindowReverse { hw: (56, 56), window: 7, shift: 3, residual: true },
            vec![(g.rand(&[64, 49, 128]), E), (g.rand(&[1, 56, 56, 128]), E)],
        ),
        case(Op::WindowPartition { window: 7, shift: 0 }, vec![(g.rand(&[1, 14, 14, 512]), E)]),
        case(Op::PatchMerge, vec![(g.rand(&[1, 56, 56, 128]), E)]),
        case(Op::PatchMerge, vec![(g.rand(&[1, 14, 14, 512]), E)]),
        case(Op::Upsample((56, 56)), vec![(g.rand(&[1, 256, 7, 7]), E)]),
        case(Op::Upsample((224, 224)), vec![(g.rand(&[1, 11, 56, 56]), E)]),
        case(Op::UpsampleSum((56, 56)), [56, 28, 14, 7].iter().map(|&s| (g.rand(&[1, s, s, 256]), E)).collect()),
        case(
            Op::ConvTranspose,
            vec![(g.rand(&[1, 256, 56, 56]), E), (g.uniform(&[256, 64, 2, 2], -0.1, 0.1), E), (g.rand(&[64]), F)],
        ),
        case(
            Op::ConvTranspose,
            vec![(g.rand(&[1, 64, 112, 112]), E), (g.uniform(&[64, 32, 2, 2], -0.2, 0.2), E), (g.rand(&[32]), F)],
        ),
        case(Op::Hyper, vec![(g.rand(&[1, 11, 32]), E), (g.rand(&[1, 32, 50176]), E)]),
    ]);
    v
}

/// Calls every op with arguments it must refuse.
pub(super) fn error_cases() -> Vec<Case> {
    let z = |shape: &[usize]| Tensor::zeros(shape, DType::F32);
    let bad = |what: &'static str, op: Op, inputs: Vec<(Tensor, Kind)>| Case { op, inputs, bad: Some(what) };
    let lin = |bias| Op::Linear { act: Activation::None, bias, residual: false };
    let lin_add = Op::Linear { act: Activation::None, bias: false, residual: true };
    let attn = |bias, mask| Op::Attention { heads: 1, packed: false, scale: 1.0, bias, mask };
    let attn2 = |bias, mask| Op::Attention { heads: 2, packed: false, scale: 1.0, bias, mask };
    let packed = |heads| Op::Attention { heads, packed: true, scale: 1.0, bias: false, mask: false };
    vec![
        bad("not a permutation", Op::Permute(vec![0, 0]), vec![(z(&[2, 3]), E)]),
        bad("rank 7", Op::Permute((0..7).collect()), vec![(z(&[1; 7]), E)]),
        bad("k differs", lin(false), vec![(z(&[3, 4]), E), (z(&[5, 3]), E)]),
        bad("bias length", lin(true), vec![(z(&[3, 4]), E), (z(&[5, 4]), E), (z(&[4]), F)]),
        bad("weight dtype", lin(false), vec![(z(&[3, 4]), E), (z(&[5, 4]), Kind::Other)]),
        bad("bf16 bias", lin(true), vec![(z(&[3, 4]), E), (z(&[5, 4]), E), (z(&[5]), Kind::Bf16)]),
        bad("residual shape", lin_add.clone(), vec![(z(&[3, 4]), E), (z(&[5, 4]), E), (z(&[3, 4]), E)]),
        bad("residual dtype", lin_add, vec![(z(&[3, 4]), E), (z(&[5, 4]), E), (z(&[3, 5]), Kind::Other)]),
        bad("b does not divide a", Op::Binary(BinaryOp::Add), vec![(z(&[3, 4]), E), (z(&[3]), E)]),
        bad("b not a suffix", Op::Binary(BinaryOp::Mul), vec![(z(&[4, 3]), E), (z(&[4, 1]), E)]),
        bad("weight length", Op::LayerNorm(1e-5), vec![(z(&[3, 4]), E), (z(&[3]), E), (z(&[4]), E)]),
        bad("rank 0", Op::LayerNorm(1e-5), vec![(z(&[]), E), (z(&[1]), E), (z(&[1]), E)]),
        bad("not NCHW", Op::LayerNorm2d(1e-6), vec![(z(&[2, 3, 4]), E), (z(&[3]), E), (z(&[3]), E)]),
        bad("weight length", Op::LayerNorm2d(1e-6), vec![(z(&[1, 3, 2, 2]), E), (z(&[2]), E), (z(&[3]), E)]),
        bad("rank 0", Op::Softmax, vec![(z(&[]), E)]),
        bad("head dim 130", attn(false, false), vec![(z(&[1, 2, 130]), E), (z(&[1, 3, 130]), E), (z(&[1, 3, 130]), E)]),
        bad(
            "width not split by heads",
            attn2(false, false),
            vec![(z(&[1, 2, 9]), E), (z(&[1, 3, 9]), E), (z(&[1, 3, 9]), E)],
        ),
        bad("k width differs", attn2(false, false), vec![(z(&[1, 2, 16]), E), (z(&[1, 3, 8]), E), (z(&[1, 3, 8]), E)]),
        bad("v differs from k", attn(false, false), vec![(z(&[1, 2, 8]), E), (z(&[1, 3, 8]), E), (z(&[1, 4, 8]), E)]),
        bad("no keys", attn(false, false), vec![(z(&[1, 2, 8]), E), (z(&[1, 0, 8]), E), (z(&[1, 0, 8]), E)]),
        bad(
            "bias shape",
            attn2(true, false),
            vec![(z(&[1, 2, 16]), E), (z(&[1, 3, 16]), E), (z(&[1, 3, 16]), E), (z(&[2, 3, 2]), F)],
        ),
        bad(
            "mask count does not divide the batch",
            attn(false, true),
            vec![(z(&[3, 2, 8]), E), (z(&[3, 3, 8]), E), (z(&[3, 3, 8]), E), (z(&[2, 2, 3]), F)],
        ),
        bad("packed width not 3 parts", packed(1), vec![(z(&[1, 4, 20]), E)]),
        bad("packed head dim 136", packed(2), vec![(z(&[1, 4, 3 * 272]), E)]),
        bad("packed without tokens", packed(1), vec![(z(&[1, 0, 24]), E)]),
        bad("H not a multiple of the window", Op::WindowPartition { window: 3, shift: 0 }, vec![(z(&[1, 4, 6, 2]), E)]),
        bad("shift >= window", Op::WindowPartition { window: 2, shift: 2 }, vec![(z(&[1, 4, 4, 2]), E)]),
        bad(
            "tokens per window",
            Op::WindowReverse { hw: (4, 4), window: 2, shift: 1, residual: false },
            vec![(z(&[4, 3, 2]), E)],
        ),
        bad(
            "residual shape",
            Op::WindowReverse { hw: (4, 4), window: 2, shift: 1, residual: true },
            vec![(z(&[4, 4, 2]), E), (z(&[1, 4, 2, 2]), E)],
        ),
        bad("odd H", Op::PatchMerge, vec![(z(&[1, 3, 4, 2]), E)]),
        bad("not NCHW", Op::Upsample((4, 4)), vec![(z(&[2, 3, 3]), E)]),
        bad("empty size", Op::Upsample((0, 4)), vec![(z(&[1, 1, 3, 3]), E)]),
        bad("channels differ", Op::UpsampleSum((4, 4)), vec![(z(&[1, 4, 4, 3]), E), (z(&[1, 2, 2, 2]), E)]),
        bad("no maps", Op::UpsampleSum((4, 4)), vec![]),
        bad("five maps", Op::UpsampleSum((4, 4)), (0..5).map(|_| (z(&[1, 2, 2, 3]), E)).collect()),
        bad("empty plane", Op::Upsample((4, 4)), vec![(z(&[1, 2, 0, 3]), E)]),
        bad("empty map", Op::UpsampleSum((4, 4)), vec![(z(&[1, 0, 2, 3]), E)]),
        bad("kernel 3", Op::ConvTranspose, vec![(z(&[1, 2, 3, 3]), E), (z(&[2, 4, 3, 3]), E), (z(&[4]), F)]),
        bad("bias length", Op::ConvTranspose, vec![(z(&[1, 2, 3, 3]), E), (z(&[2, 4, 2, 2]), E), (z(&[3]), F)]),
        bad("bias dtype", Op::ConvTranspose, vec![(z(&[1, 2, 3, 3]), E), (z(&[2, 4, 2, 2]), E), (z(&[4]), Kind::Bf16)]),
        bad("M > 32", Op::Hyper, vec![(z(&[1, 33, 4]), E), (z(&[1, 4, 5]), E)]),
        bad("channels differ", Op::Hyper, vec![(z(&[1, 3, 4]), E), (z(&[1, 5, 5]), E)]),
    ]
}
