//! The backward pass: reverse topological walk, gradients added into a store keyed by Var id.

use crate::backward::backward_op;
use crate::var::Var;
use std::collections::{HashMap, HashSet};
use tensor::{Error, Result, Tensor};

/// Gradients of the leaves (parameters and inputs that require a gradient), keyed by Var id.
#[derive(Default)]
pub struct Grads {
    map: HashMap<usize, Tensor>,
}

impl Grads {
    pub fn get(&self, var: &Var) -> Option<&Tensor> {
        self.map.get(&var.id())
    }
    pub fn remove(&mut self, var: &Var) -> Option<Tensor> {
        self.map.remove(&var.id())
    }
    /// Set the gradient of `var` (clipping and other gradient transforms).
    pub fn insert(&mut self, var: &Var, grad: Tensor) {
        self.map.insert(var.id(), grad);
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Add `grad` into the entry for `id`: gradients accumulate by explicit addition.
    fn accumulate(&mut self, id: usize, grad: Tensor) -> Result<()> {
        let sum = match self.map.remove(&id) {
            Some(mut prev) => {
                prev.add_assign(&grad)?;
                prev
            }
            None => grad,
        };
        self.map.insert(id, sum);
        Ok(())
    }
}

/// Nodes reachable from `root`, every input before the Vars computed from it. A Var whose node
/// an earlier `backward` took (its graph is gone) is an error.
fn topological_order(root: &Var) -> Result<Vec<Var>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: deep graphs (24 Swin blocks, many views each) must not overflow the stack.
    let mut stack: Vec<(Var, bool)> = vec![(root.clone(), false)];
    while let Some((v, inputs_done)) = stack.pop() {
        if inputs_done {
            order.push(v);
            continue;
        }
        if !seen.insert(v.id()) {
            continue;
        }
        stack.push((v.clone(), true));
        match v.node_inputs() {
            Some(inputs) => {
                for input in inputs {
                    if input.requires_grad() && !seen.contains(&input.id()) {
                        stack.push((input, false));
                    }
                }
            }
            None if v.is_recorded() => return Err(graph_freed(&v)),
            None => {}
        }
    }
    Ok(order)
}

fn graph_freed(v: &Var) -> Error {
    Error::InvalidArgument {
        op: "backward",
        msg: format!(
            "Var#{} {:?}: its graph was freed by an earlier backward (one backward per forward)",
            v.id(),
            v.shape()
        ),
    }
}

impl Var {
    /// Gradients of this scalar with respect to every leaf that requires one.
    pub fn backward(&self) -> Result<Grads> {
        let value = self.value();
        if value.elem_count() != 1 {
            return Err(Error::BadShape {
                op: "backward",
                shape: value.shape().to_vec(),
                expected: "a single element (use backward_with for other shapes)".into(),
            });
        }
        self.backward_with(Tensor::ones(value.shape(), value.dtype()))
    }

    /// Backward from an explicit output gradient of this Var's shape.
    pub fn backward_with(&self, grad: Tensor) -> Result<Grads> {
        grad.expect_shape("backward_with", &self.shape())?;
        let mut grads = Grads::default();
        if !self.requires_grad() {
            return Ok(grads);
        }
        let mut order = topological_order(self)?;
        grads.accumulate(self.id(), grad)?;
        // Reverse topological order: every Var that used this one is done before it, so once
        // its gradient is passed on, neither its value nor its node is needed again. Taking the
        // node and dropping our reference frees both (unless the caller holds the Var), so the
        // saved activations go as the walk reaches them instead of all at the end: the peak
        // memory of a training step is the forward's, not the forward's plus every gradient.
        while let Some(var) = order.pop() {
            let Some(node) = var.take_node() else { continue };
            // An intermediate's gradient is complete once we reach it; free it after use.
            let Some(g) = grads.map.remove(&var.id()) else { continue };
            let needs: Vec<bool> = node.inputs.iter().map(Var::requires_grad).collect();
            let input_grads = backward_op(&node.op, &node.inputs, &needs, &var.value(), &g)?;
            for ((input, ig), need) in node.inputs.iter().zip(input_grads).zip(needs) {
                if let (true, Some(ig)) = (need, ig) {
                    grads.accumulate(input.id(), ig)?;
                }
            }
        }
        Ok(grads)
    }
}
