//! The recorded ops: what each node remembers besides its inputs. Tensors the derivative needs
//! are the inputs' values and the node's output value, so most variants carry only numbers.

use tensor::ops::Activation;
use tensor::{DType, Tensor};

#[derive(Debug, Clone)]
pub enum Op {
    // unary
    Neg,
    Exp,
    Log,
    Sqrt,
    Sin,
    Cos,
    Acos,
    Tanh,
    Abs,
    Sqr,
    Recip,
    Sigmoid,
    Relu,
    Gelu,
    Affine {
        mul: f64,
    },
    Powf {
        e: f64,
    },
    Clamp {
        lo: f64,
        hi: f64,
    },
    /// inputs: x, weight
    Prelu,
    // binary (inputs broadcast to the output shape)
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
    /// inputs: on_true, on_false; the condition is not differentiable
    Where {
        cond: Tensor,
    },
    // reductions
    Sum {
        dims: Vec<isize>,
        keepdim: bool,
    },
    Mean {
        dims: Vec<isize>,
        keepdim: bool,
    },
    Max {
        dims: Vec<isize>,
        keepdim: bool,
    },
    Min {
        dims: Vec<isize>,
        keepdim: bool,
    },
    Softmax {
        dim: isize,
    },
    LogSoftmax {
        dim: isize,
    },
    /// inputs: x, then weight and bias when present
    LayerNorm {
        eps: f64,
        has_weight: bool,
        has_bias: bool,
    },
    LayerNorm2d {
        eps: f64,
        has_weight: bool,
        has_bias: bool,
    },
    // shape and indexing
    Cat {
        dim: isize,
    },
    Stack {
        dim: isize,
    },
    Roll {
        shifts: Vec<isize>,
        dims: Vec<isize>,
    },
    IndexSelect {
        dim: isize,
        index: Tensor,
    },
    Gather {
        dim: isize,
        index: Tensor,
    },
    Reshape,
    Permute {
        dims: Vec<usize>,
    },
    Narrow {
        dim: isize,
        start: usize,
        len: usize,
    },
    SliceStep {
        dim: isize,
        start: usize,
        end: usize,
        step: usize,
    },
    BroadcastTo,
    Unsqueeze {
        dim: isize,
    },
    Squeeze {
        dim: isize,
    },
    Contiguous,
    ToDType {
        from: DType,
    },
    // linear algebra and images
    Matmul,
    /// softmax(q kᵀ) v per batch and head (`Tensor::attention`). inputs: q, k, v.
    Attention,
    /// Swin's fused window attention (`Tensor::window_attention`). inputs: the packed qkv, then
    /// the bias when present; the shift mask is a constant.
    WindowAttention {
        heads: usize,
        scale: f32,
        mask: Option<Tensor>,
        has_bias: bool,
    },
    /// inputs: x, weight, then bias when present
    Linear {
        act: Activation,
        has_bias: bool,
    },
    /// `gelu(z) weightᵀ + bias`, a linear layer whose input is a GELU's output (a transformer
    /// MLP's second layer, fed the first's pre-activation). inputs: z, weight, then bias.
    GeluLinear {
        has_bias: bool,
    },
    /// `residual + (x weightᵀ + bias)`, or with `gelu_input` `residual + (gelu(x) weightᵀ +
    /// bias)`: a linear layer (or [`Op::GeluLinear`]) and the residual connection after it, so
    /// that the layer's output is never a Var of its own (the walk would keep it alive, and no
    /// rule needs it). inputs: residual, x, weight, then bias when present.
    AddLinear {
        gelu_input: bool,
        has_bias: bool,
    },
    /// `residual + index_select(x weightᵀ + bias, 1, inverse)`: a linear layer applied to tokens
    /// in a permuted order (`perm`, Swin's window order; `inverse` undoes it) whose output goes
    /// back to the natural order and onto the residual, neither intermediate kept. inputs:
    /// residual, x, weight, then bias when present.
    UnpermuteLinearAdd {
        has_bias: bool,
        perm: Tensor,
        inverse: Tensor,
    },
    /// inputs: x, weight, then bias when present
    Conv2d {
        stride: (usize, usize),
        padding: (usize, usize),
        has_bias: bool,
    },
    ConvTranspose2d {
        stride: (usize, usize),
        padding: (usize, usize),
        has_bias: bool,
    },
    MaxPool2d {
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        ceil_mode: bool,
    },
    InterpolateBilinear,
    InterpolateArea,
}
