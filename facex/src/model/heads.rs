//! The decoder's task tokens and everything after the transformer: seven MLP heads and the
//! parsing branch (upscaler + shared hypernetwork MLP).

use super::layers::{conv_params, LayerNorm, Mlp3};
use super::params::{Builder, Init};
use super::schema::{HeadsSpec, TensorSpec, UpscalerSpec};
use autograd::Var;
use tensor::ops::conv::UpscalerRef;
use tensor::Result;

/// The single-token tasks in token order (index in the decoder output), with their widths.
pub const TASKS: [(&str, usize); 7] =
    [("landmarks", 136), ("pose", 3), ("attribute", 40), ("visibility", 29), ("age", 8), ("gender", 2), ("race", 5)];
/// Parsing classes: one mask token each, after the task tokens.
pub const NUM_MASKS: usize = 11;
/// Task tokens + mask tokens.
pub const NUM_TOKENS: usize = TASKS.len() + NUM_MASKS;

pub(crate) struct Tokens {
    /// The seven task tokens ([1, D] each) and the mask tokens [11, D], in output order.
    weights: Vec<Var>,
}

impl Tokens {
    pub fn new(b: &mut Builder, spec: &[TensorSpec]) -> Tokens {
        Tokens { weights: spec.iter().map(|t| b.param(t.key.clone(), &t.shape, Init::Normal)).collect() }
    }

    /// [T, D]: the token table every sample starts from.
    pub fn table(&self) -> Result<Var> {
        Var::cat(&self.weights.iter().collect::<Vec<_>>(), 0)
    }
}

/// ConvTranspose2d(D, D/4, 2, 2), LayerNorm2d (its eps in the schema), GELU, ConvTranspose2d(D/4, D/8, 2, 2), GELU.
pub(crate) struct Upscaler {
    up0_w: Var,
    up0_b: Var,
    norm: LayerNorm,
    up1_w: Var,
    up1_b: Var,
}

impl Upscaler {
    pub fn new(b: &mut Builder, spec: &UpscalerSpec) -> Upscaler {
        let (up0_w, up0_b) = conv_params(b, &spec.up0);
        let norm = LayerNorm::new(b, &spec.norm);
        let (up1_w, up1_b) = conv_params(b, &spec.up1);
        let bias = "the upscaler's transposed convs have biases";
        Upscaler { up0_w, up0_b: up0_b.expect(bias), norm, up1_w, up1_b: up1_b.expect(bias) }
    }

    /// The first transposed conv, its LayerNorm2d and GELU: [B, D, H, W] -> [B, D/4, 2H, 2W].
    fn first_conv(&self, x: &Var) -> Result<Var> {
        let x = x.conv_transpose2d(&self.up0_w, Some(&self.up0_b), (2, 2), (0, 0))?;
        self.norm.forward2d(&x)?.gelu()
    }

    /// The second transposed conv and its GELU: [B, D/4, 2H, 2W] -> [B, D/8, 4H, 4W].
    fn second_conv(&self, x: &Var) -> Result<Var> {
        x.conv_transpose2d(&self.up1_w, Some(&self.up1_b), (2, 2), (0, 0))?.gelu()
    }

    /// `lhs · up(x)` over the flattened map, `up` both transposed convs: [B, T, D/8] against
    /// [B, D, H, W] -> [B, T, 4H, 4W]. Where nothing records (inference), the whole upscaler and
    /// the product run per block of rows (`Tensor::upscale_masks`: a batch of 8's maps of 26 and
    /// 51 MB are never stored; the same bits as the composite below, which training runs).
    pub fn masks(&self, lhs: &Var, x: &Var) -> Result<Var> {
        let params = [&self.up0_w, &self.up0_b, &self.norm.weight, &self.norm.bias, &self.up1_w, &self.up1_b];
        if !Var::records(&[&[x, lhs][..], &params[..]].concat()) {
            let v = params.map(|p| p.value());
            let up = UpscalerRef {
                conv0_weight: &v[0],
                conv0_bias: &v[1],
                norm_weight: &v[2],
                norm_bias: &v[3],
                norm_eps: self.norm.eps,
                conv1_weight: &v[4],
                conv1_bias: &v[5],
            };
            return Ok(Var::constant(x.value().upscale_masks(&up, &lhs.value())?));
        }
        let up = self.second_conv(&self.first_conv(x)?)?;
        let s = up.shape();
        let t = lhs.shape()[1];
        lhs.matmul(&up.reshape(&[s[0], s[1], s[2] * s[3]])?)?.reshape(&[s[0], t, s[2], s[3]])
    }
}

pub(crate) struct Heads {
    pub upscaler: Upscaler,
    hyper: Mlp3,
    heads: Vec<Mlp3>,
}

impl Heads {
    pub fn new(b: &mut Builder, spec: &HeadsSpec) -> Heads {
        let upscaler = Upscaler::new(b, &spec.upscaler);
        let hyper = Mlp3::new(b, &spec.hyper);
        let heads = spec.tasks.iter().map(|m| Mlp3::new(b, m)).collect();
        Heads { upscaler, hyper, heads }
    }

    /// tokens [B, T, D] -> the seven task outputs [B, n_i], in TASKS order.
    pub fn tasks(&self, tokens: &Var) -> Result<Vec<Var>> {
        self.heads.iter().enumerate().map(|(i, head)| head.forward(&tokens.select(1, i)?)).collect()
    }

    /// tokens [B, T, D], image [B, HW, D] (square map) -> segmentation logits [B, 11, 4H, 4W].
    pub fn segmentation(&self, tokens: &Var, image: &Var) -> Result<Var> {
        let s = image.shape();
        let (b, hw, d) = (s[0], s[1], s[2]);
        let side = (hw as f64).sqrt().round() as usize;
        let src = image.transpose(1, 2)?.reshape(&[b, d, side, side])?;
        let hyper_in = self.hyper.forward(&tokens.narrow(1, TASKS.len(), NUM_MASKS)?)?; // [B, 11, D/8]
        self.upscaler.masks(&hyper_in, &src)
    }
}

#[cfg(test)]
mod tests {
    use super::super::params::Source;
    use super::*;
    use tensor::{DType, Tensor};

    /// The parsing head where nothing records (`Tensor::upscale_masks`, per block of rows) is the
    /// composite training runs, bit for bit: at swin_b's width (several blocks an image) and on
    /// the model's input, a channels-last map viewed as NCHW.
    #[test]
    fn masks_at_inference_are_the_training_composite() {
        let d = 256;
        let mut b = Builder::new(Source::Random { seed: 3 });
        let heads = Heads::new(&mut b, &super::super::schema::heads(d));
        // 5 rows of 56 (the model's width): blocks of 2 input rows, the last of 1.
        let image = Var::constant(Tensor::randn(&[2, 5 * 56, d], 1, DType::F32));
        let src = image.transpose(1, 2).unwrap().reshape(&[2, d, 5, 56]).unwrap();
        let lhs = Var::constant(Tensor::randn(&[2, NUM_MASKS, d / 8], 2, DType::F32));
        let bits = |v: Var| v.value().to_vec::<f32>().unwrap().iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let inference = autograd::no_grad(|| heads.upscaler.masks(&lhs, &src)).unwrap();
        let training = heads.upscaler.masks(&lhs, &src).unwrap();
        assert!(training.is_recorded(), "with gradients on, the composite records");
        assert_eq!(inference.shape(), [2, NUM_MASKS, 20, 224]);
        assert_eq!(bits(inference), bits(training));
    }
}
