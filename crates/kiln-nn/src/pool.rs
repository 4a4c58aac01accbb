//! Pooling layers and `Flatten` (no parameters).

use crate::module::Module;
use kiln_core::{Result, Tensor};

/// 2-D max pooling over `[n, c, h, w]` (padding reads −∞), PyTorch's `nn.MaxPool2d`. Pass the
/// stride explicitly (PyTorch defaults it to the kernel size).
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{MaxPool2d, Module};
/// let x = Tensor::arange(0.0, 16.0, 1.0, &Device::cpu()).unwrap().reshape(&[1, 1, 4, 4]).unwrap();
/// let y = MaxPool2d::new((2, 2), (2, 2), (0, 0)).forward(&x).unwrap();
/// assert_eq!(y.to_vec::<f32>().unwrap(), vec![5.0, 7.0, 13.0, 15.0]);
/// ```
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
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{AvgPool2d, Module};
/// let x = Tensor::arange(0.0, 16.0, 1.0, &Device::cpu()).unwrap().reshape(&[1, 1, 4, 4]).unwrap();
/// let y = AvgPool2d::new((2, 2), (2, 2), (0, 0)).forward(&x).unwrap();
/// assert_eq!(y.to_vec::<f32>().unwrap(), vec![2.5, 4.5, 10.5, 12.5]);
/// ```
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
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{AdaptiveAvgPool2d, Module};
/// let x = Tensor::arange(0.0, 16.0, 1.0, &Device::cpu()).unwrap().reshape(&[1, 1, 4, 4]).unwrap();
/// let y = AdaptiveAvgPool2d::new((1, 1)).forward(&x).unwrap();
/// assert_eq!((y.shape(), y.to_vec::<f32>().unwrap()), (&[1usize, 1, 1, 1][..], vec![7.5]));
/// ```
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
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{Flatten, Module};
/// let x = Tensor::zeros(&[2, 3, 4, 5], &Device::cpu()).unwrap();
/// assert_eq!(Flatten.forward(&x).unwrap().shape(), &[2, 60]);
/// ```
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
