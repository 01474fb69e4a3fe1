//! The FaceX decoder: SAM's TwoWayTransformer (post-norm, ReLU MLP, cross-attention at a
//! reduced internal width), as `face_decoder.transformer`.

use super::layers::{LayerNorm, Linear};
use super::params::Builder;
use super::schema::{AttentionSpec, TransformerSpec, TwoWayBlockSpec};
use autograd::Var;
use tensor::ops::Activation;
use tensor::Result;

/// SAM's Attention: q/k/v projections to `internal` = dim / downsample, `heads` heads,
/// softmax(q kᵀ / sqrt(head_dim)) v, out projection back to dim.
pub(crate) struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    internal: usize,
}

impl Attention {
    fn new(b: &mut Builder, spec: &AttentionSpec) -> Attention {
        let q = Linear::new(b, &spec.q);
        let k = Linear::new(b, &spec.k);
        let v = Linear::new(b, &spec.v);
        let out = Linear::new(b, &spec.out);
        Attention { q, k, v, out, heads: spec.heads, internal: spec.internal }
    }

    /// `residual + forward(q, k, v)`. Inference adds the residual in the out projection's
    /// output pass (same bits); training keeps the plain add, whose backward it was built on.
    pub fn forward_add(&self, q: &Var, k: &Var, v: &Var, residual: &Var) -> Result<Var> {
        let o = self.heads_output(q, k, v)?;
        if self.out.records_on(&o) || residual.requires_grad() {
            return residual.add(&self.out.forward(&o)?);
        }
        self.out.forward_add(&o, residual)
    }

    /// q [B, Nq, D], k and v [B, Nk, D] -> [B, Nq, D].
    pub fn forward(&self, q: &Var, k: &Var, v: &Var) -> Result<Var> {
        self.out.forward(&self.heads_output(q, k, v)?)
    }

    /// The heads' outputs side by side, before the out projection: [B, Nq, internal].
    fn heads_output(&self, q: &Var, k: &Var, v: &Var) -> Result<Var> {
        let (b, nq, nk) = (q.shape()[0], q.shape()[1], k.shape()[1]);
        let (h, dh) = (self.heads, self.internal / self.heads);
        let q = self
            .q
            .forward(q)?
            .affine(1.0 / (dh as f64).sqrt(), 0.0)?
            .reshape(&[b, nq, h, dh])?
            .permute(&[0, 2, 1, 3])?;
        let k = self.k.forward(k)?.reshape(&[b, nk, h, dh])?.permute(&[0, 2, 1, 3])?;
        let v = self.v.forward(v)?.reshape(&[b, nk, h, dh])?.permute(&[0, 2, 1, 3])?;
        // One fused pass per head (`Tensor::attention`; its composite twin is q kᵀ, softmax, · v),
        // in f32 also with bf16 products, as Swin's window attention: 18 queries against 3136
        // keys of 16 values is no shape for the bf16 GEMM (4-7% of its peak there). In training
        // its backward recomputes the probabilities instead of keeping them (140 MiB less at
        // batch 8).
        let o = q.attention(&k, &v)?; // [b, h, nq, dh]
        o.permute(&[0, 2, 1, 3])?.reshape(&[b, nq, self.internal])
    }
}

/// One TwoWayAttentionBlock.
struct TwoWayBlock {
    self_attn: Attention,
    norm1: LayerNorm,
    cross_t2i: Attention,
    norm2: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    norm3: LayerNorm,
    norm4: LayerNorm,
    cross_i2t: Attention,
    skip_first_layer_pe: bool,
}

impl TwoWayBlock {
    fn new(b: &mut Builder, spec: &TwoWayBlockSpec) -> TwoWayBlock {
        TwoWayBlock {
            self_attn: Attention::new(b, &spec.self_attn),
            norm1: LayerNorm::new(b, &spec.norm1),
            cross_t2i: Attention::new(b, &spec.cross_t2i),
            norm2: LayerNorm::new(b, &spec.norm2),
            lin1: Linear::new(b, &spec.lin1),
            lin2: Linear::new(b, &spec.lin2),
            norm3: LayerNorm::new(b, &spec.norm3),
            norm4: LayerNorm::new(b, &spec.norm4),
            cross_i2t: Attention::new(b, &spec.cross_i2t),
            skip_first_layer_pe: spec.skip_first_layer_pe,
        }
    }

    /// queries [B, T, D], keys [B, HW, D]; the positional terms are added to q and k inputs only.
    fn forward(&self, queries: &Var, keys: &Var, query_pe: &Var, key_pe: &Var) -> Result<(Var, Var)> {
        // Task self-attention; the first layer has neither the PE nor the residual.
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)?
        } else {
            let q = queries.add(query_pe)?;
            self.self_attn.forward_add(&q, &q, queries, queries)?
        };
        let queries = self.norm1.forward(&queries)?;

        // Tokens attend to the image.
        let q = queries.add(query_pe)?;
        let k = keys.add(key_pe)?;
        let queries = self.norm2.forward(&self.cross_t2i.forward_add(&q, &k, keys, &queries)?)?;

        let m = self.lin2.forward(&self.lin1.forward_act(&queries, Activation::Relu)?)?;
        let queries = self.norm3.forward(&queries.add(&m)?)?;

        // The image attends to the tokens.
        let q = queries.add(query_pe)?;
        let keys = self.norm4.forward(&self.cross_i2t.forward_add(&k, &q, &queries, keys)?)?;
        Ok((queries, keys))
    }
}

pub(crate) struct TwoWayTransformer {
    layers: Vec<TwoWayBlock>,
    final_attn: Attention,
    norm_final: LayerNorm,
}

impl TwoWayTransformer {
    pub fn new(b: &mut Builder, spec: &TransformerSpec) -> TwoWayTransformer {
        let layers = spec.layers.iter().map(|l| TwoWayBlock::new(b, l)).collect();
        let final_attn = Attention::new(b, &spec.final_attn);
        let norm_final = LayerNorm::new(b, &spec.norm_final);
        TwoWayTransformer { layers, final_attn, norm_final }
    }

    /// tokens [B, T, D] (also their own PE), image [B, HW, D], image_pe [B or 1, HW, D]
    /// -> (tokens [B, T, D], image [B, HW, D]).
    pub fn forward(&self, tokens: &Var, image: &Var, image_pe: &Var) -> Result<(Var, Var)> {
        let (mut queries, mut keys) = (tokens.clone(), image.clone());
        for layer in &self.layers {
            (queries, keys) = layer.forward(&queries, &keys, tokens, image_pe)?;
        }
        let q = queries.add(tokens)?;
        let k = keys.add(image_pe)?;
        let queries = self.norm_final.forward(&self.final_attn.forward_add(&q, &k, &keys, &queries)?)?;
        Ok((queries, keys))
    }
}
