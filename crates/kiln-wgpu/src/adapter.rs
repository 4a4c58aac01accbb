//! Adapter choice: which of the machine's adapters Kiln opens, what it asks of it (features,
//! limits, cooperative matrices), and how it is described to the user. Nothing here holds a
//! device; `gpu.rs` wraps the one opened.

use kiln_backend::{Error, Result};

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

/// A cooperative-matrix shape the adapter runs: 16×16×16, f16 inputs, f32 accumulators, on
/// subgroups of `subgroup_size` invocations (the kernels assume a fixed size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopConfig {
    pub subgroup_size: u32,
}

/// The configuration Kiln's cooperative kernels need, if the adapter offers it. Only fixed
/// 32-wide subgroups qualify: the kernels split a workgroup into subgroups by that size.
pub(crate) fn coop_config(adapter: &wgpu::Adapter, features: wgpu::Features) -> Option<CoopConfig> {
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

/// The features and limits Kiln asks of `adapter` when it opens a device itself (see
/// [`GpuContext::device_descriptor`](crate::GpuContext::device_descriptor)).
pub(crate) fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
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
        memory_hints: memory_hints(adapter.get_info().device_type),
        trace: wgpu::Trace::Off,
    }
}

/// wgpu's allocator sub-allocates from memory blocks and frees a block once empty unless it is
/// the last of its kind. With `Performance` the first host-visible block is 64 MiB, so a 64 MiB
/// `write_buffer` (W8a) cannot share it: its staging gets a block of its own, allocated (pinned,
/// on NVIDIA) and freed on every upload. Discrete GPUs therefore ask for device blocks of
/// 256 MiB (wgpu makes host blocks half that, which such an upload fits): on an H100 that took
/// W8a from 5.2 to 6.7 GB/s up and 1.25 to 1.54 down in session 8, and 5.9 to 6.8 / 1.31 to 1.60
/// in session 9. Other adapters (integrated, software, browsers) keep wgpu's smaller blocks.
/// `KILN_MEMBLOCK_MIB=n` asks for blocks of n..2n MiB (at most 256) on any adapter; 0 means
/// wgpu's default.
fn memory_hints(device_type: wgpu::DeviceType) -> wgpu::MemoryHints {
    let env = std::env::var("KILN_MEMBLOCK_MIB").ok().and_then(|v| v.trim().parse::<u64>().ok());
    let mib = env.unwrap_or(if device_type == wgpu::DeviceType::DiscreteGpu { 256 } else { 0 });
    block_hints(mib)
}

fn block_hints(mib: u64) -> wgpu::MemoryHints {
    if mib == 0 {
        return wgpu::MemoryHints::Performance;
    }
    let n = mib.min(256) << 20;
    wgpu::MemoryHints::Manual { suballocated_device_memory_block_size: n..(2 * n).min(256 << 20) }
}

pub(crate) fn summarize(info: &wgpu::AdapterInfo) -> AdapterSummary {
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

pub(crate) async fn pick_adapter(choice: &AdapterChoice) -> Result<wgpu::Adapter> {
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
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| summarize(&a.get_info()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::block_hints;

    #[test]
    fn memory_blocks_are_capped_at_256_mib_and_zero_means_wgpus_default() {
        let range = |mib| match block_hints(mib) {
            wgpu::MemoryHints::Manual { suballocated_device_memory_block_size: r } => {
                Some((r.start >> 20, r.end >> 20))
            }
            _ => None,
        };
        assert_eq!(range(0), None);
        assert_eq!(range(64), Some((64, 128)));
        assert_eq!(range(256), Some((256, 256)));
        assert_eq!(range(4096), Some((256, 256)));
    }
}
