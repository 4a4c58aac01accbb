//! Where tensors live: the CPU backend or a GPU adapter, chosen explicitly and printably.

use kiln_backend::{Error, Result};
use kiln_wgpu::context::AdapterChoice;
use kiln_wgpu::{GpuContext, GpuDevice, MemoryStats};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A compute device. Cheap to clone; GPU devices opened through [`Device::gpu`] or
/// [`Device::best`] are shared process-wide.
#[derive(Clone)]
pub enum Device {
    Cpu,
    Gpu(GpuDevice),
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Gpu(a), Device::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The per-kernel GPU profile of every open GPU device, as printed at exit under
/// `KILN_PROFILE=1` (see [`Device::profile_report`] for one device).
pub fn profile_report() -> String {
    kiln_wgpu::profile_report_all()
}

/// The GPU devices opened so far, one per adapter choice, shared process-wide.
fn opened() -> &'static Mutex<HashMap<String, GpuDevice>> {
    static OPEN: OnceLock<Mutex<HashMap<String, GpuDevice>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

fn open(choice: AdapterChoice) -> Result<Device> {
    let key = format!("{choice:?}");
    let mut open = opened().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = open.get(&key) {
        return Ok(Device::Gpu(d.clone()));
    }
    let dev = GpuContext::new(&choice)?;
    open.insert(key, dev.clone());
    Ok(Device::Gpu(dev))
}

/// [`open`] without blocking. The lock is not held across the wait (a browser has one thread,
/// and a native caller may hold others); a device opened meanwhile by another caller wins.
async fn open_async(choice: AdapterChoice) -> Result<Device> {
    let key = format!("{choice:?}");
    if let Some(d) = opened().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Device::Gpu(d.clone()));
    }
    let dev = GpuContext::new_async(&choice, &kiln_wgpu::ContextOptions::from_env()).await?;
    let mut open = opened().lock().unwrap_or_else(|e| e.into_inner());
    Ok(Device::Gpu(open.entry(key).or_insert(dev).clone()))
}

/// Parses a `KILN_DEVICE` value: `cpu`, `gpu`, a backend name, or part of an adapter's name.
fn choice_from(value: &str) -> Option<AdapterChoice> {
    AdapterChoice::parse(value)
}

impl Device {
    /// The CPU backend: the reference semantics of every op, and the fallback without a GPU.
    ///
    /// ```
    /// let cpu = kiln_core::Device::cpu();
    /// assert!(cpu.is_cpu());
    /// ```
    pub fn cpu() -> Device {
        Device::Cpu
    }

    /// The first suitable GPU adapter (software adapters such as lavapipe included), or the one
    /// `KILN_DEVICE` names. Errors when there is none.
    pub fn gpu() -> Result<Device> {
        match std::env::var("KILN_DEVICE").ok().and_then(|v| choice_from(&v)) {
            Some(choice) => open(choice),
            None => open(AdapterChoice::Any),
        }
    }

    /// [`Device::gpu`] without blocking: the way to open the GPU in a browser (wasm32 on WebGPU),
    /// where `Device::gpu()` returns `Error::WouldBlock` until this has opened the device (then
    /// both return the same shared device). Works natively too. Without WebGPU in the browser
    /// the error says so; [`Device::cpu`] still works there.
    pub async fn gpu_async() -> Result<Device> {
        match std::env::var("KILN_DEVICE").ok().and_then(|v| choice_from(&v)) {
            Some(choice) => open_async(choice).await,
            None => open_async(AdapterChoice::Any).await,
        }
    }

    /// [`Device::best`] without blocking. In a browser: the WebGPU adapter, whatever its kind
    /// (a software one such as SwiftShader included: it beats the single-threaded CPU backend
    /// there), else the CPU backend. Natively: a hardware GPU, else the CPU backend.
    pub async fn best_async() -> Device {
        let choice = match std::env::var("KILN_DEVICE") {
            Ok(v) => match choice_from(&v) {
                None => return Device::Cpu,
                Some(c) => c,
            },
            Err(_) if cfg!(target_arch = "wasm32") => AdapterChoice::Any,
            Err(_) => AdapterChoice::Hardware,
        };
        open_async(choice).await.unwrap_or(Device::Cpu)
    }

    /// A GPU adapter chosen by [`AdapterChoice`] semantics: `"vulkan"`, `"gl"`, a name fragment...
    pub fn gpu_named(selector: &str) -> Result<Device> {
        match choice_from(selector) {
            Some(c) => open(c),
            None => Err(Error::invalid("Device::gpu_named", format!("{selector:?} names the CPU, not a GPU"))),
        }
    }

    /// A GPU device of its own on the adapter `selector` names (as [`Device::parse`] reads it:
    /// `gpu`, `vulkan`, `gpu:1`, part of a name), not shared with [`Device::gpu`] or other
    /// calls: each call opens a new wgpu device with its own queue, pool and caches. For one
    /// model replica per device in one process, also on a single adapter (two devices on
    /// lavapipe in tests). Ignores `KILN_DEVICE`.
    pub fn open_gpu(selector: &str) -> Result<Device> {
        match choice_from(selector) {
            Some(c) => Ok(Device::Gpu(GpuContext::new(&c)?)),
            None => Err(Error::invalid("Device::open_gpu", format!("{selector:?} names the CPU, not a GPU"))),
        }
    }

    /// What a user wants by default: a hardware GPU, else the CPU backend (with a one-line
    /// note on stderr). A software adapter is used only when asked for by name, because the
    /// native CPU backend beats it. `KILN_DEVICE` overrides.
    pub fn best() -> Device {
        if let Ok(v) = std::env::var("KILN_DEVICE") {
            match choice_from(&v) {
                None => return Device::Cpu,
                Some(choice) => match open(choice) {
                    Ok(d) => return d,
                    Err(e) => eprintln!("kiln: KILN_DEVICE={v}: {e}; using the CPU backend"),
                },
            }
            return Device::Cpu;
        }
        match open(AdapterChoice::Hardware) {
            Ok(d) => d,
            Err(_) => {
                eprintln!("kiln: no hardware GPU adapter found; using the CPU backend");
                Device::Cpu
            }
        }
    }

    /// Picks from a command-line style word: `best`, `cpu`, `gpu`, a backend or an adapter name.
    pub fn parse(word: &str) -> Result<Device> {
        match word.trim().to_lowercase().as_str() {
            "best" | "auto" => Ok(Device::best()),
            "cpu" => Ok(Device::Cpu),
            other => Device::gpu_named(other),
        }
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    /// Adapter name, backend, driver and device type (or "cpu").
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => format!(
                "cpu (kiln-cpu reference backend, {} threads)",
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
            ),
            Device::Gpu(g) => format!("gpu: {}", g.summary),
        }
    }

    /// Bytes live and pooled on this device (zeros on the CPU).
    pub fn memory_stats(&self) -> MemoryStats {
        match self {
            Device::Cpu => MemoryStats::default(),
            Device::Gpu(g) => g.memory_stats(),
        }
    }

    /// How many times the host has waited for this device: every `sync()` and every readback
    /// (`item`, `to_vec`, `to_vec_async`, ...). A training step that reads no value adds none,
    /// so the difference around a step shows whether it stalls the GPU. The CPU backend never
    /// waits: 0.
    ///
    /// ```
    /// assert_eq!(kiln_core::Device::cpu().sync_count(), 0);
    /// ```
    pub fn sync_count(&self) -> u64 {
        match self {
            Device::Cpu => 0,
            Device::Gpu(g) => g.sync_count(),
        }
    }

    /// Gives the buffer pool's free buffers back to the driver, like `torch.cuda.empty_cache()`;
    /// tensors keep their memory. A no-op on the CPU.
    pub fn empty_cache(&self) {
        if let Device::Gpu(g) = self {
            g.empty_cache();
        }
    }

    /// Restarts the peaks of [`memory_stats`](Self::memory_stats) (`peak_live_bytes`,
    /// `peak_total_bytes`) from the current bytes, like `torch.cuda.reset_peak_memory_stats()`.
    /// Where the GPU's live bytes were at their last peak: `(op that allocated, buffers,
    /// bytes)`, largest first. Empty on the CPU and unless the process started with
    /// `KILN_MEMORY_CENSUS=1` (the count costs a map update per buffer).
    pub fn memory_census(&self) -> Vec<(&'static str, u64, u64)> {
        match self {
            Device::Cpu => Vec::new(),
            Device::Gpu(g) => g.memory_census().into_iter().map(|e| (e.op, e.buffers, e.bytes)).collect(),
        }
    }

    pub fn reset_peak_memory_stats(&self) {
        if let Device::Gpu(g) = self {
            g.reset_peak_memory_stats();
        }
    }

    /// Caps the bytes the GPU buffer pool holds, live plus free (`None`: no cap; the default
    /// comes from `KILN_POOL_LIMIT=<MiB>`). Before an allocation would pass the cap, free
    /// buffers go back to the driver, largest first; the cap never fails an allocation that
    /// live tensors need. A no-op on the CPU.
    ///
    /// ```
    /// let device = kiln_core::Device::cpu();
    /// device.set_pool_limit(Some(512 << 20));
    /// assert_eq!(device.pool_limit(), None); // the CPU backend has no pool
    /// ```
    pub fn set_pool_limit(&self, bytes: Option<u64>) {
        if let Device::Gpu(g) = self {
            g.set_pool_limit(bytes);
        }
    }

    /// The cap [`set_pool_limit`](Self::set_pool_limit) set; `None` on the CPU.
    pub fn pool_limit(&self) -> Option<u64> {
        match self {
            Device::Cpu => None,
            Device::Gpu(g) => g.pool_limit(),
        }
    }

    /// The per-kernel GPU time table of this device (`KILN_PROFILE=1` when it opened): kernel,
    /// count, total and mean GPU time, share. Waits for recorded work.
    ///
    /// ```
    /// let table = kiln_core::Device::cpu().profile_report();
    /// assert!(table.contains("CPU backend is not profiled"));
    /// assert!(kiln_core::profile_report().starts_with("kiln profile"));
    /// ```
    pub fn profile_report(&self) -> String {
        match self {
            Device::Cpu => "kiln profile: the CPU backend is not profiled\n".to_string(),
            Device::Gpu(g) => g.profile_report(),
        }
    }

    /// Submits recorded GPU work and waits for it. In a browser this would block the page:
    /// it returns `Error::WouldBlock` there; use [`sync_async`](Self::sync_async).
    pub fn sync(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(g) => g.sync(),
        }
    }

    /// Submits recorded GPU work and resolves once the GPU has finished it, without blocking
    /// the calling task (the form of [`sync`](Self::sync) a browser allows).
    pub async fn sync_async(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(g) => g.sync_async().await,
        }
    }

    /// Destroys a GPU device, as a driver reset would: later ops and readbacks on it return
    /// `Error::DeviceLost`. For testing recovery paths; a no-op on the CPU.
    pub fn destroy(&self) {
        if let Device::Gpu(g) = self {
            g.destroy();
        }
    }

    /// The wgpu context behind a GPU device, for interop (binding tensors in your own passes).
    pub fn gpu_context(&self) -> Option<&GpuDevice> {
        match self {
            Device::Gpu(g) => Some(g),
            Device::Cpu => None,
        }
    }

    /// A Kiln device on an application's own wgpu device and queue (egui, Bevy, winit).
    /// Create that device with [`Device::wgpu_device_descriptor`] so that it has the features
    /// and limits Kiln's kernels use; Kiln works with what the device has.
    pub fn from_wgpu(adapter: &wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> Device {
        Device::Gpu(GpuContext::from_wgpu(adapter, device, queue))
    }

    /// The descriptor Kiln requests a device with on `adapter` (its optional features and all
    /// the adapter's limits), for an application that creates the wgpu device itself and then
    /// shares it through [`Device::from_wgpu`], e.g. eframe's `WgpuSetupCreateNew::device_descriptor`.
    pub fn wgpu_device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
        GpuContext::device_descriptor(adapter)
    }

    /// A short name: `cpu` or `gpu(<adapter>)`.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Gpu(g) => format!("gpu({})", g.summary.name),
        }
    }
}
