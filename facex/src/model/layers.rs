//! The small building blocks shared by the encoder, the decoder and the heads.

use super::params::{Builder, Init};
use super::schema::{ConvSpec, LinearInit, LinearSpec, Mlp3Spec, NormSpec};
use autograd::Var;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tensor::cpu::gemm::{matmul_precision, Isa};
use tensor::ops::matmul::PackedWeight;
use tensor::ops::mlp::LinearRef;
use tensor::ops::Activation;
use tensor::{Result, Tensor};

/// A weight packed for the GEMM kernel, beside the weight value it was packed from.
pub(crate) type PackedSlot = Arc<Mutex<Option<(Tensor, Arc<PackedWeight>)>>>;

/// nn.Linear: `y = x Wᵀ + b`, weight [out, in].
#[derive(Clone, Debug)]
pub(crate) struct Linear {
    pub weight: Var,
    pub bias: Option<Var>,
    /// For inference: the weight packed once for the GEMM kernel, beside the weight value it
    /// was packed from (a new value, e.g. after an optimizer step, packs again). Registered with
    /// the builder, so the model can let all of them go (`FaceXFormer::release_packed_weights`).
    packed: PackedSlot,
    /// The model's switch for that cache (`FaceXFormer::set_weight_packing`).
    packing: Arc<AtomicBool>,
}

impl Linear {
    pub fn new(b: &mut Builder, spec: &LinearSpec) -> Linear {
        let bound = 1.0 / (spec.inp as f64).sqrt();
        let (wi, bi) = match spec.init {
            LinearInit::Default => (Init::Uniform(bound), Init::Uniform(bound)),
            LinearInit::Swin => (Init::TruncNormal(0.02), Init::Const(0.0)),
        };
        let weight = b.param(spec.weight_key(), &[spec.out, spec.inp], wi);
        let bias = spec.bias.then(|| b.param(spec.bias_key(), &[spec.out], bi));
        Linear { weight, bias, packed: b.packed_slot(), packing: b.packing_switch() }
    }

    /// The weight packed for the current kernel, packing it on first use, when it changed or
    /// when the matmul precision did.
    fn packed_weight(&self, w: &Tensor) -> Result<Arc<PackedWeight>> {
        let mut slot = self.packed.lock().expect("packed weight lock");
        if let Some((from, p)) = slot.as_ref() {
            // `from` is held, so its storage cannot be freed and reused by another value.
            let isa = Isa::for_precision(matmul_precision());
            if from.same_storage(w) && from.layout() == w.layout() && p.isa() == isa {
                return Ok(p.clone());
            }
        }
        let p = Arc::new(PackedWeight::new(w)?);
        *slot = Some((w.clone(), p.clone()));
        Ok(p)
    }

    pub fn forward(&self, x: &Var) -> Result<Var> {
        self.forward_act(x, Activation::None)
    }

    /// Whether inference runs on the values with the weight packed once, not every call (at
    /// batch 1 that transpose was 8% of the forward): gradients off and packing on.
    fn packs(&self) -> bool {
        !autograd::is_grad_enabled() && self.packing.load(Ordering::Relaxed)
    }

    /// The layer's values for an op on tensors: the weight packed once where [`Linear::packs`],
    /// else unpacked (as where nothing records under a frozen encoder, `Tensor::mlp_add`).
    pub fn operands(&self) -> Result<LinearOperands> {
        let weight = self.weight.value();
        let packed = if self.packs() { Some(self.packed_weight(&weight)?) } else { None };
        Ok(LinearOperands { weight, bias: self.bias.as_ref().map(Var::value), packed })
    }

    pub fn forward_act(&self, x: &Var, act: Activation) -> Result<Var> {
        if self.packs() {
            let ops = self.operands()?;
            let l = ops.as_ref();
            return Ok(Var::constant(x.value().linear_act_packed(l.weight, l.bias, act, l.packed)?));
        }
        x.linear_act(&self.weight, self.bias.as_ref(), act)
    }

    /// `residual + (x Wᵀ + b)`, the add in the GEMM's output pass (`Var::linear_add`; at
    /// inference on the packed weight, as `forward`).
    pub fn forward_add(&self, x: &Var, residual: &Var) -> Result<Var> {
        if self.packs() {
            let ops = self.operands()?;
            let l = ops.as_ref();
            return Ok(Var::constant(x.value().linear_add_packed(l.weight, l.bias, &residual.value(), l.packed)?));
        }
        x.linear_add(&self.weight, self.bias.as_ref(), residual)
    }

    /// `residual + (x Wᵀ + b)[inverse]` for x in the permuted token order `perm`
    /// (`Var::unpermute_linear_add`).
    pub fn forward_unpermute_add(&self, x: &Var, residual: &Var, perm: &Tensor, inverse: &Tensor) -> Result<Var> {
        x.unpermute_linear_add(&self.weight, self.bias.as_ref(), residual, perm, inverse)
    }

    /// `residual + (gelu(z) Wᵀ + b)` (`Var::gelu_linear_add`).
    pub fn forward_gelu_input_add(&self, z: &Var, residual: &Var) -> Result<Var> {
        z.gelu_linear_add(&self.weight, self.bias.as_ref(), residual)
    }

    /// Whether applying this layer to `x` records an op for the backward.
    pub fn records_on(&self, x: &Var) -> bool {
        let inputs: Vec<&Var> = [x, &self.weight].into_iter().chain(&self.bias).collect();
        Var::records(&inputs)
    }
}

/// A linear layer's values, held for the length of a fused op ([`Linear::operands`]).
pub(crate) struct LinearOperands {
    weight: Tensor,
    bias: Option<Tensor>,
    packed: Option<Arc<PackedWeight>>,
}

impl LinearOperands {
    pub fn as_ref(&self) -> LinearRef<'_> {
        LinearRef { weight: &self.weight, bias: self.bias.as_ref(), packed: self.packed.as_deref() }
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
    pub fn new(b: &mut Builder, spec: &NormSpec) -> LayerNorm {
        let weight = b.param(spec.weight_key(), &[spec.dim], Init::Const(1.0));
        let bias = b.param(spec.bias_key(), &[spec.dim], Init::Const(0.0));
        LayerNorm { weight, bias, eps: spec.eps }
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
    pub fn new(b: &mut Builder, spec: &Mlp3Spec) -> Mlp3 {
        Mlp3 { layers: spec.layers.each_ref().map(|l| Linear::new(b, l)) }
    }

    pub fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.layers[0].forward_act(x, Activation::Relu)?;
        let h = self.layers[1].forward_act(&h, Activation::Relu)?;
        self.layers[2].forward(&h)
    }
}

/// A convolution's weight and optional bias, drawn U(±1/sqrt(fan_in)) (PyTorch's default).
pub(crate) fn conv_params(b: &mut Builder, spec: &ConvSpec) -> (Var, Option<Var>) {
    let init = Init::Uniform(spec.init_bound());
    let weight = b.param(spec.weight_key(), &spec.weight_shape(), init);
    let bias = spec.bias.then(|| b.param(spec.bias_key(), &[spec.out], init));
    (weight, bias)
}
