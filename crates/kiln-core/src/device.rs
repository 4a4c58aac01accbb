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

fn open(choice: AdapterChoice) -> Result<Device> {
    static OPEN: OnceLock<Mutex<HashMap<String, GpuDevice>>> = OnceLock::new();
    let key = format!("{choice:?}");
    let mut open = OPEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = open.get(&key) {
        return Ok(Device::Gpu(d.clone()));
    }
    let dev = GpuContext::new(&choice)?;
    open.insert(key, dev.clone());
    Ok(Device::Gpu(dev))
}

/// Parses a `KILN_DEVICE` value: `cpu`, `gpu`, a backend name, or part of an adapter's name.
fn choice_from(value: &str) -> Option<AdapterChoice> {
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
            Device::Cpu => format!("cpu (kiln-cpu reference backend, {} threads)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
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

    /// Submits recorded GPU work and waits for it.
    pub fn sync(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(g) => g.sync(),
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
