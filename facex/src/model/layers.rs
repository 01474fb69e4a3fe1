//! The small building blocks shared by the encoder, the decoder and the heads.

use super::params::{Builder, Init};
use autograd::Var;
use tensor::ops::Activation;
use tensor::Result;

/// nn.Linear: `y = x Wᵀ + b`, weight [out, in].
#[derive(Clone, Debug)]
pub(crate) struct Linear {
    pub weight: Var,
    pub bias: Option<Var>,
}

/// How a Linear's weight is drawn at random initialisation.
#[derive(Clone, Copy)]
pub(crate) enum LinearInit {
    /// PyTorch's default: weight and bias U(±1/sqrt(in)).
    Default,
    /// torchvision Swin: weight trunc-normal(0.02), bias 0.
    Swin,
}

impl Linear {
    pub fn new(b: &mut Builder, prefix: &str, inp: usize, out: usize, bias: bool, init: LinearInit) -> Linear {
        let bound = 1.0 / (inp as f64).sqrt();
        let (wi, bi) = match init {
            LinearInit::Default => (Init::Uniform(bound), Init::Uniform(bound)),
            LinearInit::Swin => (Init::TruncNormal(0.02), Init::Const(0.0)),
        };
        let weight = b.param(format!("{prefix}.weight"), &[out, inp], wi);
        let bias = bias.then(|| b.param(format!("{prefix}.bias"), &[out], bi));
        Linear { weight, bias }
    }

    pub fn forward(&self, x: &Var) -> Result<Var> {
        x.linear(&self.weight, self.bias.as_ref())
    }

    pub fn forward_act(&self, x: &Var, act: Activation) -> Result<Var> {
        x.linear_act(&self.weight, self.bias.as_ref(), act)
    }
}

/// nn.LayerNorm over the last dimension (or LayerNorm2d over channels), with weight and bias.
#[derive(Clone, Debug)]
pub(crate) struct LayerNorm {
    pub weight: Var,
    pub bias: Var,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(b: &mut Builder, prefix: &str, dim: usize, eps: f64) -> LayerNorm {
        let weight = b.param(format!("{prefix}.weight"), &[dim], Init::Const(1.0));
        let bias = b.param(format!("{prefix}.bias"), &[dim], Init::Const(0.0));
        LayerNorm { weight, bias, eps }
    }

    pub fn forward(&self, x: &Var) -> Result<Var> {
        x.layer_norm(Some(&self.weight), Some(&self.bias), self.eps)
    }

    /// LayerNorm2d: normalises over the channels of an NCHW tensor, per pixel.
    pub fn forward2d(&self, x: &Var) -> Result<Var> {
        x.layer_norm2d(Some(&self.weight), Some(&self.bias), self.eps)
    }
}

/// SAM's `MLP(in, hidden, out, num_layers=3)`: Linear, ReLU, Linear, ReLU, Linear.
#[derive(Clone, Debug)]
pub(crate) struct Mlp3 {
    pub layers: [Linear; 3],
}

impl Mlp3 {
    pub fn new(b: &mut Builder, prefix: &str, inp: usize, hidden: usize, out: usize) -> Mlp3 {
        let l0 = Linear::new(b, &format!("{prefix}.layers.0"), inp, hidden, true, LinearInit::Default);
        let l1 = Linear::new(b, &format!("{prefix}.layers.1"), hidden, hidden, true, LinearInit::Default);
        let l2 = Linear::new(b, &format!("{prefix}.layers.2"), hidden, out, true, LinearInit::Default);
        Mlp3 { layers: [l0, l1, l2] }
    }

    pub fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.layers[0].forward_act(x, Activation::Relu)?;
        let h = self.layers[1].forward_act(&h, Activation::Relu)?;
        self.layers[2].forward(&h)
    }
}
