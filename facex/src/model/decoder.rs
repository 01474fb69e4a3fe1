//! The FaceX decoder: SAM's TwoWayTransformer (post-norm, ReLU MLP, cross-attention at a
//! reduced internal width), as `face_decoder.transformer`.

use super::layers::{LayerNorm, Linear, LinearInit};
use super::params::Builder;
use crate::model::DecoderConfig;
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
    fn new(b: &mut Builder, p: &str, dim: usize, heads: usize, downsample: usize) -> Attention {
        let internal = dim / downsample;
        let lin = |b: &mut Builder, name: &str, i: usize, o: usize| {
            Linear::new(b, &format!("{p}.{name}"), i, o, true, LinearInit::Default)
        };
        let q = lin(b, "q_proj", dim, internal);
        let k = lin(b, "k_proj", dim, internal);
        let v = lin(b, "v_proj", dim, internal);
        let out = lin(b, "out_proj", internal, dim);
        Attention { q, k, v, out, heads, internal }
    }

    /// q [B, Nq, D], k and v [B, Nk, D] -> [B, Nq, D].
    pub fn forward(&self, q: &Var, k: &Var, v: &Var) -> Result<Var> {
        let (b, nq, nk) = (q.shape()[0], q.shape()[1], k.shape()[1]);
        let (h, dh) = (self.heads, self.internal / self.heads);
        let q = self
            .q
            .forward(q)?
            .affine(1.0 / (dh as f64).sqrt(), 0.0)?
            .reshape(&[b, nq, h, dh])?
            .permute(&[0, 2, 1, 3])?;
        let k = self.k.forward(k)?.reshape(&[b, nk, h, dh])?.permute(&[0, 2, 3, 1])?; // [b, h, dh, nk]
        let v = self.v.forward(v)?.reshape(&[b, nk, h, dh])?.permute(&[0, 2, 1, 3])?;
        let o = q.matmul(&k)?.softmax(-1)?.matmul(&v)?; // [b, h, nq, dh]
        let o = o.permute(&[0, 2, 1, 3])?.reshape(&[b, nq, self.internal])?;
        self.out.forward(&o)
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
    fn new(b: &mut Builder, p: &str, cfg: &DecoderConfig, skip_first_layer_pe: bool) -> TwoWayBlock {
        let d = cfg.dim;
        let self_attn = Attention::new(b, &format!("{p}.self_attn"), d, cfg.heads, 1);
        let norm1 = LayerNorm::new(b, &format!("{p}.norm1"), d, 1e-5);
        let cross_t2i =
            Attention::new(b, &format!("{p}.cross_attn_token_to_image"), d, cfg.heads, cfg.cross_downsample);
        let norm2 = LayerNorm::new(b, &format!("{p}.norm2"), d, 1e-5);
        let lin1 = Linear::new(b, &format!("{p}.mlp.lin1"), d, cfg.mlp_dim, true, LinearInit::Default);
        let lin2 = Linear::new(b, &format!("{p}.mlp.lin2"), cfg.mlp_dim, d, true, LinearInit::Default);
        let norm3 = LayerNorm::new(b, &format!("{p}.norm3"), d, 1e-5);
        let norm4 = LayerNorm::new(b, &format!("{p}.norm4"), d, 1e-5);
        let cross_i2t =
            Attention::new(b, &format!("{p}.cross_attn_image_to_token"), d, cfg.heads, cfg.cross_downsample);
        TwoWayBlock { self_attn, norm1, cross_t2i, norm2, lin1, lin2, norm3, norm4, cross_i2t, skip_first_layer_pe }
    }

    /// queries [B, T, D], keys [B, HW, D]; the positional terms are added to q and k inputs only.
    fn forward(&self, queries: &Var, keys: &Var, query_pe: &Var, key_pe: &Var) -> Result<(Var, Var)> {
        // Task self-attention; the first layer has neither the PE nor the residual.
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)?
        } else {
            let q = queries.add(query_pe)?;
            queries.add(&self.self_attn.forward(&q, &q, queries)?)?
        };
        let queries = self.norm1.forward(&queries)?;

        // Tokens attend to the image.
        let q = queries.add(query_pe)?;
        let k = keys.add(key_pe)?;
        let queries = self.norm2.forward(&queries.add(&self.cross_t2i.forward(&q, &k, keys)?)?)?;

        let m = self.lin2.forward(&self.lin1.forward_act(&queries, Activation::Relu)?)?;
        let queries = self.norm3.forward(&queries.add(&m)?)?;

        // The image attends to the tokens.
        let q = queries.add(query_pe)?;
        let keys = self.norm4.forward(&keys.add(&self.cross_i2t.forward(&k, &q, &queries)?)?)?;
        Ok((queries, keys))
    }
}

pub(crate) struct TwoWayTransformer {
    layers: Vec<TwoWayBlock>,
    final_attn: Attention,
    norm_final: LayerNorm,
}

impl TwoWayTransformer {
    pub fn new(b: &mut Builder, cfg: &DecoderConfig) -> TwoWayTransformer {
        let p = "face_decoder.transformer";
        let layers = (0..cfg.depth).map(|l| TwoWayBlock::new(b, &format!("{p}.layers.{l}"), cfg, l == 0)).collect();
        let final_attn =
            Attention::new(b, &format!("{p}.final_attn_token_to_image"), cfg.dim, cfg.heads, cfg.cross_downsample);
        let norm_final = LayerNorm::new(b, &format!("{p}.norm_final_attn"), cfg.dim, 1e-5);
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
        let queries = self.norm_final.forward(&queries.add(&self.final_attn.forward(&q, &k, &keys)?)?)?;
        Ok((queries, keys))
    }
}
