//! `GpuContext`: one device's pieces composed. The layers below know nothing of it: `gpu` (the
//! device, errors, waits), `adapter` (which adapter, what to ask of it), `pool`, `cache`,
//! `pipeline_cache`, `bind_cache`, `profile`, `batch` (recording and submits) and `readback`
//! (uploads and readbacks). The context owns one of each plus the state of the layer above
//! (`fusion`, the matmul `autotune`r), and its methods here wire them together: a dispatch,
//! copy, submit or readback first records pending fused work, then calls into the batch or
//! readback layer. The kernels (`kernels/`, `fusion/`) are further `impl GpuContext` blocks.
//! It dereferences to its [`Gpu`], so `ctx.device`, `ctx.limits` and `ctx.check(op)` work as
//! fields and methods of the context.

use crate::batch::Batcher;
use crate::gpu::Gpu;
use crate::pipeline_cache::{self, PipelineStore};
use crate::profile::{ProfileMode, Profiler};
use crate::readback::Transfer;
use crate::{cache::Kernel, cache::KernelCache, pool::BufferPool, pool::PooledBuffer, pool::Span};
use kiln_backend::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::adapter::{AdapterChoice, AdapterSummary, CoopConfig, list_adapters};
pub use crate::pool::MemoryStats;

/// A shared handle to one GPU context; what `kiln-core`'s `Device::gpu()` holds.
pub type GpuDevice = Arc<GpuContext>;

/// Per-context settings that programs normally take from the environment
/// ([`ContextOptions::from_env`]); tests and embedders set them directly.
#[derive(Clone, Debug)]
pub struct ContextOptions {
    /// Per-kernel profiling: `KILN_PROFILE=1` gives [`ProfileMode::Timestamps`].
    pub profile: ProfileMode,
    /// Print the profile table when the process exits (or the context drops).
    pub print_profile: bool,
    /// Where compiled pipelines and autotuning choices persist (`KILN_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/kiln` or `~/.cache/kiln`); `None`: nothing is written.
    pub cache_dir: Option<PathBuf>,
    /// Matmul autotuning: `KILN_AUTOTUNE=1`/`0` forces it on or off; `None` tunes on hardware
    /// adapters only (a software adapter's timings are noisy and its tile choice fixed).
    pub autotune: Option<bool>,
    /// How long a sync spins on non-blocking polls before it sleeps in a fence wait
    /// (`KILN_SPIN_US`); `None`: 2 ms on hardware adapters, none on software ones, whose
    /// worker threads need the cores a spinning host would take.
    pub spin: Option<std::time::Duration>,
    /// Split k for float matmuls with few output tiles and a long k: `KILN_MATMUL_SPLITK=0`/`1`
    /// turns it off or on; `None`: on for hardware adapters only (a software adapter's few
    /// cores are busy without it).
    pub matmul_splitk: Option<bool>,
    /// Submit recorded work early, whenever the GPU has run out of it (`KILN_EARLY_SUBMIT=0`
    /// turns this off: work then waits for a sync, a readback or a full batch).
    pub early_submit: bool,
    /// Print a backtrace to stderr at every host wait (`KILN_SYNC_TRACE=1`), to find what
    /// makes a loop wait for the GPU (see [`Gpu::sync_count`](crate::Gpu::sync_count)).
    pub sync_trace: bool,
    /// The most bytes the buffer pool holds (live plus free) before it lets free buffers go
    /// instead of keeping them (`KILN_POOL_LIMIT=<MiB>`; `None`: no limit). Never fails an
    /// allocation; see [`GpuContext::set_pool_limit`].
    pub pool_limit: Option<u64>,
}

impl ContextOptions {
    pub fn from_env() -> ContextOptions {
        let flag = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_string());
        let profile = flag("KILN_PROFILE").is_some_and(|v| !v.is_empty() && v != "0");
        ContextOptions {
            profile: if profile { ProfileMode::Timestamps } else { ProfileMode::Off },
            print_profile: profile,
            cache_dir: pipeline_cache::default_dir(),
            autotune: flag("KILN_AUTOTUNE").and_then(|v| match v.as_str() {
                "1" | "on" | "true" => Some(true),
                "0" | "off" | "false" => Some(false),
                _ => None,
            }),
            spin: flag("KILN_SPIN_US").and_then(|v| v.parse().ok()).map(std::time::Duration::from_micros),
            matmul_splitk: flag("KILN_MATMUL_SPLITK").and_then(|v| match v.as_str() {
                "1" | "on" | "true" => Some(true),
                "0" | "off" | "false" => Some(false),
                _ => None,
            }),
            early_submit: !flag("KILN_EARLY_SUBMIT").is_some_and(|v| matches!(v.as_str(), "0" | "off" | "false")),
            sync_trace: flag("KILN_SYNC_TRACE").is_some_and(|v| !v.is_empty() && v != "0"),
            pool_limit: crate::pool::parse_limit_mib(flag("KILN_POOL_LIMIT").as_deref()),
        }
    }
}

impl Default for ContextOptions {
    /// No profiling, no persistence, autotuning by adapter kind.
    fn default() -> Self {
        ContextOptions {
            profile: ProfileMode::Off,
            print_profile: false,
            cache_dir: None,
            autotune: None,
            spin: None,
            matmul_splitk: None,
            early_submit: true,
            sync_trace: false,
            pool_limit: None,
        }
    }
}

pub struct GpuContext {
    /// The device, its queue and what it can do; the context dereferences to it.
    pub(crate) gpu: Arc<Gpu>,
    pub(crate) pool: BufferPool,
    pub(crate) cache: KernelCache,
    pub(crate) batch: Batcher,
    pub(crate) options: ContextOptions,
    pub(crate) tuner: crate::autotune::Tuner,
    /// Elementwise ops recorded but not dispatched yet (see `fusion`).
    pub(crate) fusion: crate::fusion::Fusion,
}

impl GpuContext {
    /// Opens a device on the adapter `choice` selects, with options from the environment.
    pub fn new(choice: &AdapterChoice) -> Result<GpuDevice> {
        Self::new_with(choice, &ContextOptions::from_env())
    }

    /// Opens a device on the adapter `choice` selects, with explicit options. Blocks until the
    /// device is there, so in a browser it returns `Error::WouldBlock`: use
    /// [`new_async`](Self::new_async) there.
    pub fn new_with(choice: &AdapterChoice, options: &ContextOptions) -> Result<GpuDevice> {
        crate::platform::refuse_blocking("Device::gpu", "Device::gpu_async")?;
        pollster::block_on(Self::new_async(choice, options))
    }

    /// [`new_with`](Self::new_with) without blocking: the only way to open a device in a
    /// browser, where adapter and device arrive through promises.
    pub async fn new_async(choice: &AdapterChoice, options: &ContextOptions) -> Result<GpuDevice> {
        let adapter = crate::adapter::pick_adapter(choice).await?;
        let desc = Self::device_descriptor(&adapter);
        let (device, queue) = adapter
            .request_device(&desc)
            .await
            .map_err(|e| Error::NoDevice { msg: format!("request_device on {}: {e}", adapter.get_info().name) })?;
        Ok(Self::from_wgpu_with(&adapter, device, queue, options))
    }

    /// The features and limits Kiln asks of `adapter` when it opens a device itself: every
    /// optional feature it uses that the adapter has (f16, subgroups, timestamps, pipeline
    /// cache, cooperative matrices) and all of the adapter's limits. An application that
    /// creates the wgpu device it later hands to [`from_wgpu`](Self::from_wgpu) (an egui or
    /// Bevy app) requests its device with this, so Kiln's kernels get what they need there too.
    pub fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
        crate::adapter::device_descriptor(adapter)
    }

    /// Wraps a device an application already owns (egui, Bevy, winit): Kiln's kernels then share
    /// its queue, and tensors can be bound in the application's own passes.
    pub fn from_wgpu(adapter: &wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> GpuDevice {
        Self::from_wgpu_with(adapter, device, queue, &ContextOptions::from_env())
    }

    /// [`from_wgpu`](Self::from_wgpu) with explicit options.
    pub fn from_wgpu_with(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: &ContextOptions,
    ) -> GpuDevice {
        let info = adapter.get_info();
        let gpu = Arc::new(Gpu::new(adapter, device, queue, options.spin, options.sync_trace));
        let pool = BufferPool::new(&gpu.limits, options.pool_limit);
        let mut cache = KernelCache::default();
        cache.writable = pool.splits();
        cache.store = options.cache_dir.as_deref().and_then(|dir| PipelineStore::open(&gpu.device, &info, dir));
        let ctx = Arc::new(GpuContext {
            pool,
            cache,
            batch: Batcher::new(Profiler::new(options.profile, gpu.features, &gpu.queue), options.early_submit),
            options: options.clone(),
            tuner: crate::autotune::Tuner::new(
                // Timing candidates needs blocking syncs, which a browser does not allow.
                options.autotune.unwrap_or(info.device_type != wgpu::DeviceType::Cpu) && !crate::platform::WEB,
                options.cache_dir.as_deref(),
                &pipeline_cache::adapter_tag(&info),
            ),
            fusion: Default::default(),
            gpu,
        });
        crate::exit::register(&ctx);
        ctx
    }

    /// The per-kernel profile table (see [`ContextOptions::profile`]); waits for recorded work.
    pub fn profile_report(&self) -> String {
        self.with_profile(|p| p.table(&self.summary.to_string())).unwrap_or_else(|| {
            format!("kiln profile: {}: off (set KILN_PROFILE=1 before the device opens)\n", self.summary.name)
        })
    }

    /// Each profiled kernel's name (as in the table) and dispatch count, by name; empty when
    /// profiling is off. Waits for recorded work.
    pub fn profile_counts(&self) -> Vec<(String, u64)> {
        self.with_profile(|p| p.counts()).unwrap_or_default()
    }

    /// Runs `f` on the profiler once every recorded dispatch has been counted and timed.
    fn with_profile<T>(&self, f: impl FnOnce(&Profiler) -> T) -> Option<T> {
        self.batch.lock().profile.as_ref()?;
        let index = self.flush().ok().flatten();
        let waiting = self.batch.lock().profile.as_ref().is_some_and(|p| p.waiting());
        if waiting && !self.is_lost() {
            self.count_sync();
            self.block_on_gpu(index);
        }
        let mut batch = self.batch.lock();
        let p = batch.profile.as_mut()?;
        p.collect();
        Some(f(p))
    }

    /// Where compiled pipelines persist, when they do.
    pub fn pipeline_cache_path(&self) -> Option<PathBuf> {
        self.cache.store.as_ref().map(|s| s.path().to_path_buf())
    }

    /// Whether this context's pipeline cache started from a valid file on disk.
    pub fn pipeline_cache_loaded(&self) -> bool {
        self.cache.store.as_ref().is_some_and(|s| s.loaded)
    }

    /// Writes the pipeline cache now if pipelines were built since it was last written.
    pub fn save_pipeline_cache(&self) {
        if let Some(store) = &self.cache.store {
            store.flush();
        }
    }

    pub(crate) fn at_exit(&self) {
        if self.options.print_profile {
            eprint!("{}", self.profile_report());
        }
        self.save_pipeline_cache();
    }

    pub fn memory_stats(&self) -> MemoryStats {
        let mut s = self.pool.stats();
        s.pipelines = self.cache.built();
        let b = self.batch.lock();
        s.submits = b.submits;
        s.bind_groups_reused = b.binds.hits;
        drop(b);
        s.syncs = self.sync_count();
        s
    }

    /// Gives the pool's free buffers back to the driver (PyTorch's `torch.cuda.empty_cache`).
    /// Tensors keep theirs; later allocations ask the driver again until the pool refills.
    pub fn empty_cache(&self) {
        self.pool.trim();
        // Cached bind groups hold their buffers: let them go now, not at the next dispatch.
        self.batch.lock().binds.clear();
    }

    /// Live buffers by the op that allocated them, at the last live-bytes peak, largest first;
    /// empty unless the process started with `KILN_MEMORY_CENSUS=1`.
    pub fn memory_census(&self) -> Vec<crate::pool::CensusEntry> {
        self.pool.census_at_peak()
    }

    /// Restarts [`MemoryStats::peak_live_bytes`] and [`MemoryStats::peak_total_bytes`] from the
    /// current bytes (PyTorch's `reset_peak_memory_stats`).
    pub fn reset_peak_memory_stats(&self) {
        self.pool.reset_peak();
    }

    /// Caps the bytes the pool holds, live plus free: an allocation that would pass `limit`
    /// first gives free buffers back to the driver, largest first, and free buffers over a new,
    /// lower limit go at once. The cap never fails an allocation: when live tensors alone need
    /// more, they get it and the pool keeps nothing free. `None` lifts the cap. Starts as
    /// [`ContextOptions::pool_limit`] (`KILN_POOL_LIMIT=<MiB>`).
    pub fn set_pool_limit(&self, limit: Option<u64>) {
        self.pool.set_limit(limit);
        self.batch.lock().binds.clear();
    }

    /// The cap [`set_pool_limit`](Self::set_pool_limit) set, if any.
    pub fn pool_limit(&self) -> Option<u64> {
        self.pool.limit()
    }

    /// Submits everything recorded so far and waits for the GPU to finish it.
    pub fn sync(&self) -> Result<()> {
        let index = self.flush()?;
        self.wait(index)
    }

    /// [`sync`](Self::sync) without blocking the calling task: resolves once the GPU has
    /// finished everything recorded so far.
    pub async fn sync_async(&self) -> Result<()> {
        let index = self.flush()?;
        self.gpu.wait_async(index).await
    }

    /// Records pending fused work, then submits everything recorded (if anything); returns the
    /// submission's index.
    pub fn flush(&self) -> Result<Option<wgpu::SubmissionIndex>> {
        self.transfer().flush()
    }

    /// Records one dispatch of `kernel` over `groups` workgroups (see `Batcher::dispatch`),
    /// after the pending fused ops, which may produce what it reads.
    pub(crate) fn dispatch(
        &self,
        op: &'static str,
        kernel: &Kernel,
        buffers: &[Span<'_>],
        meta: &[u32],
        groups: u32,
    ) -> Result<()> {
        self.flush_fusion()?;
        self.batch.dispatch(&self.gpu, &self.pool, op, kernel, buffers, meta, groups)
    }

    /// Records a copy of `bytes` from `src_offset` within `src` to `dst_offset` within `dst`, in
    /// order with the dispatches: a buffer copy, or a kernel between two blocks of one buffer
    /// (see `kernels::copy_words`).
    pub(crate) fn copy(
        &self,
        src: Span<'_>,
        src_offset: u64,
        dst: Span<'_>,
        dst_offset: u64,
        bytes: u64,
    ) -> Result<()> {
        if src.buffer == dst.buffer {
            return self.copy_within(src, src_offset, dst, dst_offset, bytes);
        }
        self.flush_fusion()?;
        self.batch.copy(&self.gpu, src, src_offset, dst, dst_offset, bytes);
        Ok(())
    }

    /// Uploads `bytes` into a fresh storage buffer.
    pub(crate) fn upload(&self, op: &'static str, bytes: &[u8]) -> Result<PooledBuffer> {
        self.transfer().upload(op, bytes)
    }

    /// Waits for all recorded work, then hands the first `bytes` bytes of `src` to `decode`
    /// straight from the mapped staging buffer.
    pub(crate) fn read_with<T>(
        &self,
        op: &'static str,
        src: Span<'_>,
        bytes: u64,
        decode: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        self.transfer().read_with(op, src, bytes, decode)
    }

    /// Like [`read_with`](Self::read_with) but resolves without blocking the calling task.
    pub(crate) async fn read_with_async<T>(
        &self,
        op: &'static str,
        src: Span<'_>,
        bytes: u64,
        decode: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        self.transfer().read_with_async(op, src, bytes, decode).await
    }

    /// The readback layer's view of this context; pending fused ops are its deferred work.
    fn transfer(&self) -> Transfer<'_, impl Fn() -> Result<()> + '_> {
        Transfer { gpu: &self.gpu, pool: &self.pool, batch: &self.batch, deferred: move || self.flush_fusion() }
    }
}

impl std::ops::Deref for GpuContext {
    type Target = Gpu;

    fn deref(&self) -> &Gpu {
        &self.gpu
    }
}

impl Drop for GpuContext {
    fn drop(&mut self) {
        if !self.is_lost() {
            self.at_exit();
        }
    }
}

/// The profile tables of every open GPU context, one after another.
pub fn profile_report_all() -> String {
    let live = crate::exit::live();
    if live.is_empty() {
        return "kiln profile: no GPU device is open\n".to_string();
    }
    live.iter().map(|c| c.profile_report()).collect::<Vec<_>>().join("\n")
}
