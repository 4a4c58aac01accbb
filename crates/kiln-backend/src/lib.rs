//! The vocabulary that `kiln-core` and its backends (`kiln-cpu`, `kiln-wgpu`) share.
//!
//! Backends know nothing about tensors, autodiff or devices-as-a-user-sees-them: they receive
//! storage plus a [`Layout`] and an op description, and return new storage. Keeping that
//! contract in its own crate lets the core depend on both backends without a cycle.

pub mod checks;
mod dtype;
mod error;
mod fused;
mod host;
mod layout;
mod ops;
pub mod philox;
mod storage;

pub use dtype::DType;
pub use error::{Error, Result};
pub use fused::{AdamParams, AttentionDropout, AttentionParams, CrossEntropyParams, NormParams};
pub use host::HostData;
pub use layout::{Layout, StridedIndex, checked_numel, numel_of};
pub use ops::{BinaryOp, ConvGeometry, PoolGeometry, PoolKind, ReduceOp, ScatterOp, TernaryOp, UnaryOp};
pub use philox::{Distribution, PhiloxKey};
pub use storage::BackendStorage;
