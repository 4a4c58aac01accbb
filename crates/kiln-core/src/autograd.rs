//! Reverse-mode autodiff. Each op that sees an input needing gradients records a `Node`: an
//! [`Edge`] to each input and a closure mapping the output's gradient to the inputs'. `backward`
//! walks the graph in reverse topological order and *takes* each node as it goes, freeing saved
//! tensors early; a second `backward` through the same graph is therefore an error, as in
//! PyTorch.
//!
//! The graph holds no op outputs, only their node slots: an intermediate's memory goes as soon
//! as neither the user nor a gradient closure (which saves exactly what its rule reads) holds
//! it. Holding the input tensors themselves kept every forward intermediate alive until
//! backward — on `char_transformer --size large` about twice the memory the model needs.

use crate::Tensor;
use kiln_backend::{Error, Result};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

type Backward = dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync;

pub(crate) struct Node {
    pub(crate) op: &'static str,
    inputs: Vec<Edge>,
    backward: Box<Backward>,
}

/// A tensor's node, shared between the tensor and the edges that lead to it, so the graph
/// outlives the tensor (and its storage) when the user drops it.
pub(crate) type NodeSlot = Arc<Mutex<Option<Arc<Node>>>>;

/// Where a node sends one input's gradient.
#[derive(Clone)]
enum Edge {
    /// The input needs no gradient.
    None,
    /// A leaf that accumulates its gradient (a parameter): the tensor itself, as PyTorch's
    /// `AccumulateGrad` holds its variable.
    Leaf(Tensor),
    /// An op's output: its id, shape (to check the gradient against) and node, not its data.
    Interior { id: u64, shape: Vec<usize>, slot: NodeSlot },
}

impl Edge {
    fn to(t: &Tensor) -> Edge {
        if !t.requires_grad() {
            Edge::None
        } else if t.0.is_leaf {
            Edge::Leaf(t.clone())
        } else {
            Edge::Interior { id: t.id(), shape: t.shape().to_vec(), slot: t.0.node.clone() }
        }
    }

    fn id(&self) -> Option<u64> {
        match self {
            Edge::None => None,
            Edge::Leaf(t) => Some(t.id()),
            Edge::Interior { id, .. } => Some(*id),
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Edge::None => &[],
            Edge::Leaf(t) => t.shape(),
            Edge::Interior { shape, .. } => shape,
        }
    }

    /// The edges out of this vertex's node (none for a leaf or a freed node).
    fn inputs(&self) -> Vec<Edge> {
        match self {
            Edge::Interior { slot, .. } => lock(slot).as_ref().map(|n| n.inputs.clone()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    Some(Node { op, inputs: inputs.iter().map(|&t| Edge::to(t)).collect(), backward: Box::new(backward) })
}

fn topo_order(root: &Tensor) -> Vec<Edge> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative DFS: deep graphs (long training unrolls) must not overflow the stack.
    let mut stack: Vec<(Edge, bool)> = vec![(Edge::to(root), false)];
    while let Some((v, expanded)) = stack.pop() {
        if expanded {
            order.push(v);
            continue;
        }
        let Some(id) = v.id() else { continue };
        if !seen.insert(id) {
            continue;
        }
        let inputs = v.inputs();
        stack.push((v, true));
        for i in inputs {
            if i.id().is_some_and(|id| !seen.contains(&id)) {
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
            return Err(Error::Autograd {
                op: "backward",
                msg: format!("tensor {:?} does not require grad", self.shape()),
            });
        }
        if seed.shape() != self.shape() {
            return Err(Error::shape("backward", format!("seed {:?} vs tensor {:?}", seed.shape(), self.shape())));
        }
        let _guard = crate::NoGradGuard::new();
        let order = topo_order(self);
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        grads.insert(self.id(), seed.to_dtype(self.dtype())?);
        for v in order.iter().rev() {
            let Some(g) = v.id().and_then(|id| grads.remove(&id)) else { continue };
            let slot = match v {
                Edge::Leaf(t) => {
                    let total = match t.grad() {
                        Some(prev) => (&prev + &g)?,
                        None => g.contiguous()?,
                    };
                    t.set_grad(Some(total))?;
                    on_leaf(t)?;
                    continue;
                }
                Edge::Interior { slot, .. } => slot,
                Edge::None => continue,
            };
            let node: Option<Arc<Node>> = lock(slot).take();
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
                let Some(id) = input.id() else { continue };
                if ig.shape() != input.shape() {
                    return Err(Error::Autograd {
                        op: node.op,
                        msg: format!("gradient shape {:?} for input {:?}", ig.shape(), input.shape()),
                    });
                }
                let sum = match grads.remove(&id) {
                    Some(prev) => (&prev + &ig)?,
                    None => ig,
                };
                grads.insert(id, sum);
            }
        }
        Ok(())
    }
}
