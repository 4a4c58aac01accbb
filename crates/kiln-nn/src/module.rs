//! The `Module` trait: forward, named parameters (PyTorch `state_dict` keys), train/eval.

use kiln_core::{Device, Result, Tensor};

/// A layer or model. Parameters are leaf tensors created with `with_grad()`; optimizers update
/// them in place with `Tensor::set_data`, so a module never needs `&mut` to be trained.
pub trait Module: Send + Sync {
    /// Runs the module.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// Every trainable parameter with its dotted name (`"layers.0.weight"`), in a stable order.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// Non-trainable state saved in checkpoints (e.g. BatchNorm running statistics), named
    /// like parameters. These tensors are updated with `set_data` too.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Switches training behaviour (dropout, batch statistics) on or off.
    fn set_training(&self, _training: bool) {}
}

/// Conveniences derived from [`Module`].
pub trait ModuleExt: Module {
    /// The parameters without names.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// Training mode (like `model.train()`).
    fn train(&self) {
        self.set_training(true)
    }

    /// Evaluation mode (like `model.eval()`).
    fn eval(&self) {
        self.set_training(false)
    }

    /// Clears every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.parameters() {
            p.zero_grad();
        }
    }

    /// Moves every parameter and buffer to `device` in place (PyTorch's `model.to(device)`):
    /// handles taken earlier, e.g. by an optimizer, see the new device. Create the optimizer
    /// after moving: optimizer state stays where it was made. All or nothing: on an error
    /// (out of memory on the target, say) every tensor stays where it was.
    fn to_device(&self, device: &Device) -> Result<()> {
        let all: Vec<Tensor> =
            self.named_parameters().into_iter().chain(self.named_buffers()).map(|(_, t)| t).collect();
        Tensor::move_all_to_(&all, device)
    }

    /// Number of trainable scalars.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|p| p.numel()).sum()
    }
}

impl<M: Module + ?Sized> ModuleExt for M {}

/// Prefixes child names: `prefixed("layers.0", child.named_parameters())`.
pub fn prefixed(prefix: &str, named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    named.into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)).collect()
}
