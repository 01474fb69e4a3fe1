//! `Var`: a tensor that remembers how it was made. Forward methods mirror the tensor ops one to
//! one (same names and arguments, `&Var` where the tensor op takes `&Tensor`).

use crate::grad_mode::is_grad_enabled;
use crate::op::Op;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tensor::ops::Activation;
use tensor::{DType, Result, Tensor};

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// How a Var was computed: the op and its inputs.
pub struct Node {
    pub op: Op,
    pub inputs: Vec<Var>,
}

pub(crate) struct VarInner {
    pub id: usize,
    /// A lock only so that optimizers can update parameters in place between steps.
    pub value: RwLock<Tensor>,
    /// Atomic only so that a leaf can be frozen or unfrozen between steps (`set_requires_grad`).
    pub requires_grad: AtomicBool,
    /// How it was computed. `backward` takes it once the Var's gradient has been passed on, so
    /// that the graph frees itself during the walk (a lock only for that).
    pub node: Mutex<Option<Node>>,
    /// Whether a recorded op computed it (stays true after `backward` took the node).
    pub recorded: bool,
    pub name: Option<String>,
}

#[derive(Clone)]
pub struct Var(pub(crate) Arc<VarInner>);

/// Free a graph without recursion: a long chain of nodes would otherwise drop each input
/// inside its output's drop and overflow the stack.
impl Drop for VarInner {
    fn drop(&mut self) {
        let Some(node) = take_node(&mut self.node) else { return };
        let mut pending = node.inputs;
        while let Some(var) = pending.pop() {
            // Only the last reference takes its inputs apart; others just decrement the count.
            if let Ok(mut inner) = Arc::try_unwrap(var.0) {
                if let Some(node) = take_node(&mut inner.node) {
                    pending.extend(node.inputs);
                }
            }
        }
    }
}

/// The node out of a Var being dropped (a poisoned lock still holds a valid node).
fn take_node(node: &mut Mutex<Option<Node>>) -> Option<Node> {
    node.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.value();
        write!(f, "Var#{}{:?}", self.id(), t)?;
        if let Some(n) = &self.0.name {
            write!(f, " '{n}'")?;
        }
        Ok(())
    }
}

impl Var {
    fn make(value: Tensor, requires_grad: bool, node: Option<Node>, name: Option<String>) -> Var {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Var(Arc::new(VarInner {
            id,
            value: RwLock::new(value),
            requires_grad: AtomicBool::new(requires_grad),
            recorded: node.is_some(),
            node: Mutex::new(node),
            name,
        }))
    }

    /// A constant: no gradient flows into it.
    pub fn constant(value: Tensor) -> Var {
        Var::make(value, false, None, None)
    }

    /// A leaf that gradients flow into (an input we differentiate with respect to).
    pub fn leaf(value: Tensor) -> Var {
        Var::make(value, true, None, None)
    }

    /// A named trainable parameter (the name is its state-dict key).
    pub fn param(value: Tensor, name: impl Into<String>) -> Var {
        Var::make(value, true, None, Some(name.into()))
    }

    /// Whether an op on `inputs` records a node: grad mode is on and any input needs a gradient.
    /// Model code asks it to choose between an inference and a training formulation.
    pub fn records(inputs: &[&Var]) -> bool {
        is_grad_enabled() && inputs.iter().any(|v| v.requires_grad())
    }

    /// The result of an op: records a node when [`Var::records`] says so.
    pub fn from_op(value: Tensor, op: Op, inputs: &[&Var]) -> Var {
        if Var::records(inputs) {
            let node = Node { op, inputs: inputs.iter().map(|&v| v.clone()).collect() };
            Var::make(value, true, Some(node), None)
        } else {
            Var::constant(value)
        }
    }

    pub fn id(&self) -> usize {
        self.0.id
    }
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }
    /// Freeze (`false`) or unfreeze a leaf, as torch's `requires_grad_`: ops on frozen leaves
    /// record nothing, so a frozen backbone costs a forward pass only. Vars computed by a
    /// recorded op follow their inputs and cannot be changed.
    pub fn set_requires_grad(&self, requires_grad: bool) -> Result<()> {
        if self.0.recorded {
            return Err(tensor::Error::InvalidArgument {
                op: "Var::set_requires_grad",
                msg: format!("Var#{} is the result of an op; only leaves can be frozen", self.id()),
            });
        }
        self.0.requires_grad.store(requires_grad, Ordering::Relaxed);
        Ok(())
    }
    /// Whether a recorded op computed this Var (false for leaves, constants and results of ops
    /// that recorded nothing).
    pub fn is_recorded(&self) -> bool {
        self.0.recorded
    }
    /// The inputs of the op that computed this Var, while its node is there (not after
    /// `backward` walked it).
    pub(crate) fn node_inputs(&self) -> Option<Vec<Var>> {
        self.lock_node().as_ref().map(|n| n.inputs.clone())
    }
    /// Takes the node out: its inputs are no longer held by this Var.
    pub(crate) fn take_node(&self) -> Option<Node> {
        self.lock_node().take()
    }
    fn lock_node(&self) -> std::sync::MutexGuard<'_, Option<Node>> {
        self.0.node.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    /// The value (a cheap clone sharing storage).
    pub fn value(&self) -> Tensor {
        self.0.value.read().expect("var value lock").clone()
    }
    pub fn shape(&self) -> Vec<usize> {
        self.value().shape().to_vec()
    }
    pub fn dtype(&self) -> DType {
        self.value().dtype()
    }
    /// Replace the value of a leaf (optimizer steps, loading weights). Shapes must not change.
    pub fn set_value(&self, value: Tensor) -> Result<()> {
        let mut v = self.0.value.write().expect("var value lock");
        value.expect_shape("Var::set_value", v.shape())?;
        *v = value;
        Ok(())
    }
    /// The same value, cut off from the graph.
    pub fn detach(&self) -> Var {
        Var::constant(self.value())
    }
}

// ---- forward ops ----------------------------------------------------------------------------

macro_rules! unary {
    ($($name:ident => $op:expr),* $(,)?) => {
        impl Var {
            $(pub fn $name(&self) -> Result<Var> {
                Ok(Var::from_op(self.value().$name()?, $op, &[self]))
            })*
        }
    };
}

unary!(
    neg => Op::Neg, exp => Op::Exp, log => Op::Log, sqrt => Op::Sqrt, sin => Op::Sin, cos => Op::Cos,
    acos => Op::Acos, tanh => Op::Tanh, abs => Op::Abs, sqr => Op::Sqr, recip => Op::Recip,
    sigmoid => Op::Sigmoid, relu => Op::Relu, gelu => Op::Gelu,
);

macro_rules! binary {
    ($($name:ident => $op:expr),* $(,)?) => {
        impl Var {
            $(pub fn $name(&self, rhs: &Var) -> Result<Var> {
                Ok(Var::from_op(self.value().$name(&rhs.value())?, $op, &[self, rhs]))
            })*
        }
    };
}

binary!(add => Op::Add, sub => Op::Sub, mul => Op::Mul, div => Op::Div, maximum => Op::Maximum,
    minimum => Op::Minimum, matmul => Op::Matmul);

fn opt_inputs<'a>(first: &[&'a Var], rest: &[Option<&'a Var>]) -> Vec<&'a Var> {
    first.iter().copied().chain(rest.iter().flatten().copied()).collect()
}

impl Var {
    pub fn affine(&self, mul: f64, add: f64) -> Result<Var> {
        Ok(Var::from_op(self.value().affine(mul, add)?, Op::Affine { mul }, &[self]))
    }
    pub fn powf(&self, e: f64) -> Result<Var> {
        Ok(Var::from_op(self.value().powf(e)?, Op::Powf { e }, &[self]))
    }
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Var> {
        Ok(Var::from_op(self.value().clamp(lo, hi)?, Op::Clamp { lo, hi }, &[self]))
    }
    pub fn prelu(&self, weight: &Var) -> Result<Var> {
        Ok(Var::from_op(self.value().prelu(&weight.value())?, Op::Prelu, &[self, weight]))
    }
    /// Picks `on_true` where `cond` (u8) is nonzero, else `on_false`.
    pub fn where_cond(cond: &Tensor, on_true: &Var, on_false: &Var) -> Result<Var> {
        let v = cond.where_cond(&on_true.value(), &on_false.value())?;
        Ok(Var::from_op(v, Op::Where { cond: cond.clone() }, &[on_true, on_false]))
    }

    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Var> {
        let op = Op::Sum { dims: dims.to_vec(), keepdim };
        Ok(Var::from_op(self.value().sum(dims, keepdim)?, op, &[self]))
    }
    pub fn sum_all(&self) -> Result<Var> {
        self.sum(&[], false)
    }
    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Var> {
        let op = Op::Mean { dims: dims.to_vec(), keepdim };
        Ok(Var::from_op(self.value().mean(dims, keepdim)?, op, &[self]))
    }
    pub fn mean_all(&self) -> Result<Var> {
        self.mean(&[], false)
    }
    pub fn max(&self, dims: &[isize], keepdim: bool) -> Result<Var> {
        let op = Op::Max { dims: dims.to_vec(), keepdim };
        Ok(Var::from_op(self.value().max(dims, keepdim)?, op, &[self]))
    }
    pub fn min(&self, dims: &[isize], keepdim: bool) -> Result<Var> {
        let op = Op::Min { dims: dims.to_vec(), keepdim };
        Ok(Var::from_op(self.value().min(dims, keepdim)?, op, &[self]))
    }
    pub fn softmax(&self, dim: isize) -> Result<Var> {
        Ok(Var::from_op(self.value().softmax(dim)?, Op::Softmax { dim }, &[self]))
    }
    pub fn log_softmax(&self, dim: isize) -> Result<Var> {
        Ok(Var::from_op(self.value().log_softmax(dim)?, Op::LogSoftmax { dim }, &[self]))
    }
    pub fn layer_norm(&self, weight: Option<&Var>, bias: Option<&Var>, eps: f64) -> Result<Var> {
        let (w, b) = (weight.map(Var::value), bias.map(Var::value));
        let v = self.value().layer_norm(w.as_ref(), b.as_ref(), eps)?;
        let op = Op::LayerNorm { eps, has_weight: weight.is_some(), has_bias: bias.is_some() };
        Ok(Var::from_op(v, op, &opt_inputs(&[self], &[weight, bias])))
    }
    pub fn layer_norm2d(&self, weight: Option<&Var>, bias: Option<&Var>, eps: f64) -> Result<Var> {
        let (w, b) = (weight.map(Var::value), bias.map(Var::value));
        let v = self.value().layer_norm2d(w.as_ref(), b.as_ref(), eps)?;
        let op = Op::LayerNorm2d { eps, has_weight: weight.is_some(), has_bias: bias.is_some() };
        Ok(Var::from_op(v, op, &opt_inputs(&[self], &[weight, bias])))
    }

    pub fn cat(vars: &[&Var], dim: isize) -> Result<Var> {
        let values: Vec<Tensor> = vars.iter().map(|v| v.value()).collect();
        let v = Tensor::cat(&values.iter().collect::<Vec<_>>(), dim)?;
        Ok(Var::from_op(v, Op::Cat { dim }, vars))
    }
    pub fn stack(vars: &[&Var], dim: isize) -> Result<Var> {
        let values: Vec<Tensor> = vars.iter().map(|v| v.value()).collect();
        let v = Tensor::stack(&values.iter().collect::<Vec<_>>(), dim)?;
        Ok(Var::from_op(v, Op::Stack { dim }, vars))
    }
    pub fn roll(&self, shifts: &[isize], dims: &[isize]) -> Result<Var> {
        let op = Op::Roll { shifts: shifts.to_vec(), dims: dims.to_vec() };
        Ok(Var::from_op(self.value().roll(shifts, dims)?, op, &[self]))
    }
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Result<Var> {
        let v = self.value().index_select(dim, index)?;
        Ok(Var::from_op(v, Op::IndexSelect { dim, index: index.clone() }, &[self]))
    }
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Var> {
        let v = self.value().gather(dim, index)?;
        Ok(Var::from_op(v, Op::Gather { dim, index: index.clone() }, &[self]))
    }

    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        Ok(Var::from_op(self.value().reshape(shape)?, Op::Reshape, &[self]))
    }
    pub fn flatten(&self, start: isize, end: isize) -> Result<Var> {
        Ok(Var::from_op(self.value().flatten(start, end)?, Op::Reshape, &[self]))
    }
    pub fn permute(&self, dims: &[usize]) -> Result<Var> {
        Ok(Var::from_op(self.value().permute(dims)?, Op::Permute { dims: dims.to_vec() }, &[self]))
    }
    pub fn transpose(&self, a: isize, b: isize) -> Result<Var> {
        let rank = self.value().rank();
        let v = self.value().transpose(a, b)?;
        let (a, b) = (a.rem_euclid(rank as isize) as usize, b.rem_euclid(rank as isize) as usize);
        let mut dims: Vec<usize> = (0..rank).collect();
        dims.swap(a, b);
        Ok(Var::from_op(v, Op::Permute { dims }, &[self]))
    }
    pub fn t(&self) -> Result<Var> {
        self.transpose(-2, -1)
    }
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Var> {
        Ok(Var::from_op(self.value().narrow(dim, start, len)?, Op::Narrow { dim, start, len }, &[self]))
    }
    pub fn slice_step(&self, dim: isize, start: usize, end: usize, step: usize) -> Result<Var> {
        let v = self.value().slice_step(dim, start, end, step)?;
        Ok(Var::from_op(v, Op::SliceStep { dim, start, end, step }, &[self]))
    }
    pub fn select(&self, dim: isize, index: usize) -> Result<Var> {
        let rank = self.value().rank() as isize;
        self.narrow(dim, index, 1)?.squeeze(dim.rem_euclid(rank.max(1)))
    }
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Var> {
        Ok(Var::from_op(self.value().broadcast_to(shape)?, Op::BroadcastTo, &[self]))
    }
    pub fn expand(&self, shape: &[usize]) -> Result<Var> {
        self.broadcast_to(shape)
    }
    pub fn unsqueeze(&self, dim: isize) -> Result<Var> {
        Ok(Var::from_op(self.value().unsqueeze(dim)?, Op::Unsqueeze { dim }, &[self]))
    }
    pub fn squeeze(&self, dim: isize) -> Result<Var> {
        Ok(Var::from_op(self.value().squeeze(dim)?, Op::Squeeze { dim }, &[self]))
    }
    pub fn contiguous(&self) -> Result<Var> {
        Ok(Var::from_op(self.value().contiguous(), Op::Contiguous, &[self]))
    }
    pub fn to_dtype(&self, dtype: DType) -> Result<Var> {
        let from = self.dtype();
        Ok(Var::from_op(self.value().to_dtype(dtype), Op::ToDType { from }, &[self]))
    }

    /// softmax(q kᵀ) v per batch and head, q `[B, H, Nq, D]`, k `[B, H, Nk, D]`, v
    /// `[B, H, Nk, Dv]` (`Tensor::attention`, one fused pass; its backward recomputes the
    /// probabilities). The composite twin is `q.matmul(&k.transpose(2, 3)?)?.softmax(-1)?.matmul(v)`.
    pub fn attention(&self, k: &Var, v: &Var) -> Result<Var> {
        let out = self.value().attention(&k.value(), &v.value())?;
        Ok(Var::from_op(out, Op::Attention, &[self, k, v]))
    }

    /// Window attention on a packed qkv `[B, n, 3·H·d]` -> `[B, n, H·d]`
    /// (`Tensor::window_attention`); gradients flow to qkv and the bias, not the mask.
    pub fn window_attention(&self, heads: usize, bias: Option<&Var>, mask: Option<&Tensor>, scale: f32) -> Result<Var> {
        let b = bias.map(Var::value);
        let v = self.value().window_attention(heads, b.as_ref(), mask, scale)?;
        let op = Op::WindowAttention { heads, scale, mask: mask.cloned(), has_bias: bias.is_some() };
        Ok(Var::from_op(v, op, &opt_inputs(&[self], &[bias])))
    }

    pub fn linear(&self, weight: &Var, bias: Option<&Var>) -> Result<Var> {
        self.linear_act(weight, bias, Activation::None)
    }
    pub fn linear_act(&self, weight: &Var, bias: Option<&Var>, act: Activation) -> Result<Var> {
        let b = bias.map(Var::value);
        let v = self.value().linear_act(&weight.value(), b.as_ref(), act)?;
        let op = Op::Linear { act, has_bias: bias.is_some() };
        Ok(Var::from_op(v, op, &opt_inputs(&[self, weight], &[bias])))
    }
    /// `gelu(self) weightᵀ + bias`: the same values as `self.gelu()?.linear(..)`, but the GELU's
    /// output is not kept for the backward (recomputed from `self` there). Give it a linear
    /// layer's pre-activation: that layer's backward then needs no GEMM to recompute it.
    pub fn gelu_linear(&self, weight: &Var, bias: Option<&Var>) -> Result<Var> {
        let b = bias.map(Var::value);
        let v = self.value().gelu()?.linear(&weight.value(), b.as_ref())?;
        let op = Op::GeluLinear { has_bias: bias.is_some() };
        Ok(Var::from_op(v, op, &opt_inputs(&[self, weight], &[bias])))
    }
    /// `residual + (self weightᵀ + bias)` (`Tensor::linear_add`: the add in the GEMM's output
    /// pass): the same values and gradients as `self.linear(..)?` then `residual.add(..)`, without
    /// the layer's output as a Var that the graph would keep until the backward reached it.
    pub fn linear_add(&self, weight: &Var, bias: Option<&Var>, residual: &Var) -> Result<Var> {
        let b = bias.map(Var::value);
        let v = self.value().linear_add(&weight.value(), b.as_ref(), &residual.value())?;
        let op = Op::AddLinear { gelu_input: false, has_bias: bias.is_some() };
        Ok(Var::from_op(v, op, &opt_inputs(&[residual, self, weight], &[bias])))
    }
    /// [`Var::gelu_linear`] and the residual connection after it: `residual + (gelu(self)
    /// weightᵀ + bias)`, the same values and gradients as `gelu_linear` then `add`.
    pub fn gelu_linear_add(&self, weight: &Var, bias: Option<&Var>, residual: &Var) -> Result<Var> {
        let b = bias.map(Var::value);
        let v = self.value().gelu()?.linear_add(&weight.value(), b.as_ref(), &residual.value())?;
        let op = Op::AddLinear { gelu_input: true, has_bias: bias.is_some() };
        Ok(Var::from_op(v, op, &opt_inputs(&[residual, self, weight], &[bias])))
    }
    /// `residual + (self weightᵀ + bias).index_select(1, inverse)` for `self` [B, T, in] with its
    /// tokens in a permuted order (`perm`: position i holds natural token perm[i]; `inverse`
    /// undoes it) and `residual` [B, T, out] in the natural order: computed in the permuted
    /// order with the residual gathered in (the residual epilogue) and the sum permuted back. The
    /// same values and gradients as `linear`, `index_select`, `add`, without the layer's output
    /// or its unpermuted copy as Vars that the graph would keep. `perm` and `inverse` must be
    /// inverse permutations (checked).
    pub fn unpermute_linear_add(
        &self,
        weight: &Var,
        bias: Option<&Var>,
        residual: &Var,
        perm: &Tensor,
        inverse: &Tensor,
    ) -> Result<Var> {
        const OP: &str = "unpermute_linear_add";
        let t = self.shape().get(1).copied().unwrap_or(0);
        let (p, q) = (perm.to_f64_vec()?, inverse.to_f64_vec()?);
        let inverse_ok = p.len() == t
            && q.len() == t
            && q.iter().enumerate().all(|(j, &i)| i >= 0.0 && (i as usize) < t && p[i as usize] == j as f64);
        if self.shape().len() != 3 || !inverse_ok {
            return Err(tensor::Error::InvalidArgument {
                op: OP,
                msg: format!("x {:?}: perm and inverse must be inverse permutations of its {t} tokens", self.shape()),
            });
        }
        let b = bias.map(Var::value);
        let r = residual.value().index_select(1, perm)?;
        let v = self.value().linear_add(&weight.value(), b.as_ref(), &r)?.index_select(1, inverse)?;
        let op = Op::UnpermuteLinearAdd { has_bias: bias.is_some(), perm: perm.clone(), inverse: inverse.clone() };
        Ok(Var::from_op(v, op, &opt_inputs(&[residual, self, weight], &[bias])))
    }
    pub fn conv2d(
        &self,
        weight: &Var,
        bias: Option<&Var>,
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Var> {
        let b = bias.map(Var::value);
        let v = self.value().conv2d(&weight.value(), b.as_ref(), stride, padding)?;
        let op = Op::Conv2d { stride, padding, has_bias: bias.is_some() };
        Ok(Var::from_op(v, op, &opt_inputs(&[self, weight], &[bias])))
    }
    pub fn conv_transpose2d(
        &self,
        weight: &Var,
        bias: Option<&Var>,
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Var> {
        let b = bias.map(Var::value);
        let v = self.value().conv_transpose2d(&weight.value(), b.as_ref(), stride, padding)?;
        let op = Op::ConvTranspose2d { stride, padding, has_bias: bias.is_some() };
        Ok(Var::from_op(v, op, &opt_inputs(&[self, weight], &[bias])))
    }
    pub fn max_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        ceil_mode: bool,
    ) -> Result<Var> {
        let v = self.value().max_pool2d(kernel, stride, padding, ceil_mode)?;
        Ok(Var::from_op(v, Op::MaxPool2d { kernel, stride, padding, ceil_mode }, &[self]))
    }
    pub fn interpolate_bilinear(&self, size: (usize, usize)) -> Result<Var> {
        Ok(Var::from_op(self.value().interpolate_bilinear(size)?, Op::InterpolateBilinear, &[self]))
    }
    pub fn interpolate_area(&self, size: (usize, usize)) -> Result<Var> {
        Ok(Var::from_op(self.value().interpolate_area(size)?, Op::InterpolateArea, &[self]))
    }
}
