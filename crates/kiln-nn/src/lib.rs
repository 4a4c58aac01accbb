//! Neural-network building blocks on top of `kiln-core`: modules with PyTorch's names and
//! defaults, losses, optimizers, learning-rate schedules and safetensors checkpoints.

pub mod activation;
pub mod amp;
pub mod attention;
pub mod checkpoint;
pub mod clip;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod init;
pub mod linear;
pub mod loss;
pub mod models;
pub mod module;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod sched;
pub mod sequential;
pub mod torch;
pub mod transformer;

pub use activation::{
    Celu, Gelu, GeluTanh, Glu, Hardsigmoid, Hardswish, Hardtanh, LeakyRelu, LogSigmoid, PRelu, Relu, Relu6, Selu,
    Sigmoid, Silu, Softplus, Softsign, Tanh,
};
pub use amp::{GradScaler, GradScalerConfig, StepOutcome};
pub use attention::MultiHeadAttention;
pub use clip::{clip_grad_norm_, clip_grad_value_};
pub use conv::{Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use kiln_core::{
    AvgPool1dOptions, AvgPool2dOptions, Conv2dOptions, ConvTranspose1dOptions, ConvTranspose2dOptions,
    MaxPool1dOptions, MaxPool2dOptions,
};
pub use linear::Linear;
pub use loss::{CrossEntropyOptions, Reduction, Target, cross_entropy, cross_entropy_loss};
pub use module::{Module, ModuleExt};
pub use norm::{BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, RmsNorm};
pub use optim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, ParamGroup, RmsProp, RmsPropConfig, Sgd,
    SgdConfig,
};
pub use pool::{
    AdaptiveAvgPool2d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, AvgPool1d, AvgPool2d, Flatten, MaxPool1d, MaxPool2d,
};
pub use sched::{CosineAnnealingLr, ExponentialLr, LrScheduler, MultiStepLr, OneCycleLr, StepLr, WarmupCosine};
pub use sequential::Sequential;
pub use transformer::TransformerBlock;
