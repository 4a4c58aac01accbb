//! Pooling layers and `Flatten` (no parameters).

use crate::module::Module;
use kiln_core::{AvgPool1dOptions, AvgPool2dOptions, MaxPool1dOptions, MaxPool2dOptions, Result, Tensor};

/// 2-D max pooling over `[n, c, h, w]` (padding reads −∞), PyTorch's `nn.MaxPool2d`. Pass the
/// stride explicitly to `new` (PyTorch defaults it to the kernel size, as
/// `MaxPool2dOptions::new` does).
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
    pub dilation: (usize, usize),
    pub ceil_mode: bool,
}

impl MaxPool2d {
    /// Dilation 1, floor mode. Invalid sizes are reported by `forward`.
    pub fn new(kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> MaxPool2d {
        MaxPool2d::from_options(MaxPool2dOptions { stride, padding, ..MaxPool2dOptions::new(kernel) })
    }

    /// Every option (dilation, ceil mode).
    pub fn from_options(o: MaxPool2dOptions) -> MaxPool2d {
        MaxPool2d {
            kernel: o.kernel,
            stride: o.stride,
            padding: o.padding,
            dilation: o.dilation,
            ceil_mode: o.ceil_mode,
        }
    }

    pub fn options(&self) -> MaxPool2dOptions {
        MaxPool2dOptions {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            ceil_mode: self.ceil_mode,
        }
    }

    /// The output and the position of each max (`return_indices=True`).
    pub fn forward_with_indices(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        x.max_pool2d_with_indices(self.options())
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.max_pool2d_opts(self.options())
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// 2-D average pooling, PyTorch's `nn.AvgPool2d` (`new` gives `count_include_pad=True`).
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
    pub ceil_mode: bool,
    pub count_include_pad: bool,
    pub divisor_override: Option<usize>,
}

impl AvgPool2d {
    /// Floor mode, padding counted. Invalid sizes are reported by `forward`.
    pub fn new(kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> AvgPool2d {
        AvgPool2d::from_options(AvgPool2dOptions { stride, padding, ..AvgPool2dOptions::new(kernel) })
    }

    /// Every option (ceil mode, `count_include_pad`, `divisor_override`).
    pub fn from_options(o: AvgPool2dOptions) -> AvgPool2d {
        let AvgPool2dOptions { kernel, stride, padding, ceil_mode, count_include_pad, divisor_override } = o;
        AvgPool2d { kernel, stride, padding, ceil_mode, count_include_pad, divisor_override }
    }

    pub fn options(&self) -> AvgPool2dOptions {
        let AvgPool2d { kernel, stride, padding, ceil_mode, count_include_pad, divisor_override } = *self;
        AvgPool2dOptions { kernel, stride, padding, ceil_mode, count_include_pad, divisor_override }
    }
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.avg_pool2d_opts(self.options())
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// 1-D max pooling over `[n, c, l]`, PyTorch's `nn.MaxPool1d`.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool1d {
    pub opts: MaxPool1dOptions,
}

impl MaxPool1d {
    /// `MaxPool1dOptions::new(kernel)` has PyTorch's defaults.
    pub fn new(opts: MaxPool1dOptions) -> MaxPool1d {
        MaxPool1d { opts }
    }

    /// The output and the position of each max (`return_indices=True`).
    pub fn forward_with_indices(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        x.max_pool1d_with_indices(self.opts)
    }
}

impl Module for MaxPool1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.max_pool1d(self.opts)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// 1-D average pooling over `[n, c, l]`, PyTorch's `nn.AvgPool1d`.
#[derive(Clone, Copy, Debug)]
pub struct AvgPool1d {
    pub opts: AvgPool1dOptions,
}

impl AvgPool1d {
    /// `AvgPool1dOptions::new(kernel)` has PyTorch's defaults.
    pub fn new(opts: AvgPool1dOptions) -> AvgPool1d {
        AvgPool1d { opts }
    }
}

impl Module for AvgPool1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.avg_pool1d(self.opts)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Max pooling to a fixed `(oh, ow)` whatever the input size, PyTorch's `nn.AdaptiveMaxPool2d`.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveMaxPool2d {
    pub output_size: (usize, usize),
}

impl AdaptiveMaxPool2d {
    pub fn new(output_size: (usize, usize)) -> AdaptiveMaxPool2d {
        AdaptiveMaxPool2d { output_size }
    }

    /// The output and the position of each max (`return_indices=True`).
    pub fn forward_with_indices(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        x.adaptive_max_pool2d_with_indices(self.output_size)
    }
}

impl Module for AdaptiveMaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.adaptive_max_pool2d(self.output_size)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Max pooling of `[n, c, l]` to a fixed length, PyTorch's `nn.AdaptiveMaxPool1d`.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveMaxPool1d {
    pub output_size: usize,
}

impl AdaptiveMaxPool1d {
    pub fn new(output_size: usize) -> AdaptiveMaxPool1d {
        AdaptiveMaxPool1d { output_size }
    }

    /// The output and the position of each max (`return_indices=True`).
    pub fn forward_with_indices(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        x.adaptive_max_pool1d_with_indices(self.output_size)
    }
}

impl Module for AdaptiveMaxPool1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.adaptive_max_pool1d(self.output_size)
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
            return Err(kiln_core::Error::shape(
                "Flatten",
                format!("needs a batch dim and at least one more, got {:?}", x.shape()),
            ));
        }
        x.flatten(1, -1)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}
