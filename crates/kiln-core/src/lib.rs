//! Kiln's core: [`Tensor`], [`Device`], the op set and reverse-mode autodiff.
//!
//! Ops validate shapes, dtypes and devices here, then call a backend primitive
//! (`kiln-cpu` or `kiln-wgpu`) through the shared `kiln-backend` contract. Every op that sees
//! an input needing gradients records a node with its gradient rule next to its forward code.

mod anomaly;
mod autocast;
mod autograd;
mod creation;
mod device;
mod element;
mod ops;
pub mod optim_kernels;
mod rng;
mod storage;
mod tensor;

pub use anomaly::{is_detect_anomaly, set_detect_anomaly};
pub use autocast::{AutocastGuard, autocast, autocast_dtype};
pub use autograd::{NoGradGuard, is_grad_enabled, no_grad};
pub use device::{Device, profile_report};
pub use element::Element;
pub use half::f16;
pub use kiln_backend::{AdamParams, AttentionDropout, AttentionParams};
pub use kiln_backend::{
    BinaryOp, ConvGeometry, DType, Error, HostData, Layout, ReduceOp, Result, ScatterOp, TernaryOp, UnaryOp,
};
pub use kiln_backend::{Distribution, PhiloxKey, philox};
pub use kiln_wgpu::{ATTENTION_SCORE_BUDGET, AttentionPath, attention_path, set_attention_path, set_flash_tile};
pub use kiln_wgpu::{FusionStats, MemoryStats, fusion_enabled, set_fusion};
pub use ops::activation::{SELU_ALPHA, SELU_SCALE};
pub use ops::attention::SdpaOptions;
pub use ops::binary::broadcast_shapes;
pub use ops::conv::{Conv2dOptions, ConvTranspose1dOptions, ConvTranspose2dOptions};
pub use ops::fused::ATTENTION_MAX_HEAD_DIM;
pub use ops::pool::{AvgPool1dOptions, AvgPool2dOptions, MaxPool1dOptions, MaxPool2dOptions};
pub use rng::{RngState, manual_seed, rng_state, set_rng_state};
pub use tensor::Tensor;

/// Hooks for Kiln's own tests (forcing a fallback path); no part of the API.
#[doc(hidden)]
pub mod testing {
    pub use crate::autocast::pretend_no_f16_for_tests;
}
