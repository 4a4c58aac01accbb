//! `Sequential`: modules applied one after another.

use crate::module::{Module, prefixed};
use kiln_core::{Result, Tensor};

/// A chain of modules, PyTorch's `nn.Sequential`. Children are named by position, so
/// parameters read `"0.weight"`, `"2.bias"`, ... and `set_training` reaches every child.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// # use kiln_nn::{Linear, Module, Relu, Sequential};
/// let cpu = Device::cpu();
/// let mlp = Sequential::new().add(Linear::new(2, 8, true, &cpu).unwrap()).add(Relu).add(Linear::new(8, 1, true, &cpu).unwrap());
/// let names: Vec<String> = mlp.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
/// ```
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// An empty chain (the identity).
    pub fn new() -> Sequential {
        Sequential { layers: Vec::new() }
    }

    /// Appends a module (builder style).
    #[allow(clippy::should_implement_trait)]
    pub fn add<M: Module + 'static>(mut self, module: M) -> Sequential {
        self.layers.push(Box::new(module));
        self
    }

    /// Appends an already boxed module.
    pub fn push(&mut self, module: Box<dyn Module>) {
        self.layers.push(module);
    }

    /// Number of children.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The child at `index`.
    pub fn get(&self, index: usize) -> Option<&dyn Module> {
        self.layers.get(index).map(|m| m.as_ref())
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.layers.iter().enumerate().flat_map(|(i, m)| prefixed(&i.to_string(), m.named_parameters())).collect()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.layers.iter().enumerate().flat_map(|(i, m)| prefixed(&i.to_string(), m.named_buffers())).collect()
    }

    fn set_training(&self, training: bool) {
        for m in &self.layers {
            m.set_training(training);
        }
    }
}
