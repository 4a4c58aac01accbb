//! The GPU device: adapter choice, device creation with the adapter's real limits, error capture.

use crate::pipeline_cache::{self, PipelineStore};
use crate::profile::{ProfileMode, Profiler};
use crate::{batch::Batch, cache::KernelCache, pool::BufferPool};
use kiln_backend::{Error, Result};
use std::path::PathBuf;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

/// A shared handle to one GPU context; what `kiln-core`'s `Device::gpu()` holds.
pub type GpuDevice = Arc<GpuContext>;

/// How to pick an adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdapterChoice {
    /// The best adapter of any kind, software included (a hardware one wins when present).
    Any,
    /// Hardware only: software rasterisers such as lavapipe are skipped.
    Hardware,
    /// Adapters of these backends only (`vulkan`, `metal`, `dx12`, `gl`).
    Backend(wgpu::Backends),
    /// The first adapter whose name contains this text (case-insensitive).
    Name(String),
    /// Adapter `i` (modulo their count) among those as preferred as the best one: the same
    /// kind and backend class, e.g. every discrete GPU through Vulkan. How one process per GPU
    /// picks its own (`KILN_DEVICE=gpu:<local rank>`); more processes than GPUs share them
    /// round-robin.
    Index(usize),
}

impl AdapterChoice {
    /// Reads a device word as `KILN_DEVICE` takes it: `gpu` (or empty), a backend (`vulkan`,
    /// `metal`, `dx12`, `gl`), `gpu:<i>`, or part of an adapter's name; `None` for `cpu`.
    pub fn parse(value: &str) -> Option<AdapterChoice> {
        let v = value.trim().to_lowercase();
        Some(match v.as_str() {
            "cpu" => return None,
            "gpu" | "" => AdapterChoice::Any,
            "vulkan" => AdapterChoice::Backend(wgpu::Backends::VULKAN),
            "metal" => AdapterChoice::Backend(wgpu::Backends::METAL),
            "dx12" => AdapterChoice::Backend(wgpu::Backends::DX12),
            "gl" => AdapterChoice::Backend(wgpu::Backends::GL),
            _ => match v.strip_prefix("gpu:").map(str::parse::<usize>) {
                Some(Ok(i)) => AdapterChoice::Index(i),
                _ => AdapterChoice::Name(v),
            },
        })
    }

    /// The adapter `KILN_DEVICE` names, for tests that must follow it (the GL run in CI);
    /// [`Any`](Self::Any) when it is unset or names the CPU.
    pub fn from_env() -> AdapterChoice {
        std::env::var("KILN_DEVICE").ok().and_then(|v| Self::parse(&v)).unwrap_or(AdapterChoice::Any)
    }
}

/// What the user sees of an adapter: `device.describe()`.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub driver: String,
    pub device_type: String,
    pub software: bool,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        // A browser tells no driver.
        if !self.driver.is_empty() {
            write!(f, ", driver {}", self.driver)?;
        }
        f.write_str(")")
    }
}

/// Bytes held by the pool: `live` in tensors, `pooled` in free lists, `allocations` made so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub live_bytes: u64,
    pub pooled_bytes: u64,
    pub allocations: u64,
    /// The most `live_bytes` since the device opened or the last
    /// [`GpuContext::reset_peak_memory_stats`] (PyTorch's `max_memory_allocated`).
    pub peak_live_bytes: u64,
    /// The most `live_bytes + pooled_bytes` over the same span: every buffer the pool held from
    /// the driver (PyTorch's `max_memory_reserved`).
    pub peak_total_bytes: u64,
    pub pipelines: u64,
    pub submits: u64,
    /// Dispatches that reused a cached bind group instead of creating one.
    pub bind_groups_reused: u64,
    /// Times the host waited for the GPU (see [`GpuContext::sync_count`]).
    pub syncs: u64,
}

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
    /// makes a loop wait for the GPU (see [`GpuContext::sync_count`]).
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
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    pub summary: AdapterSummary,
    /// The tensor-core configuration f16 matmul may use; `None` without cooperative matrices.
    pub coop: Option<CoopConfig>,
    pub(crate) pool: BufferPool,
    pub(crate) cache: KernelCache,
    pub(crate) batch: Mutex<Batch>,
    pub(crate) options: ContextOptions,
    pub(crate) tuner: crate::autotune::Tuner,
    /// Elementwise ops recorded but not dispatched yet (see `fusion`).
    pub(crate) fusion: crate::fusion::Fusion,
    /// See [`ContextOptions::spin`].
    spin: std::time::Duration,
    /// The adapter is wgpu's GL backend: waits poll instead of blocking (see `block_on_gpu`).
    gl: bool,
    error: Arc<Mutex<Option<String>>>,
    lost: Arc<AtomicBool>,
    /// See [`GpuContext::sync_count`].
    syncs: AtomicU64,
}

/// A cooperative-matrix shape the adapter runs: 16×16×16, f16 inputs, f32 accumulators, on
/// subgroups of `subgroup_size` invocations (the kernels assume a fixed size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopConfig {
    pub subgroup_size: u32,
}

/// The configuration Kiln's cooperative kernels need, if the adapter offers it. Only fixed
/// 32-wide subgroups qualify: the kernels split a workgroup into subgroups by that size.
fn coop_config(adapter: &wgpu::Adapter, features: wgpu::Features) -> Option<CoopConfig> {
    let needed =
        wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16;
    let info = adapter.get_info();
    if !features.contains(needed) || info.subgroup_min_size != 32 || info.subgroup_max_size != 32 {
        return None;
    }
    use wgpu::CooperativeScalarType as S;
    adapter
        .cooperative_matrix_properties()
        .iter()
        .any(|p| (p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type) == (16, 16, 16, S::F16, S::F32))
        .then_some(CoopConfig { subgroup_size: 32 })
}

/// Optional features Kiln uses when the adapter has them.
const WANTED: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::PIPELINE_CACHE);

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
        let adapter = pick_adapter(choice).await?;
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
        let mut features = adapter.features() & WANTED;
        let coop = coop_config(adapter, adapter.features()).is_some();
        if coop {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        // The defaults are far below what real adapters offer (e.g. 128 MiB bindings): ask for all of it.
        let limits = adapter.limits();
        wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: features,
            required_limits: limits,
            // SAFETY: wgpu's condition for experimental features is that the caller accepts
            // their unfinished validation; only the cooperative-matrix kernels use them.
            experimental_features: if coop {
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }
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
        let error = Arc::new(Mutex::new(None::<String>));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut s) = slot.lock() {
                s.get_or_insert_with(|| e.to_string());
            }
        }));
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |_reason, _msg| flag.store(true, Ordering::SeqCst));
        let limits = device.limits();
        let features = device.features();
        let info = adapter.get_info();
        let store = options.cache_dir.as_deref().and_then(|dir| PipelineStore::open(&device, &info, dir));
        let mut batch = Batch::default();
        batch.profile = Profiler::new(options.profile, features, &queue);
        let mut cache = KernelCache::default();
        cache.store = store;
        let ctx = Arc::new(GpuContext {
            pool: BufferPool::new(&limits, options.pool_limit),
            cache,
            batch: Mutex::new(batch),
            options: options.clone(),
            tuner: crate::autotune::Tuner::new(
                // Timing candidates needs blocking syncs, which a browser does not allow.
                options.autotune.unwrap_or(info.device_type != wgpu::DeviceType::Cpu) && !crate::platform::WEB,
                options.cache_dir.as_deref(),
                &pipeline_cache::adapter_tag(&info),
            ),
            fusion: Default::default(),
            spin: options.spin.unwrap_or(if info.device_type == wgpu::DeviceType::Cpu || crate::platform::WEB {
                std::time::Duration::ZERO
            } else {
                std::time::Duration::from_millis(2)
            }),
            gl: info.backend == wgpu::Backend::Gl,
            summary: summarize(&adapter.get_info()),
            coop: coop_config(adapter, features),
            features,
            limits,
            device,
            queue,
            error,
            lost,
            syncs: AtomicU64::new(0),
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
        self.batch.lock().unwrap_or_else(|e| e.into_inner()).profile.as_ref()?;
        let index = self.flush().ok().flatten();
        let waiting = self.batch.lock().unwrap_or_else(|e| e.into_inner()).profile.as_ref().is_some_and(|p| p.waiting());
        if waiting && !self.is_lost() {
            self.count_sync();
            self.block_on_gpu(index);
        }
        let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Whether float matmuls are autotuned on this context.
    pub fn autotune_enabled(&self) -> bool {
        self.tuner.enabled
    }

    /// Shape classes the matmul autotuner has a choice for (loaded or tuned).
    pub fn autotuned_classes(&self) -> usize {
        self.tuner.len()
    }

    /// How many tile configurations the matmul autotuner chooses from on this adapter.
    pub fn matmul_candidates(&self) -> usize {
        crate::kernels::matmul::candidate_count(self)
    }

    /// How many blocks the f16 cooperative-matrix matmul's autotuner chooses from (see
    /// [`force_coop_candidate`](Self::force_coop_candidate)); they run only where the adapter
    /// has cooperative matrices.
    pub fn coop_candidates(&self) -> usize {
        crate::kernels::matmul_coop::candidate_count()
    }

    /// Makes every float tiled matmul take candidate `index` (`None`: back to normal), so that
    /// tests can check each configuration against the CPU.
    #[doc(hidden)]
    pub fn force_matmul_candidate(&self, index: Option<usize>) {
        self.tuner.force(index);
    }

    pub(crate) fn at_exit(&self) {
        if self.options.print_profile {
            eprint!("{}", self.profile_report());
        }
        self.save_pipeline_cache();
    }

    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Errors wgpu reported since the last check, and device loss, as a Kiln error.
    pub fn check(&self, op: &'static str) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::DeviceLost { msg: format!("{op}: the GPU device was lost") });
        }
        let pending = self.error.lock().ok().and_then(|mut e| e.take());
        match pending {
            Some(msg) if msg.to_lowercase().contains("out of memory") => Err(Error::OutOfMemory { op, msg }),
            Some(msg) => Err(Error::Backend { op, msg }),
            None => Ok(()),
        }
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Marks the device lost and destroys it (tests use this to simulate a GPU reset).
    pub fn destroy(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.device.destroy();
    }

    pub fn memory_stats(&self) -> MemoryStats {
        let mut s = self.pool.stats();
        s.pipelines = self.cache.built();
        if let Ok(b) = self.batch.lock() {
            s.submits = b.submits;
            s.bind_groups_reused = b.binds.hits;
        }
        s.syncs = self.sync_count();
        s
    }

    /// How many times the host has waited for this GPU so far: every `sync()`, every
    /// readback (blocking or async: `item`, `to_vec`, `to_vec_async`) and every wait for the
    /// profiler's timestamps. A training step that reads no value should add none; tests count
    /// with it (`tests/syncs.rs`). Submits and non-blocking polls are not waits.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Counts one host wait (see [`sync_count`](Self::sync_count)).
    pub(crate) fn count_sync(&self) {
        let n = self.syncs.fetch_add(1, Ordering::Relaxed) + 1;
        if self.options.sync_trace {
            eprintln!("kiln: host wait #{n} for {}\n{}", self.summary.name, std::backtrace::Backtrace::force_capture());
        }
    }

    /// Gives the pool's free buffers back to the driver (PyTorch's `torch.cuda.empty_cache`).
    /// Tensors keep theirs; later allocations ask the driver again until the pool refills.
    pub fn empty_cache(&self) {
        self.pool.trim();
        // Cached bind groups hold their buffers: let them go now, not at the next dispatch.
        if let Ok(mut b) = self.batch.lock() {
            b.binds.clear();
        }
    }

    /// Restarts [`MemoryStats::peak_live_bytes`] and [`MemoryStats::peak_total_bytes`] from the
    /// current bytes (PyTorch's `reset_peak_memory_stats`).
    /// Live buffers by the op that allocated them, at the last live-bytes peak, largest first;
    /// empty unless the process started with `KILN_MEMORY_CENSUS=1`.
    pub fn memory_census(&self) -> Vec<crate::pool::CensusEntry> {
        self.pool.census_at_peak()
    }

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
        if let Ok(mut b) = self.batch.lock() {
            b.binds.clear();
        }
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

    pub(crate) fn wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        crate::platform::refuse_blocking("sync", "sync_async")?;
        self.count_sync();
        if self.is_lost() {
            return self.check("sync");
        }
        // A blocking fence wait sleeps in the driver, and on NVIDIA's Vulkan driver waking up
        // costs tens of µs per sync: more than a small kernel runs. Short waits spin instead.
        // GL never blocks in wgpu (see `block_on_gpu`).
        if self.gl {
            self.poll_until_done(None)?;
            return self.check("sync");
        }
        if !self.spin.is_zero() && self.poll_until_done(Some(self.spin))? {
            return self.check("sync");
        }
        self.device
            .poll(wgpu::PollType::Wait { submission_index: index, timeout: None })
            .map_err(|e| Error::DeviceLost { msg: format!("waiting for the GPU: {e}") })?;
        self.check("sync")
    }

    /// Waits until the GPU has done everything submitted so far, by non-blocking polls: spinning
    /// for at most `spin`, or (`None`, on GL) sleeping briefly between polls until it is done.
    /// Whether it finished.
    fn poll_until_done(&self, spin: Option<std::time::Duration>) -> Result<bool> {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        self.queue.on_submitted_work_done(move || flag.store(true, Ordering::Release));
        let start = std::time::Instant::now();
        loop {
            self.device.poll(wgpu::PollType::Poll).map_err(|e| Error::DeviceLost { msg: format!("waiting for the GPU: {e}") })?;
            if done.load(Ordering::Acquire) {
                return Ok(true);
            }
            match spin {
                Some(limit) if start.elapsed() >= limit => return Ok(false),
                Some(_) => std::hint::spin_loop(),
                None => std::thread::sleep(std::time::Duration::from_micros(200)),
            }
        }
    }

    /// A wait for submission `index` whose outcome the caller reads elsewhere (map callbacks,
    /// timestamps). On GL it polls instead of blocking: wgpu's GL backend holds its one context
    /// lock through a blocking fence wait, and another thread that waits 6 s for that lock
    /// panics ("Could not lock adapter context"), which threads sharing a device on a slow GL
    /// adapter (llvmpipe) hit.
    pub(crate) fn block_on_gpu(&self, index: Option<wgpu::SubmissionIndex>) {
        if self.gl {
            let _ = self.poll_until_done(None);
        } else {
            let _ = self.device.poll(wgpu::PollType::Wait { submission_index: index, timeout: None });
        }
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

fn summarize(info: &wgpu::AdapterInfo) -> AdapterSummary {
    AdapterSummary {
        // Browsers may withhold the adapter's name (Chromium's SwiftShader gives none).
        name: if info.name.is_empty() { "unnamed adapter".to_string() } else { info.name.clone() },
        backend: format!("{:?}", info.backend).to_lowercase(),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        device_type: format!("{:?}", info.device_type),
        software: info.device_type == wgpu::DeviceType::Cpu,
    }
}

fn rank(info: &wgpu::AdapterInfo) -> u32 {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    // Compute wants the native APIs; GL lacks f16 and subgroups.
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    ty * 2 + backend
}

async fn pick_adapter(choice: &AdapterChoice) -> Result<wgpu::Adapter> {
    let backends = match choice {
        AdapterChoice::Backend(b) => *b,
        _ => wgpu::Backends::all(),
    };
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        flags: wgpu::InstanceFlags::empty().with_env(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let mut adapters = instance.enumerate_adapters(backends).await;
    adapters.retain(|a| {
        let info = a.get_info();
        match choice {
            AdapterChoice::Hardware => info.device_type != wgpu::DeviceType::Cpu,
            AdapterChoice::Name(n) => info.name.to_lowercase().contains(&n.to_lowercase()),
            _ => true,
        }
    });
    adapters.sort_by_key(|a| rank(&a.get_info()));
    if let AdapterChoice::Index(i) = choice
        && let Some(best) = adapters.first().map(|a| rank(&a.get_info()))
    {
        adapters.retain(|a| rank(&a.get_info()) == best);
        let n = adapters.len();
        return Ok(adapters.swap_remove(i % n));
    }
    adapters.into_iter().next().ok_or_else(|| Error::NoDevice {
        msg: if crate::platform::WEB {
            format!(
                "no WebGPU adapter matches {choice:?}: this browser has no WebGPU (navigator.gpu) or \
                 gave no adapter (headless Chromium needs --enable-unsafe-webgpu); use Device::cpu()"
            )
        } else {
            format!(
                "no GPU adapter matches {choice:?} (on Linux without a GPU, install Mesa's lavapipe: \
                 apt-get install mesa-vulkan-drivers libvulkan1)"
            )
        },
    })
}

/// Lists every adapter wgpu can see, for diagnostics (blocks: empty in a browser).
pub fn list_adapters() -> Vec<AdapterSummary> {
    if crate::platform::WEB {
        return Vec::new();
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all())).iter().map(|a| summarize(&a.get_info())).collect()
}
