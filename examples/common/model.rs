//! The two MNIST classifiers the examples train: a multi-layer perceptron and a small CNN.

use std::fmt;
use std::str::FromStr;

use kiln::prelude::*;

/// Which architecture to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// 784 → 512 → 256 → 10 with ReLU and dropout.
    Mlp,
    /// Two 3×3 conv + max-pool stages, then 3136 → 128 → 10.
    Cnn,
}

impl FromStr for ModelKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "mlp" => Ok(ModelKind::Mlp),
            "cnn" => Ok(ModelKind::Cnn),
            other => Err(format!("unknown model {other:?}, expected mlp or cnn")),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
        })
    }
}

impl ModelKind {
    /// A freshly initialised model of this kind on `device` (initialisation draws from
    /// Kiln's seeded generator, so call `kiln::manual_seed` first for a reproducible run).
    pub fn build(self, device: &Device) -> Result<Sequential> {
        Ok(match self {
            ModelKind::Mlp => Sequential::new()
                .add(Linear::new(784, 512, true, device)?)
                .add(Relu)
                .add(Dropout::new(0.2))
                .add(Linear::new(512, 256, true, device)?)
                .add(Relu)
                .add(Dropout::new(0.2))
                .add(Linear::new(256, 10, true, device)?),
            ModelKind::Cnn => {
                let same = Conv2dOptions { padding: (1, 1), ..Default::default() };
                Sequential::new()
                    .add(Conv2d::new(1, 32, (3, 3), same, true, device)?)
                    .add(Relu)
                    .add(MaxPool2d::new((2, 2), (2, 2), (0, 0)))
                    .add(Conv2d::new(32, 64, (3, 3), same, true, device)?)
                    .add(Relu)
                    .add(MaxPool2d::new((2, 2), (2, 2), (0, 0)))
                    .add(Flatten::new())
                    .add(Linear::new(64 * 7 * 7, 128, true, device)?)
                    .add(Relu)
                    .add(Dropout::new(0.25))
                    .add(Linear::new(128, 10, true, device)?)
            }
        })
    }

    /// `n` normalised images (`n · 784` floats) as the input tensor this model expects:
    /// `[n, 784]` for the MLP, `[n, 1, 28, 28]` for the CNN.
    pub fn input(self, pixels: Vec<f32>, n: usize, device: &Device) -> Result<Tensor> {
        match self {
            ModelKind::Mlp => Tensor::from_vec(pixels, &[n, 784], device),
            ModelKind::Cnn => Tensor::from_vec(pixels, &[n, 1, 28, 28], device),
        }
    }
}
