//! Reverse-mode autodiff. Each op that sees an input needing gradients records a `Node`: its
//! inputs and a closure mapping the output's gradient to the inputs'. `backward` walks the graph
//! in reverse topological order and *takes* each node as it goes, freeing saved tensors early;
//! a second `backward` through the same graph is therefore an error, as in PyTorch.

use crate::Tensor;
use kiln_backend::{Error, Result};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type Backward = dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync;

pub(crate) struct Node {
    pub(crate) op: &'static str,
    pub(crate) inputs: Vec<Tensor>,
    backward: Box<Backward>,
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Is autodiff recording on this thread?
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Turns recording off until dropped (restoring the previous state).
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Runs `f` without recording autodiff history (inference, optimizer updates).
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = NoGradGuard::new();
    f()
}

/// A node for an op over `inputs`, or `None` when nothing needs a gradient.
pub(crate) fn node(
    op: &'static str,
    inputs: &[&Tensor],
    backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Option<Node> {
    if !is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
        return None;
    }
    Some(Node { op, inputs: inputs.iter().map(|&t| t.clone()).collect(), backward: Box::new(backward) })
}

fn topo_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative DFS: deep graphs (long training unrolls) must not overflow the stack.
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let inputs: Vec<Tensor> = t.0.node.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|n| n.inputs.clone()).unwrap_or_default();
        stack.push((t, true));
        for i in inputs {
            if i.requires_grad() && !seen.contains(&i.id()) {
                stack.push((i, false));
            }
        }
    }
    order
}

impl Tensor {
    /// Backpropagates from this scalar, accumulating gradients into every leaf that requires
    /// them (read them with [`Tensor::grad`]).
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2], &Device::cpu()).unwrap().with_grad();
    /// let loss = x.mul(&x).unwrap().sum_all().unwrap();
    /// loss.backward().unwrap();
    /// assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
    /// ```
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::Autograd {
                op: "backward",
                msg: format!("needs a scalar (got shape {:?}); use backward_with(seed)", self.shape()),
            });
        }
        let seed = crate::no_grad(|| Tensor::ones_like(self))?;
        self.backward_with(&seed)
    }

    /// Backpropagates `seed` (the gradient of some scalar w.r.t. this tensor).
    pub fn backward_with(&self, seed: &Tensor) -> Result<()> {
        self.backward_with_hook(seed, &mut |_| Ok(()))
    }

    /// Like [`backward_with`](Tensor::backward_with), and calls `on_leaf(leaf)` as soon as a
    /// leaf's gradient for this backward is final: every contribution has been summed into
    /// [`Tensor::grad`] (on top of what earlier backwards accumulated), and nothing later in
    /// this backward touches it. Leaves come in reverse topological order, roughly the
    /// reverse of the order the forward used them; a leaf the loss does not depend on is never
    /// reported. This is PyTorch's `register_post_accumulate_grad_hook`, for the whole graph:
    /// data-parallel training (kiln-dist) starts a bucket's all-reduce from it while the rest
    /// of backward still runs. An error from `on_leaf` stops backward and is returned.
    pub fn backward_with_hook(&self, seed: &Tensor, on_leaf: &mut dyn FnMut(&Tensor) -> Result<()>) -> Result<()> {
        if !self.requires_grad() {
            return Err(Error::Autograd { op: "backward", msg: format!("tensor {:?} does not require grad", self.shape()) });
        }
        if seed.shape() != self.shape() {
            return Err(Error::shape("backward", format!("seed {:?} vs tensor {:?}", seed.shape(), self.shape())));
        }
        let _guard = crate::NoGradGuard::new();
        let order = topo_order(self);
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        grads.insert(self.id(), seed.to_dtype(self.dtype())?);
        for t in order.iter().rev() {
            let Some(g) = grads.remove(&t.id()) else { continue };
            if t.0.is_leaf {
                let total = match t.grad() {
                    Some(prev) => (&prev + &g)?,
                    None => g.contiguous()?,
                };
                t.set_grad(Some(total))?;
                on_leaf(t)?;
                continue;
            }
            let node: Option<Arc<Node>> = t.0.node.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(node) = node else {
                return Err(Error::Autograd {
                    op: "backward",
                    msg: "the graph was already freed by an earlier backward (build it again)".into(),
                });
            };
            let input_grads = (node.backward)(&g).map_err(|e| match e {
                Error::Autograd { .. } => e,
                other => Error::Autograd { op: node.op, msg: format!("in the gradient of {}: {other}", node.op) },
            })?;
            for (input, ig) in node.inputs.iter().zip(input_grads) {
                let Some(ig) = ig else { continue };
                crate::anomaly::check(node.op, "gradient", &ig)?;
                if !input.requires_grad() {
                    continue;
                }
                if ig.shape() != input.shape() {
                    return Err(Error::Autograd {
                        op: node.op,
                        msg: format!("gradient shape {:?} for input {:?}", ig.shape(), input.shape()),
                    });
                }
                let sum = match grads.remove(&input.id()) {
                    Some(prev) => (&prev + &ig)?,
                    None => ig,
                };
                grads.insert(input.id(), sum);
            }
        }
        Ok(())
    }
}
