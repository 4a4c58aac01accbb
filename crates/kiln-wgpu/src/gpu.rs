//! The bottom of the GPU stack: one open device and its queue, what it can do (limits,
//! features, tensor-core shape), the errors wgpu reported on it, and waiting for it. Everything
//! above (pool, caches, batch, readback, kernels) takes a `&Gpu`; `GpuContext` dereferences to
//! it, so `ctx.device`, `ctx.limits` or `ctx.check(op)` read the same as before.

use crate::adapter::{AdapterSummary, CoopConfig, coop_config, summarize};
use kiln_backend::{Error, Result};
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    pub summary: AdapterSummary,
    /// The tensor-core configuration f16 matmul may use; `None` without cooperative matrices.
    pub coop: Option<CoopConfig>,
    /// How long a wait spins before it sleeps in a fence wait (see `ContextOptions::spin`).
    spin: Duration,
    /// The adapter is wgpu's GL backend: waits poll instead of blocking (see `block_on_gpu`).
    gl: bool,
    /// Print a backtrace at every host wait (`KILN_SYNC_TRACE=1`).
    sync_trace: bool,
    error: Arc<Mutex<Option<String>>>,
    lost: Arc<AtomicBool>,
    /// See [`Gpu::sync_count`].
    syncs: AtomicU64,
}

impl Gpu {
    /// Wraps an open device: installs the handlers that record wgpu's uncaptured errors and
    /// device loss for [`check`](Self::check). `spin: None` picks 2 ms on hardware adapters and
    /// none on software ones or in a browser.
    pub(crate) fn new(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        spin: Option<Duration>,
        sync_trace: bool,
    ) -> Gpu {
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
        let info = adapter.get_info();
        let features = device.features();
        Gpu {
            spin: spin.unwrap_or(if info.device_type == wgpu::DeviceType::Cpu || crate::platform::WEB {
                Duration::ZERO
            } else {
                Duration::from_millis(2)
            }),
            gl: info.backend == wgpu::Backend::Gl,
            sync_trace,
            summary: summarize(&info),
            coop: coop_config(adapter, features),
            features,
            limits: device.limits(),
            device,
            queue,
            error,
            lost,
            syncs: AtomicU64::new(0),
        }
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
        if self.sync_trace {
            eprintln!("kiln: host wait #{n} for {}\n{}", self.summary.name, std::backtrace::Backtrace::force_capture());
        }
    }

    /// Waits for submission `index` (everything submitted so far when `None`), counted as one
    /// host wait; reports errors and loss as [`check`](Self::check) does.
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

    /// The async form of [`wait`](Self::wait): resolves once the GPU has finished everything
    /// submitted so far (`index` is the last submit), without blocking the calling task.
    pub(crate) async fn wait_async(self: &Arc<Self>, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        self.count_sync();
        if self.is_lost() {
            return self.check("sync_async");
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        self.poll_in_background(index);
        if rx.await.is_err() {
            return Err(Error::DeviceLost { msg: "sync_async: the GPU never finished the submitted work".into() });
        }
        self.check("sync_async")
    }

    /// Waits until the GPU has done everything submitted so far, by non-blocking polls: spinning
    /// for at most `spin`, or (`None`, on GL) sleeping briefly between polls until it is done.
    /// Whether it finished.
    fn poll_until_done(&self, spin: Option<Duration>) -> Result<bool> {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        self.queue.on_submitted_work_done(move || flag.store(true, Ordering::Release));
        let start = std::time::Instant::now();
        loop {
            self.device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| Error::DeviceLost { msg: format!("waiting for the GPU: {e}") })?;
            if done.load(Ordering::Acquire) {
                return Ok(true);
            }
            match spin {
                Some(limit) if start.elapsed() >= limit => return Ok(false),
                Some(_) => std::hint::spin_loop(),
                None => std::thread::sleep(Duration::from_micros(200)),
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

    /// Gets the callbacks of submission `index` fired without blocking the caller: natively a
    /// helper thread does the blocking poll they fire from; a browser polls by itself.
    pub(crate) fn poll_in_background(self: &Arc<Self>, index: Option<wgpu::SubmissionIndex>) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let gpu = self.clone();
            // On GL the wait polls (see `block_on_gpu`): a blocking wait there can panic.
            std::thread::spawn(move || gpu.block_on_gpu(index));
        }
        #[cfg(target_arch = "wasm32")]
        let _ = index;
    }
}
