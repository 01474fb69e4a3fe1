//! The Swin-B encoder and the fusion module on a device backend.

use super::{DevLinear, DevNorm, Loader, T};
use crate::model::swin::{relative_position_index, shift_mask};
use crate::model::FacexConfig;
use crate::model::IMAGE_SIZE;
use tensor::backend::{Backend, BinaryOp};
use tensor::ops::Activation;
use tensor::{DType, Result, Tensor};

/// One Swin block: `x + proj(attn(window(norm1(x))))`, then `x + fc2(gelu(fc1(norm2(x))))`.
struct DevBlock<B: Backend> {
    norm1: DevNorm<B>,
    qkv: DevLinear<B>,
    proj: DevLinear<B>,
    norm2: DevNorm<B>,
    fc1: DevLinear<B>,
    fc2: DevLinear<B>,
    /// Relative-position bias gathered to [heads, w², w²] (f32).
    bias: T<B>,
    /// The shift mask [windows, w², w²] (f32) of a shifted block; `shift` 0 without one.
    mask: Option<T<B>>,
    shift: usize,
    heads: usize,
}

impl<B: Backend> DevBlock<B> {
    /// x: [B, H, W, C] -> [B, H, W, C].
    fn forward(&self, be: &B, x: &T<B>, window: usize) -> Result<T<B>> {
        let &[_, h, w, c] = x.shape() else { unreachable!("NHWC activations") };
        let heads = self.heads;

        let y = be.window_partition(&self.norm1.forward(be, x)?, window, self.shift)?; // [bw, n, C]
                                                                                       // Heads are read in place from the packed qkv [bw, n, 3C]; the output is [bw, n, C].
        let qkv = self.qkv.forward(be, &y, Activation::None)?;
        let scale = ((c / heads) as f32).powf(-0.5);
        let o = be.attention_packed(&qkv, heads, Some(&self.bias), self.mask.as_ref(), scale)?;
        let o = self.proj.forward(be, &o, Activation::None)?;
        let x = be.binary(x, &be.window_reverse(&o, (h, w), window, self.shift)?, BinaryOp::Add)?;

        let m = self.fc1.forward(be, &self.norm2.forward(be, &x)?, Activation::Gelu)?;
        be.binary(&x, &self.fc2.forward(be, &m, Activation::None)?, BinaryOp::Add)
    }
}

struct DevStage<B: Backend> {
    /// Patch merging before the stage (all but the first): gather, LayerNorm(4C), Linear(4C, 2C).
    merge: Option<(DevNorm<B>, DevLinear<B>)>,
    blocks: Vec<DevBlock<B>>,
}

pub(crate) struct DevEncoder<B: Backend> {
    patch: DevLinear<B>,
    patch_norm: DevNorm<B>,
    patch_size: usize,
    window: usize,
    stages: Vec<DevStage<B>>,
    /// Per stage: the composed projection `W_i P_i` [D, C_i] and bias `W_i b_i` [D] (f32).
    fusion: Vec<DevLinear<B>>,
}

impl<B: Backend> DevEncoder<B> {
    pub fn new(ld: &Loader<'_, B>, cfg: &FacexConfig) -> Result<Self> {
        let bb = &cfg.backbone;
        let (p, c0, win) = (bb.patch_size, bb.embed_dim, bb.window_size);
        let pw = ld.host("backbone.0.0.0.weight")?.reshape(&[c0, 3 * p * p])?;
        let patch = DevLinear { w: ld.tensor(&pw)?, b: Some(ld.f32(ld.host("backbone.0.0.0.bias")?)?) };
        let patch_norm = ld.norm("backbone.0.0.2", 1e-5)?;
        let n = win * win;
        let index = Tensor::from_vec(relative_position_index(win), &[n * n])?;

        let mut stages = Vec::new();
        let mut res = IMAGE_SIZE / p;
        for (i, (&depth, &heads)) in bb.depths.iter().zip(&bb.num_heads).enumerate() {
            let merge = if i > 0 {
                res /= 2;
                let pre = format!("backbone.0.{}", 2 * i);
                Some((ld.norm(&format!("{pre}.norm"), 1e-5)?, ld.linear(&format!("{pre}.reduction"), false)?))
            } else {
                None
            };
            // torchvision uses no shift when the window covers the whole map.
            let shifted_mask = if win < res {
                let m = shift_mask(res, res, win, win / 2);
                Some(ld.f32(&m.reshape(&[m.shape()[0], n, n])?)?)
            } else {
                None
            };
            let mut blocks = Vec::new();
            for k in 0..depth {
                let pre = format!("backbone.0.{}.{k}", 2 * i + 1);
                let table = ld.host(&format!("{pre}.attn.relative_position_bias_table"))?;
                let bias = table.index_select(0, &index)?.t()?.reshape(&[heads, n, n])?.contiguous();
                let (mask, shift) = match (&shifted_mask, k % 2 == 1) {
                    (Some(m), true) => (Some(m.clone()), win / 2),
                    _ => (None, 0),
                };
                blocks.push(DevBlock {
                    norm1: ld.norm(&format!("{pre}.norm1"), 1e-5)?,
                    qkv: ld.linear(&format!("{pre}.attn.qkv"), true)?,
                    proj: ld.linear(&format!("{pre}.attn.proj"), true)?,
                    norm2: ld.norm(&format!("{pre}.norm2"), 1e-5)?,
                    fc1: ld.linear(&format!("{pre}.mlp.0"), true)?,
                    fc2: ld.linear(&format!("{pre}.mlp.3"), true)?,
                    bias: ld.f32(&bias)?,
                    mask,
                    shift,
                    heads,
                });
            }
            stages.push(DevStage { merge, blocks });
        }

        // Fusion: fused = Σ_i W_i up(P_i x_i + b_i) = Σ_i up((W_i P_i) x_i + W_i b_i), since the
        // bilinear weights of every output pixel sum to one. Composed once, in f32.
        let d = cfg.decoder.dim;
        let n_stages = bb.depths.len();
        let fuse = ld.host("linear_fuse.weight")?.reshape(&[d, n_stages * d])?.to_dtype(DType::F32);
        let mut fusion = Vec::new();
        for i in 0..n_stages {
            // The official concatenation is in reverse stage order.
            let wi = fuse.narrow(1, (n_stages - 1 - i) * d, d)?;
            let pw = ld.host(&format!("linear_c.{i}.proj.weight"))?.to_dtype(DType::F32);
            let pb = ld.host(&format!("linear_c.{i}.proj.bias"))?.to_dtype(DType::F32);
            let w = wi.matmul(&pw)?; // [D, C_i]
            let b = wi.matmul(&pb.reshape(&[d, 1])?)?.reshape(&[d])?;
            fusion.push(DevLinear { w: ld.tensor(&w)?, b: Some(ld.f32(&b)?) });
        }
        Ok(DevEncoder { patch, patch_norm, patch_size: p, window: win, stages, fusion })
    }

    /// x [B, 3, 224, 224] -> the four stage outputs, NHWC.
    pub fn forward(&self, be: &B, x: &T<B>) -> Result<Vec<T<B>>> {
        let &[b, _, h, w] = x.shape() else { unreachable!("checked by the caller") };
        let p = self.patch_size;
        // The k = s = p conv as one GEMM over the non-overlapping patches (an im2col that is a
        // pure permutation), giving NHWC directly.
        let patches = be.permute(&x.reshape(&[b, 3, h / p, p, w / p, p])?, &[0, 2, 4, 1, 3, 5])?;
        let patches = patches.reshape(&[b, h / p, w / p, 3 * p * p])?;
        let mut x = self.patch_norm.forward(be, &self.patch.forward(be, &patches, Activation::None)?)?;
        let mut outs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            if let Some((norm, reduction)) = &stage.merge {
                x = reduction.forward(be, &norm.forward(be, &be.patch_merge(&x)?)?, Activation::None)?;
            }
            for blk in &stage.blocks {
                x = blk.forward(be, &x, self.window)?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }

    /// The fusion module: stage outputs (NHWC) -> image tokens [B, H1·W1, D].
    pub fn fuse(&self, be: &B, stages: &[T<B>]) -> Result<T<B>> {
        let &[b, h1, w1, _] = stages[0].shape() else { unreachable!("NHWC activations") };
        let maps = stages
            .iter()
            .zip(&self.fusion)
            .map(|(x, f)| f.forward(be, x, Activation::None))
            .collect::<Result<Vec<_>>>()?;
        let fused = be.upsample_sum_nhwc(&maps.iter().collect::<Vec<_>>(), (h1, w1))?;
        let d = fused.shape()[3];
        fused.reshape(&[b, h1 * w1, d])
    }
}
