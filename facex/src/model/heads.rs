//! The decoder's task tokens and everything after the transformer: seven MLP heads and the
//! parsing branch (upscaler + shared hypernetwork MLP).

use super::layers::{LayerNorm, Mlp3};
use super::params::{Builder, Init};
use autograd::Var;
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
    pub fn new(b: &mut Builder, dim: usize) -> Tokens {
        let mut weights: Vec<Var> = TASKS
            .iter()
            .map(|(name, _)| b.param(format!("face_decoder.{name}_token.weight"), &[1, dim], Init::Normal))
            .collect();
        weights.push(b.param("face_decoder.mask_tokens.weight".into(), &[NUM_MASKS, dim], Init::Normal));
        Tokens { weights }
    }

    /// [T, D]: the token table every sample starts from.
    pub fn table(&self) -> Result<Var> {
        Var::cat(&self.weights.iter().collect::<Vec<_>>(), 0)
    }
}

/// ConvTranspose2d(D, D/4, 2, 2), LayerNorm2d(eps 1e-6), GELU, ConvTranspose2d(D/4, D/8, 2, 2), GELU.
pub(crate) struct Upscaler {
    up0_w: Var,
    up0_b: Var,
    norm: LayerNorm,
    up1_w: Var,
    up1_b: Var,
}

impl Upscaler {
    pub fn new(b: &mut Builder, dim: usize) -> Upscaler {
        let p = "face_decoder.output_upscaling";
        let (c1, c2) = (dim / 4, dim / 8);
        // PyTorch's ConvTranspose fan_in is weight.size(1)·k·k.
        let b0 = 1.0 / ((c1 * 4) as f64).sqrt();
        let up0_w = b.param(format!("{p}.0.weight"), &[dim, c1, 2, 2], Init::Uniform(b0));
        let up0_b = b.param(format!("{p}.0.bias"), &[c1], Init::Uniform(b0));
        let norm = LayerNorm::new(b, &format!("{p}.1"), c1, 1e-6);
        let b1 = 1.0 / ((c2 * 4) as f64).sqrt();
        let up1_w = b.param(format!("{p}.3.weight"), &[c1, c2, 2, 2], Init::Uniform(b1));
        let up1_b = b.param(format!("{p}.3.bias"), &[c2], Init::Uniform(b1));
        Upscaler { up0_w, up0_b, norm, up1_w, up1_b }
    }

    /// [B, D, H, W] -> [B, D/8, 4H, 4W].
    pub fn forward(&self, x: &Var) -> Result<Var> {
        let x = x.conv_transpose2d(&self.up0_w, Some(&self.up0_b), (2, 2), (0, 0))?;
        let x = self.norm.forward2d(&x)?.gelu()?;
        x.conv_transpose2d(&self.up1_w, Some(&self.up1_b), (2, 2), (0, 0))?.gelu()
    }
}

pub(crate) struct Heads {
    pub upscaler: Upscaler,
    hyper: Mlp3,
    heads: Vec<Mlp3>,
}

impl Heads {
    pub fn new(b: &mut Builder, dim: usize) -> Heads {
        let upscaler = Upscaler::new(b, dim);
        let hyper = Mlp3::new(b, "face_decoder.output_hypernetwork_mlps", dim, dim, dim / 8);
        let heads = TASKS
            .iter()
            .map(|(name, out)| Mlp3::new(b, &format!("face_decoder.{name}_prediction_head"), dim, dim, *out))
            .collect();
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
        let up = self.upscaler.forward(&src)?;
        let us = up.shape();
        let (c, h, w) = (us[1], us[2], us[3]);
        let hyper_in = self.hyper.forward(&tokens.narrow(1, TASKS.len(), NUM_MASKS)?)?; // [B, 11, D/8]
        hyper_in.matmul(&up.reshape(&[b, c, h * w])?)?.reshape(&[b, NUM_MASKS, h, w])
    }
}
