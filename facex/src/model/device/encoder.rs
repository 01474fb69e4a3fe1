//! The Swin-B encoder and the fusion module on a device backend.

use super::{DevLinear, DevNorm, Loader, T};
use crate::model::schema::Schema;
use crate::model::swin::{relative_position_index, shift_mask};
use tensor::backend::Backend;
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
        let x = be.window_reverse_add(&o, (h, w), window, self.shift, x)?;

        let m = self.fc1.forward(be, &self.norm2.forward(be, &x)?, Activation::Gelu)?;
        self.fc2.forward_add(be, &m, Activation::None, &x)
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
    pub fn new(ld: &Loader<'_, B>, schema: &Schema) -> Result<Self> {
        let bb = &schema.backbone;
        let (p, win, conv) = (bb.patch, bb.window, &bb.patch_embed.conv);
        let pw = ld.host(&conv.weight_key())?.reshape(&[conv.out, 3 * p * p])?;
        let patch = DevLinear { w: ld.tensor(&pw)?, b: Some(ld.f32(ld.host(&conv.bias_key())?)?) };
        let patch_norm = ld.norm(&bb.patch_embed.norm)?;
        let n = win * win;
        let index = Tensor::from_vec(relative_position_index(win), &[n * n])?;

        let mut stages = Vec::new();
        for st in &bb.stages {
            let merge = match &st.merge {
                Some(m) => Some((ld.norm(&m.norm)?, ld.linear(&m.reduction)?)),
                None => None,
            };
            let shifted_mask = if st.shift > 0 {
                let m = shift_mask(st.res, st.res, win, st.shift);
                Some(ld.f32(&m.reshape(&[m.shape()[0], n, n])?)?)
            } else {
                None
            };
            let mut blocks = Vec::new();
            for blk in &st.blocks {
                let (heads, table) = (blk.heads, ld.host(&blk.bias_table.key)?);
                let bias = table.index_select(0, &index)?.t()?.reshape(&[heads, n, n])?.contiguous();
                let mask = if blk.shift > 0 { shifted_mask.clone() } else { None };
                blocks.push(DevBlock {
                    norm1: ld.norm(&blk.norm1)?,
                    qkv: ld.linear(&blk.qkv)?,
                    proj: ld.linear(&blk.proj)?,
                    norm2: ld.norm(&blk.norm2)?,
                    fc1: ld.linear(&blk.fc1)?,
                    fc2: ld.linear(&blk.fc2)?,
                    bias: ld.f32(&bias)?,
                    mask,
                    shift: blk.shift,
                    heads,
                });
            }
            stages.push(DevStage { merge, blocks });
        }

        // Fusion: fused = Σ_i W_i up(P_i x_i + b_i) = Σ_i up((W_i P_i) x_i + W_i b_i), since the
        // bilinear weights of every output pixel sum to one. Composed once, in f32.
        let fs = &schema.fusion;
        let (d, n_stages) = (fs.dim, fs.proj.len());
        let fuse = ld.host(&fs.fuse.weight_key())?.reshape(&[d, n_stages * d])?.to_dtype(DType::F32);
        let mut fusion = Vec::new();
        for (i, proj) in fs.proj.iter().enumerate() {
            // The official concatenation is in reverse stage order.
            let wi = fuse.narrow(1, (n_stages - 1 - i) * d, d)?;
            let pw = ld.host(&proj.weight_key())?.to_dtype(DType::F32);
            let pb = ld.host(&proj.bias_key())?.to_dtype(DType::F32);
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
