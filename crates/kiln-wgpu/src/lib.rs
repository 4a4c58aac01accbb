//! Kiln's GPU backend: every op is a WGSL compute shader run through wgpu.
//!
//! The pieces, one file each: [`context`] (adapter choice, device with the adapter's real limits
//! and features), [`pool`] (size-class buffer reuse), [`cache`] (pipelines built once per
//! specialisation key), [`batch`] (many dispatches per command encoder and submit, one metadata
//! arena per batch), [`readback`] (pooled staging, blocking and async), [`fusion`] (elementwise
//! ops deferred and fused into generated kernels; `set_fusion(false)` or `KILN_FUSION=0` turns
//! it off), and the kernels grouped by op family. WGSL sources live in the workspace's
//! `shaders/` folder and are embedded at build time. Attention takes the flash kernels or, while
//! its score matrix fits [`ATTENTION_SCORE_BUDGET`], batched matmuls around a row softmax;
//! `set_attention_path` or `KILN_ATTENTION=auto|flash|matmul` forces one.
//!
//! Around them: `profile` (`KILN_PROFILE=1`: GPU time per kernel from timestamp queries),
//! `pipeline_cache` (compiled pipelines persisted in `KILN_CACHE_DIR`), `autotune` (matmul tile
//! and split-k choice per shape class, timed once per machine; `KILN_MATMUL_SPLITK=0` turns
//! split k off), `bind_cache` (bind groups reused across
//! dispatches through a dynamic metadata offset), `exit` (profile table and cache written at
//! process exit), `platform` (what differs in a browser: nothing blocks, async waits only).

mod autotune;
mod batch;
mod bind_cache;
mod cache;
mod chunked;
pub mod context;
mod exit;
mod fusion;
mod kernels;
mod pipeline_cache;
mod platform;
mod pool;
pub mod profile;
mod readback;
pub mod shaders;
mod storage;

pub use context::{AdapterSummary, ContextOptions, GpuContext, GpuDevice, MemoryStats, profile_report_all};
pub use pool::CensusEntry;
pub use fusion::{FusionStats, fusion_enabled, set_fusion};
pub use kernels::attention::set_flash_tile;
pub use kernels::attention_coop::emulate_cooperative_matrices;
pub use kernels::attention_path::{ATTENTION_SCORE_BUDGET, AttentionPath, attention_path, set_attention_path};
pub use profile::ProfileMode;
pub use storage::GpuStorage;
