//! The two-way decoder and the heads on a device backend.

use super::{DevLinear, DevNorm, Loader, T};
use crate::model::positional_encoding;
use crate::model::schema::{AttentionSpec, ConvSpec, HeadsSpec, Mlp3Spec, Schema};
use crate::model::{NUM_MASKS, TASKS};
use tensor::backend::{Backend, BinaryOp};
use tensor::ops::Activation;
use tensor::Result;

/// SAM's Attention: projections to `heads` heads of `internal / heads`, fused attention, out
/// projection.
struct DevAttention<B: Backend> {
    q: DevLinear<B>,
    k: DevLinear<B>,
    v: DevLinear<B>,
    out: DevLinear<B>,
    heads: usize,
}

impl<B: Backend> DevAttention<B> {
    fn new(ld: &Loader<'_, B>, spec: &AttentionSpec) -> Result<Self> {
        Ok(DevAttention {
            q: ld.linear(&spec.q)?,
            k: ld.linear(&spec.k)?,
            v: ld.linear(&spec.v)?,
            out: ld.linear(&spec.out)?,
            heads: spec.heads,
        })
    }

    /// q [B, Nq, D], k and v [B, Nk, D] -> [B, Nq, D].
    fn forward(&self, be: &B, q: &T<B>, k: &T<B>, v: &T<B>) -> Result<T<B>> {
        self.forward_residual(be, q, k, v, None)
    }

    /// `residual + attention(q, k, v)`, the add fused into the output projection.
    fn forward_add(&self, be: &B, q: &T<B>, k: &T<B>, v: &T<B>, residual: &T<B>) -> Result<T<B>> {
        self.forward_residual(be, q, k, v, Some(residual))
    }

    fn forward_residual(&self, be: &B, q: &T<B>, k: &T<B>, v: &T<B>, residual: Option<&T<B>>) -> Result<T<B>> {
        let internal = self.q.w.shape()[0];
        let dh = internal / self.heads;
        // Token-major [B, N, internal] in and out: the kernel reads each head's columns in place.
        let (q, k, v) = (
            self.q.forward(be, q, Activation::None)?,
            self.k.forward(be, k, Activation::None)?,
            self.v.forward(be, v, Activation::None)?,
        );
        let o = be.attention(&q, &k, &v, self.heads, None, None, 1.0 / (dh as f32).sqrt())?;
        match residual {
            Some(r) => self.out.forward_add(be, &o, Activation::None, r),
            None => self.out.forward(be, &o, Activation::None),
        }
    }
}

struct DevTwoWayBlock<B: Backend> {
    self_attn: DevAttention<B>,
    norm1: DevNorm<B>,
    cross_t2i: DevAttention<B>,
    norm2: DevNorm<B>,
    lin1: DevLinear<B>,
    lin2: DevLinear<B>,
    norm3: DevNorm<B>,
    norm4: DevNorm<B>,
    cross_i2t: DevAttention<B>,
    skip_first_layer_pe: bool,
}

pub(crate) struct DevDecoder<B: Backend> {
    layers: Vec<DevTwoWayBlock<B>>,
    final_attn: DevAttention<B>,
    norm_final: DevNorm<B>,
    /// The image positional encoding as tokens [HW, D] (added over the batch).
    image_pe: T<B>,
}

fn add<B: Backend>(be: &B, a: &T<B>, b: &T<B>) -> Result<T<B>> {
    be.binary(a, b, BinaryOp::Add)
}

impl<B: Backend> DevDecoder<B> {
    pub fn new(ld: &Loader<'_, B>, schema: &Schema) -> Result<Self> {
        let t = &schema.transformer;
        let mut layers = Vec::new();
        for l in &t.layers {
            layers.push(DevTwoWayBlock {
                self_attn: DevAttention::new(ld, &l.self_attn)?,
                norm1: ld.norm(&l.norm1)?,
                cross_t2i: DevAttention::new(ld, &l.cross_t2i)?,
                norm2: ld.norm(&l.norm2)?,
                lin1: ld.linear(&l.lin1)?,
                lin2: ld.linear(&l.lin2)?,
                norm3: ld.norm(&l.norm3)?,
                norm4: ld.norm(&l.norm4)?,
                cross_i2t: DevAttention::new(ld, &l.cross_i2t)?,
                skip_first_layer_pe: l.skip_first_layer_pe,
            });
        }
        let (side, dim) = (schema.pe_side, schema.dim);
        let gaussian = ld.host(&schema.gaussian.key)?;
        let pe = positional_encoding(gaussian, side, side)?; // [D, H, W]
        let pe = pe.reshape(&[dim, side * side])?.t()?.contiguous();
        Ok(DevDecoder {
            layers,
            final_attn: DevAttention::new(ld, &t.final_attn)?,
            norm_final: ld.norm(&t.norm_final)?,
            image_pe: ld.tensor(&pe)?,
        })
    }

    /// tokens [B, T, D] (also their own PE), image [B, HW, D] -> (tokens, image).
    pub fn forward(&self, be: &B, tokens: &T<B>, image: &T<B>) -> Result<(T<B>, T<B>)> {
        let (mut queries, mut keys) = (tokens.clone(), image.clone());
        for l in &self.layers {
            // Task self-attention; the first layer has neither the PE nor the residual.
            queries = if l.skip_first_layer_pe {
                l.self_attn.forward(be, &queries, &queries, &queries)?
            } else {
                let q = add(be, &queries, tokens)?;
                l.self_attn.forward_add(be, &q, &q, &queries, &queries)?
            };
            queries = l.norm1.forward(be, &queries)?;

            // Tokens attend to the image.
            let q = add(be, &queries, tokens)?;
            let k = add(be, &keys, &self.image_pe)?;
            queries = l.norm2.forward(be, &l.cross_t2i.forward_add(be, &q, &k, &keys, &queries)?)?;

            let m = l.lin1.forward(be, &queries, Activation::Relu)?;
            queries = l.norm3.forward(be, &l.lin2.forward_add(be, &m, Activation::None, &queries)?)?;

            // The image attends to the tokens.
            let q = add(be, &queries, tokens)?;
            keys = l.norm4.forward(be, &l.cross_i2t.forward_add(be, &k, &q, &queries, &keys)?)?;
        }
        let q = add(be, &queries, tokens)?;
        let k = add(be, &keys, &self.image_pe)?;
        let queries = self.norm_final.forward(be, &self.final_attn.forward_add(be, &q, &k, &keys, &queries)?)?;
        Ok((queries, keys))
    }
}

/// SAM's three-layer MLP: Linear, ReLU, Linear, ReLU, Linear.
struct DevMlp3<B: Backend> {
    layers: [DevLinear<B>; 3],
}

impl<B: Backend> DevMlp3<B> {
    fn new(ld: &Loader<'_, B>, spec: &Mlp3Spec) -> Result<Self> {
        let [l0, l1, l2] = &spec.layers;
        Ok(DevMlp3 { layers: [ld.linear(l0)?, ld.linear(l1)?, ld.linear(l2)?] })
    }
    fn forward(&self, be: &B, x: &T<B>) -> Result<T<B>> {
        let h = self.layers[0].forward(be, x, Activation::Relu)?;
        let h = self.layers[1].forward(be, &h, Activation::Relu)?;
        self.layers[2].forward(be, &h, Activation::None)
    }
}

/// The seven task MLPs and the parsing branch (upscaler, hypernetwork MLP, product).
pub(crate) struct DevHeads<B: Backend> {
    tasks: Vec<DevMlp3<B>>,
    hyper: DevMlp3<B>,
    up0: (T<B>, T<B>),
    up_norm: DevNorm<B>,
    up1: (T<B>, T<B>),
}

/// The fixture names of the seven task heads, in token order.
const TASK_OUTPUTS: [&str; 7] =
    ["out.landmarks", "out.pose", "out.attributes", "out.visibility", "out.age", "out.gender", "out.race"];

impl<B: Backend> DevHeads<B> {
    pub fn new(ld: &Loader<'_, B>, spec: &HeadsSpec) -> Result<Self> {
        let tasks = spec.tasks.iter().map(|m| DevMlp3::new(ld, m)).collect::<Result<_>>()?;
        // Conv biases in the model dtype, like the weights.
        let conv = |c: &ConvSpec| -> Result<(T<B>, T<B>)> {
            Ok((ld.weight(&c.weight_key())?, ld.f32(ld.host(&c.bias_key())?)?))
        };
        let up = &spec.upscaler;
        Ok(DevHeads {
            tasks,
            hyper: DevMlp3::new(ld, &spec.hyper)?,
            up0: conv(&up.up0)?,
            up_norm: ld.norm(&up.norm)?,
            up1: conv(&up.up1)?,
        })
    }

    /// tokens [B, T, D], image [B, HW, D] -> the eight heads, named as the fixtures.
    pub fn forward(&self, be: &B, tokens: &T<B>, image: &T<B>) -> Result<Vec<(&'static str, T<B>)>> {
        let &[b, hw, d] = image.shape() else { unreachable!("image tokens [B, HW, D]") };
        let side = (hw as f64).sqrt().round() as usize;
        // Token-major [T, B, D]: each task's rows are then one contiguous slice.
        let by_token = be.permute(tokens, &[1, 0, 2])?;
        let mut out = Vec::with_capacity(8);
        for (i, mlp) in self.tasks.iter().enumerate() {
            out.push((TASK_OUTPUTS[i], mlp.forward(be, &by_token.select0(i)?)?));
        }

        let hyper = self.hyper.forward(be, &by_token.narrow0(TASKS.len(), NUM_MASKS)?)?; // [11, B, D/8]
        let hyper = be.permute(&hyper, &[1, 0, 2])?; // [B, 11, D/8]
        let src = be.permute(image, &[0, 2, 1])?.reshape(&[b, d, side, side])?;
        let up = be.conv_transpose2x2(&src, &self.up0.0, &self.up0.1)?;
        let up = be.activation(&self.up_norm.forward2d(be, &up)?, Activation::Gelu)?;
        let up = be.activation(&be.conv_transpose2x2(&up, &self.up1.0, &self.up1.1)?, Activation::Gelu)?;
        let &[_, c, h, w] = up.shape() else { unreachable!("NCHW") };
        let seg = be.hyper_product(&hyper, &up.reshape(&[b, c, h * w])?)?;
        out.push(("out.segmentation", seg.reshape(&[b, NUM_MASKS, h, w])?));
        Ok(out)
    }
}
