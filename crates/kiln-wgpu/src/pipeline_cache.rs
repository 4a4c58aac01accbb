//! Compiled pipelines persisted across runs. Where the adapter has `PIPELINE_CACHE` (Vulkan), every
//! pipeline is built through one `wgpu::PipelineCache` seeded from a file in the cache directory,
//! so a second run skips the driver's shader compilation. The file is rewritten (temp file, then
//! rename, so a reader never sees half a file) after the 16th, 32nd, 64th... pipeline, at process
//! exit and when the context drops.
//!
//! The file is Kiln's own frame around wgpu's bytes: a magic word and an FNV-1a hash of the
//! payload. wgpu checks its header (adapter, driver, ABI) but hands the body to the driver as is;
//! the hash keeps a torn or corrupted file from ever reaching the driver.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const MAGIC: &[u8; 8] = b"KILNPC01";
/// The first save happens after this many pipelines; later saves each time the count doubles.
const FIRST_SAVE: u64 = 16;

pub(crate) struct PipelineStore {
    cache: wgpu::PipelineCache,
    path: PathBuf,
    /// Pipelines built when the file was last written, and whether more were built since.
    saved_at: AtomicU64,
    dirty: AtomicBool,
    writing: Mutex<()>,
    /// Whether the cache started from bytes on disk (for diagnostics and tests).
    pub(crate) loaded: bool,
}

/// FNV-1a, 64-bit: no dependency, and enough to tell a damaged file from a good one.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The cache directory: `KILN_CACHE_DIR` (empty: no persistence), else `$XDG_CACHE_HOME/kiln`,
/// else `~/.cache/kiln`.
pub(crate) fn default_dir() -> Option<PathBuf> {
    if crate::platform::WEB {
        return None; // a browser page has no file system
    }
    if let Some(v) = std::env::var_os("KILN_CACHE_DIR") {
        return (!v.is_empty()).then(|| PathBuf::from(v));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("kiln"));
    }
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache").join("kiln"))
}

/// A file-name-safe tag for this adapter and driver (the same GPU under a new driver gets a new
/// file rather than a rejected one).
pub(crate) fn adapter_tag(info: &wgpu::AdapterInfo) -> String {
    let h = fnv1a(&[info.name.as_bytes(), info.driver.as_bytes(), info.driver_info.as_bytes(), b"wgpu30"]);
    format!("{:?}_{:x}_{:x}_{h:016x}", info.backend, info.vendor, info.device).to_lowercase()
}

fn unwrap_payload(bytes: &[u8]) -> Option<&[u8]> {
    let body = bytes.strip_prefix(MAGIC.as_slice())?;
    let (hash, payload) = body.split_at_checked(8)?;
    let intact = u64::from_le_bytes(hash.try_into().ok()?) == fnv1a(&[payload]);
    // wgpu's own header starts with this magic; anything else is not worth handing over.
    (intact && payload.starts_with(b"WGPUPLCH")).then_some(payload)
}

/// Writes `bytes` to `path` through a temp file in the same directory and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl PipelineStore {
    /// The cache for this device, seeded from `dir` when a valid file is there. `None` without the
    /// feature, on backends wgpu keeps no cache for, or when `dir` cannot be created.
    pub(crate) fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo, dir: &Path) -> Option<PipelineStore> {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let key = wgpu::util::pipeline_cache_key(info)?;
        std::fs::create_dir_all(dir).ok()?;
        let path = dir.join(format!("{key}_{}.bin", adapter_tag(info)));
        let file = std::fs::read(&path).ok();
        let payload = file.as_deref().and_then(unwrap_payload);
        let create = |data: Option<&[u8]>| {
            let (cache, error) = crate::platform::scoped(device, wgpu::ErrorFilter::Validation, || {
                // SAFETY: `data` is what `get_data` returned for an adapter with this cache key
                // and driver tag (the frame's hash proves the bytes intact); wgpu validates its
                // header and `fallback` makes it start empty when the header does not match.
                unsafe {
                    device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                        label: Some("kiln-pipelines"),
                        data,
                        fallback: true,
                    })
                }
            });
            (cache, error.is_some())
        };
        let (mut cache, failed) = create(payload);
        if failed {
            // wgpu refuses data of another device even with `fallback`: start empty instead.
            cache = create(None).0;
        }
        let loaded = payload.is_some() && !failed;
        Some(PipelineStore {
            cache,
            path,
            saved_at: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            writing: Mutex::new(()),
            loaded,
        })
    }

    pub(crate) fn cache(&self) -> &wgpu::PipelineCache {
        &self.cache
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Called after each pipeline build with the number built so far.
    pub(crate) fn built(&self, count: u64) {
        self.dirty.store(true, Ordering::Relaxed);
        let last = self.saved_at.load(Ordering::Relaxed);
        if count >= FIRST_SAVE && count >= last * 2 {
            self.save(count);
        }
    }

    /// Writes the cache if anything was built since the last write (process exit, context drop).
    pub(crate) fn flush(&self) {
        if self.dirty.load(Ordering::Relaxed) {
            self.save(self.saved_at.load(Ordering::Relaxed));
        }
    }

    /// Failures (read-only directory, full disk) only cost the next run its head start.
    fn save(&self, count: u64) {
        let _guard = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.dirty.store(false, Ordering::Relaxed);
        self.saved_at.store(count.max(1), Ordering::Relaxed);
        let Some(data) = self.cache.get_data() else { return };
        let mut file = Vec::with_capacity(data.len() + 16);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&fnv1a(&[&data]).to_le_bytes());
        file.extend_from_slice(&data);
        if let Err(e) = write_atomic(&self.path, &file)
            && std::env::var_os("KILN_DEBUG").is_some()
        {
            eprintln!("kiln: not saving the pipeline cache to {}: {e}", self.path.display());
        }
    }
}
