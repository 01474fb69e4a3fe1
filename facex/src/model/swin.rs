//! Swin Transformer v1 encoder as torchvision builds it (`features` of `swin_b`), returning the
//! raw outputs of the four stages (NHWC), before the final LayerNorm.
//!
//! Layout choices for speed: the activations stay NHWC ([B, H, W, C]) so every per-token layer is
//! one GEMM on contiguous rows. Window partition and the cyclic shift are folded into one gather
//! (`index_select` of tokens) each way, precomputed per resolution, so a block copies its
//! activations twice instead of four times; attention runs as one batched matmul over
//! [B·windows, heads, w², head_dim].

use super::layers::{conv_params, LayerNorm, Linear};
use super::params::{Builder, Init};
use super::schema::{PatchMergeSpec, SwinBlockSpec, SwinSpec};
use autograd::Var;
use tensor::ops::Activation;
use tensor::profile;
use tensor::{DType, Result, Tensor};

/// Added to attention scores between tokens of different regions of a shifted window.
const MASK_VALUE: f32 = -100.0;

/// torchvision's `relative_position_index` for a w×w window: for tokens p, q (row-major in the
/// window), `(hp - hq + w - 1) * (2w - 1) + (wp - wq + w - 1)`.
pub fn relative_position_index(w: usize) -> Vec<i64> {
    let n = w * w;
    let mut idx = Vec::with_capacity(n * n);
    for p in 0..n {
        for q in 0..n {
            let dh = (p / w) as i64 - (q / w) as i64 + w as i64 - 1;
            let dw = (p % w) as i64 - (q % w) as i64 + w as i64 - 1;
            idx.push(dh * (2 * w as i64 - 1) + dw);
        }
    }
    idx
}

/// Precomputed token permutations (and the shift mask) of one resolution and shift.
#[derive(Clone, Debug)]
pub(crate) struct WindowPlan {
    /// For token t in window order (window row, window col, row in window, col in window): the
    /// row-major index of the token it reads, after `roll(-shift)` on both axes.
    pub gather: Tensor,
    /// The inverse permutation: it also undoes the shift (`roll(+shift)`).
    pub scatter: Tensor,
    /// [windows, 1, w², w²]: 0 within a region, -100 across regions; None without shift.
    pub mask: Option<Tensor>,
    pub windows: usize,
}

impl WindowPlan {
    pub fn new(h: usize, w: usize, win: usize, shift: usize) -> WindowPlan {
        let (nh, nw) = (h / win, w / win);
        let mut gather = vec![0i64; h * w];
        let mut t = 0;
        for wr in 0..nh {
            for wc in 0..nw {
                for r in 0..win {
                    for c in 0..win {
                        let y = (wr * win + r + shift) % h;
                        let x = (wc * win + c + shift) % w;
                        gather[t] = (y * w + x) as i64;
                        t += 1;
                    }
                }
            }
        }
        let mut scatter = vec![0i64; h * w];
        for (t, &src) in gather.iter().enumerate() {
            scatter[src as usize] = t as i64;
        }
        let mask = (shift > 0).then(|| shift_mask(h, w, win, shift));
        WindowPlan {
            gather: Tensor::from_vec(gather, &[h * w]).expect("plan: gather"),
            scatter: Tensor::from_vec(scatter, &[h * w]).expect("plan: scatter"),
            mask,
            windows: nh * nw,
        }
    }
}

/// The 9-region mask of torchvision's shifted windows, in the rolled frame: along each axis,
/// region 0 is [0, n-win), 1 is [n-win, n-shift), 2 is [n-shift, n).
pub(crate) fn shift_mask(h: usize, w: usize, win: usize, shift: usize) -> Tensor {
    let region = |i: usize, n: usize| -> usize {
        if i < n - win {
            0
        } else if i < n - shift {
            1
        } else {
            2
        }
    };
    let (nh, nw, n) = (h / win, w / win, win * win);
    let mut m = Vec::with_capacity(nh * nw * n * n);
    for wr in 0..nh {
        for wc in 0..nw {
            let ids: Vec<usize> =
                (0..n).map(|p| region(wr * win + p / win, h) * 3 + region(wc * win + p % win, w)).collect();
            for &ip in &ids {
                for &iq in &ids {
                    m.push(if ip == iq { 0.0f32 } else { MASK_VALUE });
                }
            }
        }
    }
    Tensor::from_vec(m, &[nh * nw, 1, n, n]).expect("plan: mask")
}

/// Window attention as the recorded ops of the official code, the twin of the fused
/// `Var::window_attention`: qkv `[B·windows, n, 3C]`, bias `[heads, n, n]`, mask
/// `[windows, n, n]` -> `[B·windows, n, C]`.
#[cfg(test)]
fn attention_composite(qkv: &Var, bias: &Var, mask: Option<&Tensor>, heads: usize, scale: f64) -> Result<Var> {
    let s = qkv.shape();
    let (bw, n, c) = (s[0], s[1], s[2] / 3);
    let qkv = qkv.reshape(&[bw, n, 3, heads, c / heads])?.permute(&[2, 0, 3, 1, 4])?; // [3, bw, heads, n, hd]
    let q = qkv.select(0, 0)?.affine(scale, 0.0)?;
    let (k, v) = (qkv.select(0, 1)?, qkv.select(0, 2)?);
    let attn = q.matmul(&k.t()?)?.add(bias)?; // [bw, heads, n, n]
    let attn = match mask {
        // The mask differs per window: view the scores as [B, windows, heads, n, n].
        Some(m) => {
            let w = m.shape()[0];
            let m = Var::constant(m.reshape(&[w, 1, n, n])?);
            attn.reshape(&[bw / w, w, heads, n, n])?.add(&m)?.reshape(&[bw, heads, n, n])?
        }
        None => attn,
    };
    attn.softmax(-1)?.matmul(&v)?.permute(&[0, 2, 1, 3])?.reshape(&[bw, n, c])
}

/// One Swin v1 block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
#[derive(Clone, Debug)]
pub(crate) struct SwinBlock {
    norm1: LayerNorm,
    bias_table: Var,
    bias_index: Tensor,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    window: usize,
    /// Odd blocks use the shifted plan (unless the stage forces shift 0).
    shifted: bool,
}

impl SwinBlock {
    fn new(b: &mut Builder, spec: &SwinBlockSpec) -> SwinBlock {
        let norm1 = LayerNorm::new(b, &spec.norm1);
        let bias_table = b.param(spec.bias_table.key.clone(), &spec.bias_table.shape, Init::TruncNormal(0.02));
        let window = spec.window;
        let bias_index = b.derived_buffer(spec.index.key.clone(), &spec.index.shape, DType::I64, || {
            Tensor::from_vec(relative_position_index(window), &spec.index.shape).expect("relative_position_index")
        });
        SwinBlock {
            norm1,
            bias_table,
            bias_index,
            qkv: Linear::new(b, &spec.qkv),
            proj: Linear::new(b, &spec.proj),
            norm2: LayerNorm::new(b, &spec.norm2),
            fc1: Linear::new(b, &spec.fc1),
            fc2: Linear::new(b, &spec.fc2),
            heads: spec.heads,
            window,
            shifted: spec.shift > 0,
        }
    }

    /// x: [B, H, W, C] -> [B, H, W, C].
    fn forward(&self, x: &Var, plan: &WindowPlan) -> Result<Var> {
        let s = x.shape();
        let (b, h, w, c) = (s[0], s[1], s[2], s[3]);
        let (n, heads) = (self.window * self.window, self.heads);
        let hd = c / heads;
        let bw = b * plan.windows;

        // Shift + window partition as one token gather: [B, HW, C] in window order. Where the
        // attention records nothing (inference, a frozen encoder) the tokens are gathered before
        // norm1 (per token: the same bits), so that proj can add them back as its residual in
        // window order, in its output pass; training gathers norm1's output, the order its
        // gradients were built on.
        let tokens = x.reshape(&[b, h * w, c])?;
        let (y, windowed_x) = if self.attention_records_on(&tokens) {
            (self.norm1.forward(&tokens)?.index_select(1, &plan.gather)?, None)
        } else {
            let xw = tokens.index_select(1, &plan.gather)?;
            (self.norm1.forward(&xw)?, Some(xw))
        };
        let qkv = self.qkv.forward(&y.reshape(&[bw, n, c])?)?;
        // The relative position bias [heads, n, n] (a gather: gradients reach the table), and
        // one pass per window and head (`Tensor::window_attention`; twin: `attention_composite`).
        let bias = self.bias_table.index_select(0, &self.bias_index)?.t()?.reshape(&[heads, n, n])?;
        let mask = plan.mask.as_ref().map(|m| m.reshape(&[plan.windows, n, n])).transpose()?;
        let o = qkv.window_attention(heads, Some(&bias), mask.as_ref(), (hd as f32).powf(-0.5))?;
        let o = o.reshape(&[b, h * w, c])?;
        let x = match windowed_x {
            // Nothing recorded: proj + residual in window order, then the window reverse + roll
            // back (the inverse gather).
            Some(xw) => self.proj.forward_add(&o, &xw)?.index_select(1, &plan.scatter)?,
            // Training: proj, the window reverse + roll back and the residual add as one op, so
            // that neither proj's output nor its reversed copy is a Var the graph keeps (the same
            // values and gradients, bit for bit).
            None => self.proj.forward_unpermute_add(&o, &tokens, &plan.gather, &plan.scatter)?,
        }
        .reshape(&[b, h, w, c])?;

        let m = self.norm2.forward(&x)?;
        self.mlp_add(&m, &x)
    }

    /// Whether the attention half of the block records anything for a backward: its input or
    /// a parameter of norm1, qkv, the bias table or proj requires a gradient (with gradients
    /// on). Exactly when proj's op on the attention's output would record.
    fn attention_records_on(&self, x: &Var) -> bool {
        let norm_and_bias = [&self.norm1.weight, &self.norm1.bias, &self.bias_table];
        self.qkv.records_on(x) || self.proj.records_on(x) || Var::records(&norm_and_bias)
    }

    /// x + fc2(gelu(fc1(m))). Where nothing records (inference, a frozen encoder) it runs per
    /// block of rows, each block's hidden rows used while in cache (`Tensor::mlp_add`: the GELU
    /// in fc1's output pass, the residual in fc2's, the same bits as the two products). Training
    /// keeps fc1's pre-activation instead of the GELU's output (same memory): fc2's backward
    /// recomputes the GELU from it, an elementwise pass, where fc1's backward would otherwise
    /// recompute the pre-activation with a GEMM (the largest of the block); and fc2 adds the
    /// residual in its output pass, so its output is not kept either. The same values and
    /// gradients, bit for bit (`autograd/tests/grad_linalg.rs`).
    fn mlp_add(&self, m: &Var, x: &Var) -> Result<Var> {
        if self.fc1.records_on(m) {
            return self.fc2.forward_gelu_input_add(&self.fc1.forward(m)?, x);
        }
        if !self.fc2.records_on(x) {
            let (fc1, fc2) = (self.fc1.operands()?, self.fc2.operands()?);
            return Ok(Var::constant(m.value().mlp_add(fc1.as_ref(), fc2.as_ref(), &x.value())?));
        }
        self.fc2.forward_add(&self.fc1.forward_act(m, Activation::Gelu)?, x)
    }
}

/// PatchMerging: 2×2 neighbours concatenated as (r0c0, r1c0, r0c1, r1c1), LayerNorm(4C),
/// Linear(4C, 2C) without bias.
#[derive(Clone, Debug)]
pub(crate) struct PatchMerging {
    norm: LayerNorm,
    /// Without bias.
    reduction: Linear,
}

impl PatchMerging {
    fn new(b: &mut Builder, spec: &PatchMergeSpec) -> PatchMerging {
        let reduction = Linear::new(b, &spec.reduction);
        let norm = LayerNorm::new(b, &spec.norm);
        PatchMerging { norm, reduction }
    }

    fn forward(&self, x: &Var) -> Result<Var> {
        let s = x.shape();
        let (b, h, w, c) = (s[0], s[1], s[2], s[3]);
        // [B, H/2, row parity, W/2, col parity, C] -> [B, H/2, W/2, col parity, row parity, C]:
        // the flattened (col, row) parity order is exactly the concatenation order.
        let x =
            x.reshape(&[b, h / 2, 2, w / 2, 2, c])?.permute(&[0, 1, 3, 4, 2, 5])?.reshape(&[b, h / 2, w / 2, 4 * c])?;
        self.reduction.forward(&self.norm.forward(&x)?)
    }
}

struct Stage {
    blocks: Vec<SwinBlock>,
    plain: WindowPlan,
    /// None when the window covers the whole map (torchvision then forces shift 0).
    shifted: Option<WindowPlan>,
}

/// The encoder: patch embedding, four stages with patch merging between them.
pub(crate) struct SwinEncoder {
    patch_weight: Var,
    patch_bias: Var,
    patch_norm: LayerNorm,
    stages: Vec<Stage>,
    merges: Vec<PatchMerging>,
    patch: usize,
    embed_dim: usize,
}

impl SwinEncoder {
    /// Built from a checked schema (resolutions and window plans included).
    pub fn new(b: &mut Builder, spec: &SwinSpec) -> SwinEncoder {
        let (patch_weight, patch_bias) = conv_params(b, &spec.patch_embed.conv);
        let patch_bias = patch_bias.expect("the patch embedding has a bias");
        let patch_norm = LayerNorm::new(b, &spec.patch_embed.norm);
        let win = spec.window;
        let mut stages = Vec::new();
        let mut merges = Vec::new();
        for st in &spec.stages {
            if let Some(m) = &st.merge {
                merges.push(PatchMerging::new(b, m));
            }
            let blocks = st.blocks.iter().map(|k| SwinBlock::new(b, k)).collect();
            // Key listing needs no plans; they are cheap anyway, but skip the big masks.
            let res = st.res;
            let shifted = (st.shift > 0 && !b.is_spec()).then(|| WindowPlan::new(res, res, win, st.shift));
            stages.push(Stage { blocks, plain: WindowPlan::new(res, res, win, 0), shifted });
        }
        let embed_dim = spec.patch_embed.conv.out;
        SwinEncoder { patch_weight, patch_bias, patch_norm, stages, merges, patch: spec.patch, embed_dim }
    }

    /// x: [B, 3, H, W] -> the four raw stage outputs, NHWC.
    pub fn forward(&self, x: &Var) -> Result<Vec<Var>> {
        const STAGE_LABELS: [&str; 4] = ["stage1", "stage2", "stage3", "stage4"];
        let s = x.shape();
        let (b, h, w, p, c) = (s[0], s[2], s[3], self.patch, self.embed_dim);
        // The k=s=p conv as one GEMM over non-overlapping patches, giving NHWC directly.
        let patches = x.reshape(&[b, 3, h / p, p, w / p, p])?.permute(&[0, 2, 4, 1, 3, 5])?.reshape(&[
            b,
            h / p,
            w / p,
            3 * p * p,
        ])?;
        let weight = self.patch_weight.reshape(&[c, 3 * p * p])?;
        let patch_stage = profile::stage("patch_embed");
        let mut x = self.patch_norm.forward(&patches.linear(&weight, Some(&self.patch_bias))?)?;

        drop(patch_stage);
        let mut outs = Vec::with_capacity(self.stages.len());
        for (i, stage) in self.stages.iter().enumerate() {
            // Labels for `facex bench --profile` (free when it is off); merging counts with the stage it feeds.
            let _stage = profile::stage(STAGE_LABELS.get(i).copied().unwrap_or("stage5+"));
            if i > 0 {
                x = self.merges[i - 1].forward(&x)?;
            }
            for blk in &stage.blocks {
                let plan = match (&stage.shifted, blk.shifted) {
                    (Some(sp), true) => sp,
                    _ => &stage.plain,
                };
                x = blk.forward(&x, plan)?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused window attention against its composite twin: outputs and the gradients of qkv
    /// and of the bias table (through the gather), shifted windows included.
    #[test]
    fn fused_attention_equals_composite_twin() {
        let (b, side, win, heads, c) = (2, 14, 7, 2, 64);
        let n = win * win;
        let plan = WindowPlan::new(side, side, win, 3);
        let bw = b * plan.windows;
        let qkv = Var::param(Tensor::randn(&[bw, n, 3 * c], 1, DType::F32), "qkv");
        let table = Var::param(Tensor::randn(&[169, heads], 2, DType::F32), "table");
        let index = Tensor::from_vec(relative_position_index(win), &[n * n]).unwrap();
        let g = Tensor::randn(&[bw, n, c], 3, DType::F32);
        let mask = plan.mask.as_ref().map(|m| m.reshape(&[plan.windows, n, n]).unwrap());
        let scale = (c as f64 / heads as f64).powf(-0.5);
        let run = |fused: bool| {
            let bias = table.index_select(0, &index).unwrap().t().unwrap().reshape(&[heads, n, n]).unwrap();
            let out = if fused {
                qkv.window_attention(heads, Some(&bias), mask.as_ref(), scale as f32).unwrap()
            } else {
                attention_composite(&qkv, &bias, mask.as_ref(), heads, scale).unwrap()
            };
            let loss = out.mul(&Var::constant(g.clone())).unwrap().sum(&[0, 1, 2], false).unwrap();
            let grads = loss.backward().unwrap();
            let vals = |t: &Tensor| t.to_vec::<f32>().unwrap();
            (vals(&out.value()), vals(grads.get(&qkv).unwrap()), vals(grads.get(&table).unwrap()))
        };
        let (fused, twin) = (run(true), run(false));
        for (name, a, b) in [("out", &fused.0, &twin.0), ("dqkv", &fused.1, &twin.1), ("dtable", &fused.2, &twin.2)] {
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let err = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(err <= 1e-5 * scale.max(1.0) * 10.0, "{name}: max error {err} (scale {scale})");
        }
    }

    /// A block's MLP half where nothing records (`Tensor::mlp_add`, per block of rows) against
    /// the two products it replaces: the same bits, at inference (packed weights) and with
    /// gradients on but the block frozen (the demo's encoder; unpacked weights).
    #[test]
    fn mlp_where_nothing_records_is_its_composite() {
        let spec = super::super::schema::swin_block(32, 1, 7, 3, 0, 0);
        let mut b = Builder::new(super::super::params::Source::Random { seed: 5 });
        let block = SwinBlock::new(&mut b, &spec);
        for p in [&block.fc1, &block.fc2].into_iter().flat_map(|l| std::iter::once(&l.weight).chain(&l.bias)) {
            p.set_requires_grad(false).unwrap();
        }
        // Four images of the tiny model's stage 1: enough rows for the blocks on two threads.
        let x = Var::constant(Tensor::randn(&[4, 56 * 56, 32], 1, DType::F32));
        let m = Var::constant(block.norm2.forward(&x).unwrap().value());
        let bits = |v: Var| v.value().to_vec::<f32>().unwrap().iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let (inference, frozen, composite) = pool.install(|| {
            assert!(tensor::ops::mlp::block_rows(4 * 56 * 56, 32, 128, 32, 2).is_some(), "must run per block");
            let inference = autograd::no_grad(|| block.mlp_add(&m, &x)).unwrap();
            let frozen = block.mlp_add(&m, &x).unwrap();
            let h = block.fc1.forward_act(&m, Activation::Gelu).unwrap();
            (inference, frozen, block.fc2.forward_add(&h, &x).unwrap())
        });
        assert!(!frozen.is_recorded(), "a frozen block records nothing");
        let want = bits(composite);
        assert_eq!(bits(inference), want);
        assert_eq!(bits(frozen), want);
    }

    #[test]
    fn relative_index_matches_torchvision_formula() {
        let idx = relative_position_index(7);
        assert_eq!(idx.len(), 2401);
        assert_eq!(idx[0], 84); // p = q: (6)*13 + 6
        assert_eq!(*idx.iter().max().unwrap(), 168);
        assert_eq!(*idx.iter().min().unwrap(), 0);
        // p = (0,0), q = (6,6): dh = -6 + 6 = 0, dw = 0 -> 0.
        assert_eq!(idx[48], 0);
    }

    #[test]
    fn plans_are_permutations_and_undo_the_roll() {
        for &(h, win, shift) in &[(14usize, 7usize, 3usize), (28, 7, 0), (21, 7, 3)] {
            let plan = WindowPlan::new(h, h, win, shift);
            let g = plan.gather.to_vec::<i64>().unwrap();
            let s = plan.scatter.to_vec::<i64>().unwrap();
            for (t, &src) in g.iter().enumerate() {
                assert_eq!(s[src as usize] as usize, t);
            }
            // Token 0 of window 0 reads the pixel at (shift, shift): roll(-shift).
            assert_eq!(g[0] as usize, shift * h + shift);
        }
    }

    #[test]
    fn shift_mask_has_nine_regions() {
        let (h, win, shift) = (14usize, 7usize, 3usize);
        let m = shift_mask(h, h, win, shift).to_vec::<f32>().unwrap();
        let n = win * win;
        // Window 0 lies in region (0,0) only: no masking.
        assert!(m[..n * n].iter().all(|&v| v == 0.0));
        // The last window holds 4 regions: its token (0,0) and token (6,6) differ.
        let last = &m[3 * n * n..];
        assert_eq!(last[n - 1], MASK_VALUE);
        // Token (0,0) and (0,3) are both in column region 1 (cols 7..10 of 14): same region.
        assert_eq!(last[3], 0.0);
        assert_eq!(last[4], MASK_VALUE);
    }
}
