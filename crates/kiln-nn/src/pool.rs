//! Pooling layers and `Flatten` (no parameters).

use crate::module::Module;
use kiln_core::{Result, Tensor};

/// 2-D max pooling over `[n, c, h, w]` (padding reads −∞), PyTorch's `nn.MaxPool2d`. Pass the
/// stride explicitly (PyTorch defaults it to the kernel size).
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl MaxPool2d {
    /// Invalid sizes are reported by `forward`.
    pub fn new(kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> MaxPool2d {
        MaxPool2d { kernel, stride, padding }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.max_pool2d(self.kernel, self.stride, self.padding)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// 2-D average pooling, PyTorch's `nn.AvgPool2d` with `count_include_pad=True`.
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl AvgPool2d {
    /// Invalid sizes are reported by `forward`.
    pub fn new(kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> AvgPool2d {
        AvgPool2d { kernel, stride, padding }
    }
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.avg_pool2d(self.kernel, self.stride, self.padding)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Average pooling to a fixed `(oh, ow)` whatever the input size, PyTorch's
/// `nn.AdaptiveAvgPool2d` (`(1, 1)` is global average pooling).
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveAvgPool2d {
    pub output_size: (usize, usize),
}

impl AdaptiveAvgPool2d {
    pub fn new(output_size: (usize, usize)) -> AdaptiveAvgPool2d {
        AdaptiveAvgPool2d { output_size }
    }
}

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.adaptive_avg_pool2d(self.output_size)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Flattens every dim from 1 on: `[n, c, h, w] → [n, c·h·w]` (PyTorch's `nn.Flatten()`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Flatten;

impl Flatten {
    pub fn new() -> Flatten {
        Flatten
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() < 2 {
            return Err(kiln_core::Error::shape("Flatten", format!("needs a batch dim and at least one more, got {:?}", x.shape())));
        }
        x.flatten(1, -1)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}
