//! Kiln's GPU backend: every op is a WGSL compute shader run through wgpu.
//!
//! Built in layers; a module imports only from its own layer or lower ones
//! (`tests/layers.rs` checks this):
//! 0. `platform`: what differs in a browser (nothing blocks, async waits only).
//! 1. [`gpu`](Gpu): the open device and queue, limits, features, error capture, waits;
//!    `adapter`: which adapter to open and what to ask of it.
//! 2. Resources, each taking a `&wgpu::Device` or `&Gpu`: `pool` (size-class buffer reuse and
//!    blocks of shared buffers, [`MemoryStats`]; `segments` keeps the blocks' books), `cache`
//!    (pipelines built once per specialisation key), `pipeline_cache` (compiled pipelines
//!    persisted in `KILN_CACHE_DIR`), `bind_cache` (bind groups reused
//!    through a dynamic metadata offset), [`profile`] (`KILN_PROFILE=1`: GPU time per kernel).
//! 3. Submission: `batch` (many dispatches per command encoder and submit, one metadata arena
//!    per batch) and `readback` (uploads; pooled staging, blocking and async).
//! 4. Ops: [`context`] ([`GpuContext`] composes one of each piece below plus the ops' state),
//!    the kernels grouped by op family (`kernels/`), `fusion` (elementwise ops deferred and
//!    fused into generated kernels; `set_fusion(false)` or `KILN_FUSION=0` turns it off),
//!    `autotune` (matmul tile and split-k choice per shape class, timed once per machine;
//!    `KILN_MATMUL_SPLITK=0` turns split k off), `storage` ([`GpuStorage`]), `chunked`, [`shaders`]
//!    and `exit` (profile table and cache written at process exit). The kernels are `impl
//!    GpuContext` blocks, so this layer is the one whose modules may import each other.
//!
//! WGSL sources live in the workspace's `shaders/` folder and are embedded at build time.
//! Attention takes the flash kernels or, while its score matrix fits [`ATTENTION_SCORE_BUDGET`],
//! batched matmuls around a row softmax; `set_attention_path` or
//! `KILN_ATTENTION=auto|flash|matmul` forces one.

mod adapter;
mod autotune;
mod batch;
mod bind_cache;
mod cache;
mod chunked;
pub mod context;
mod exit;
mod fusion;
mod gpu;
mod kernels;
mod pipeline_cache;
mod platform;
mod pool;
pub mod profile;
mod readback;
mod segments;
pub mod shaders;
mod storage;

pub use adapter::AdapterSummary;
pub use context::{ContextOptions, GpuContext, GpuDevice, profile_report_all};
pub use fusion::{FusionStats, fusion_enabled, set_fusion};
pub use gpu::Gpu;
pub use kernels::attention::set_flash_tile;
pub use kernels::attention_coop::emulate_cooperative_matrices;
pub use kernels::attention_path::{ATTENTION_SCORE_BUDGET, AttentionPath, attention_path, set_attention_path};
pub use pool::{CensusEntry, MemoryStats};
pub use profile::ProfileMode;
pub use storage::GpuStorage;
