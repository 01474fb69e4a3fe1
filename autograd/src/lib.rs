//! Reverse-mode automatic differentiation, recorded as the program runs.
//!
//! A [`Var`] wraps a tensor. Each differentiable op on Vars computes its value with the tensor
//! op of the same name and, when gradients are wanted, records a [`Node`]: the [`Op`] (with the
//! few numbers its derivative needs) and its input Vars. The graph is held by the output's
//! `Arc`s, so dropping the loss frees it. [`Var::backward`] walks the nodes in reverse
//! topological order and adds each input's share into a [`Grads`] store keyed by Var id.
//!
//! All derivative rules live in `backward.rs`, one arm per op, each beside its formula.
//! Under [`no_grad`] nothing is recorded: the model code is the same for inference and training.

mod backward;
mod engine;
mod grad_mode;
mod op;
mod var;

pub use engine::Grads;
pub use grad_mode::{is_grad_enabled, no_grad, NoGradGuard};
pub use op::Op;
pub use tensor::{Result, Tensor};
pub use var::{Node, Var};
