//! Batched dispatch. Ops are recorded into one shared command encoder and submitted together:
//! on readback, on `sync`, or once a batch holds `MAX_DISPATCHES`. Each dispatch's small
//! metadata (shapes, strides, scalars) is appended to a host-side arena that is written to one
//! GPU buffer just before the submit, so recording an op never waits for the GPU. Consecutive
//! dispatches share one compute pass (wgpu still orders them by their buffer uses): opening a
//! pass per dispatch cost ~20 µs each on an H200, a shared pass a few µs.
//!
//! The batch knows nothing of fusion: the context records pending elementwise work before it
//! calls in here (`GpuContext::dispatch`, `copy`, `flush`).

use crate::{cache::Kernel, gpu::Gpu, pool::BufferPool, pool::Span};
use kiln_backend::{Error, Result};
use std::sync::{Mutex, MutexGuard};

const MAX_DISPATCHES: usize = 512;
/// With early submission on, every this many dispatches a batch goes to the GPU at once if the
/// GPU has nothing left to run: otherwise it idles while the host records the rest of a step
/// (a whole MLP step, or 512 dispatches of a transformer's).
const EARLY: usize = 16;
const ARENA_WORDS: usize = 1 << 18;
/// At most this many submits may be unfinished before the next submit waits for the oldest.
/// Without a bound a host faster than its GPU records steps ahead without limit, and every
/// buffer dropped meanwhile stays allocated until the GPU reaches it: a 56 ms/step loop whose
/// host needs 20 ms ran out of an H100's 80 GB after ~120 steps. CUDA bounds its launch queue
/// the same way. Eight full batches are several training steps, enough to keep the GPU fed.
const MAX_AHEAD: usize = 8;

#[derive(Default)]
pub(crate) struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    /// The open compute pass; ended before a copy or a submit.
    pass: Option<wgpu::ComputePass<'static>>,
    meta: Vec<u32>,
    /// What the arena holds since the last write: a batch whose metadata is the same (a loop
    /// repeating one step) skips the write, which costs more than a small kernel.
    written: Vec<u32>,
    arena: Option<wgpu::Buffer>,
    dispatches: usize,
    pub(crate) submits: u64,
    /// Submits the GPU has not finished (as far as the last poll saw).
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The last `MAX_AHEAD` submits, oldest first.
    recent: std::collections::VecDeque<wgpu::SubmissionIndex>,
    /// Times a submit waited because `MAX_AHEAD` submits were unfinished.
    pub(crate) throttles: u64,
    /// Per-kernel timing (`KILN_PROFILE`); `None` costs one branch per dispatch.
    pub(crate) profile: Option<crate::profile::Profiler>,
    /// Bind groups of kernels with a dynamic metadata offset, reused across dispatches.
    pub(crate) binds: crate::bind_cache::BindCache,
}

/// Splits a 1-D workgroup count into a grid within the 65,535-per-dimension limit; kernels
/// rebuild the linear id as `wid.x + wid.y * nwg.x`.
pub(crate) fn grid(groups: u32) -> (u32, u32) {
    let x = groups.clamp(1, 65_535);
    (x, groups.div_ceil(x).max(1))
}

/// The recording state of one device, behind its lock, and the submit policy.
pub(crate) struct Batcher {
    state: Mutex<Batch>,
    /// See `ContextOptions::early_submit`.
    early_submit: bool,
}

impl Batcher {
    pub(crate) fn new(profile: Option<crate::profile::Profiler>, early_submit: bool) -> Batcher {
        Batcher { state: Mutex::new(Batch { profile, ..Batch::default() }), early_submit }
    }

    /// The batch, also after a panic elsewhere poisoned its lock (the state stays consistent:
    /// every change to it is a single field update or a whole submit).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Batch> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one dispatch of `kernel` over `groups` workgroups. Binding 0 is the metadata
    /// (`meta` as `array<u32>`), bindings 1.. are `buffers` in order.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch(
        &self,
        gpu: &Gpu,
        pool: &BufferPool,
        op: &'static str,
        kernel: &Kernel,
        buffers: &[Span<'_>],
        meta: &[u32],
        groups: u32,
    ) -> Result<()> {
        if gpu.is_lost() {
            return gpu.check(op);
        }
        if groups == 0 {
            return Ok(());
        }
        let max_binding = gpu.limits.max_storage_buffer_binding_size;
        if let Some(b) = buffers.iter().find(|b| b.size > max_binding) {
            return Err(Error::OutOfMemory {
                op,
                msg: format!(
                    "a tensor of {} bytes exceeds this adapter's max_storage_buffer_binding_size of {max_binding} bytes \
                     (elementwise ops, reductions and matmul split such tensors; this op does not)",
                    b.size
                ),
            });
        }
        let align = (gpu.limits.min_storage_buffer_offset_alignment as usize / 4).max(1);
        let words = meta.len().max(4);
        if words > ARENA_WORDS {
            return Err(Error::invalid(op, "kernel metadata too large"));
        }
        let mut batch = self.lock();
        if batch.profile.as_ref().is_some_and(|p| p.full()) {
            submit_locked(gpu, &mut batch);
        }
        if batch.meta.len().next_multiple_of(align) + words > ARENA_WORDS {
            submit_locked(gpu, &mut batch);
        }
        let start = batch.meta.len().next_multiple_of(align);
        batch.meta.resize(start, 0);
        batch.meta.extend_from_slice(meta);
        batch.meta.resize(start + words, 0);
        let arena = batch
            .arena
            .get_or_insert_with(|| {
                gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln-meta"),
                    // A cached bind group sees META_WINDOW bytes from any dispatch's offset.
                    size: (ARENA_WORDS * 4) as u64 + crate::bind_cache::META_WINDOW,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .clone();
        let meta_bytes = (words * 4) as u64;
        let (bind_group, offset) = if !kernel.dynamic_meta {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &arena,
                    offset: (start * 4) as u64,
                    size: wgpu::BufferSize::new(meta_bytes),
                }),
            }];
            for (i, b) in buffers.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(b.binding()),
                });
            }
            let desc = wgpu::BindGroupDescriptor { label: None, layout: &kernel.layout, entries: &entries };
            (gpu.device.create_bind_group(&desc), None)
        } else if meta_bytes <= crate::bind_cache::META_WINDOW {
            let released = pool.released();
            (batch.binds.get(&gpu.device, kernel, &arena, buffers, released), Some((start * 4) as u32))
        } else {
            (crate::bind_cache::create(&gpu.device, kernel, &arena, meta_bytes, buffers), Some((start * 4) as u32))
        };
        let offsets: &[u32] = match &offset {
            Some(o) => std::slice::from_ref(o),
            None => &[],
        };
        let slot = match batch.profile.as_mut() {
            Some(p) => p.record(&gpu.device, &kernel.name),
            None => None,
        };
        let (x, y) = grid(groups);
        if let Some(slot) = slot.as_ref().filter(|s| !s.inside) {
            // Profiling without timestamps inside passes: this dispatch gets a timed pass of its own.
            batch.pass = None;
            let encoder = batch.encoder.get_or_insert_with(|| gpu.device.create_command_encoder(&Default::default()));
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: &slot.set,
                beginning_of_pass_write_index: Some(slot.index),
                end_of_pass_write_index: Some(slot.index + 1),
            };
            let desc = wgpu::ComputePassDescriptor { label: Some("kiln-timed"), timestamp_writes: Some(writes) };
            let mut pass = encoder.begin_compute_pass(&desc);
            pass.set_pipeline(&kernel.pipeline);
            pass.set_bind_group(0, &bind_group, offsets);
            pass.dispatch_workgroups(x, y, 1);
        } else {
            if batch.pass.is_none() {
                let encoder =
                    batch.encoder.get_or_insert_with(|| gpu.device.create_command_encoder(&Default::default()));
                let desc = wgpu::ComputePassDescriptor { label: Some("kiln"), timestamp_writes: None };
                batch.pass = Some(encoder.begin_compute_pass(&desc).forget_lifetime());
            }
            if let Some(pass) = batch.pass.as_mut() {
                if let Some(slot) = &slot {
                    pass.write_timestamp(&slot.set, slot.index);
                }
                pass.set_pipeline(&kernel.pipeline);
                pass.set_bind_group(0, &bind_group, offsets);
                pass.dispatch_workgroups(x, y, 1);
                if let Some(slot) = &slot {
                    pass.write_timestamp(&slot.set, slot.index + 1);
                }
            }
        }
        batch.dispatches += 1;
        let early = self.early_submit && batch.dispatches.is_multiple_of(EARLY) && gpu_idle(gpu, &batch);
        if batch.dispatches >= MAX_DISPATCHES || early {
            submit_locked(gpu, &mut batch);
        }
        Ok(())
    }

    /// Records a copy of `bytes` from `src_offset` within `src` to `dst_offset` within `dst`, in
    /// order with the dispatches.
    pub(crate) fn copy(&self, gpu: &Gpu, src: Span<'_>, src_offset: u64, dst: Span<'_>, dst_offset: u64, bytes: u64) {
        debug_assert!(src_offset + bytes <= src.size && dst_offset + bytes <= dst.size, "a copy past its block");
        let mut batch = self.lock();
        batch.pass = None;
        let encoder = batch.encoder.get_or_insert_with(|| gpu.device.create_command_encoder(&Default::default()));
        encoder.copy_buffer_to_buffer(src.buffer, src.offset + src_offset, dst.buffer, dst.offset + dst_offset, bytes);
    }

    /// True when recorded work has not been submitted yet.
    pub(crate) fn has_pending(&self) -> bool {
        self.state.lock().map(|b| b.encoder.is_some()).unwrap_or(true)
    }

    /// Submits the recorded batch (if any); returns its submission index. Errors of the submit
    /// show at the caller's next `gpu.check`.
    pub(crate) fn submit(&self, gpu: &Gpu) -> Option<wgpu::SubmissionIndex> {
        submit_locked(gpu, &mut self.lock())
    }
}

/// Whether every submit so far has finished; polls (without waiting) to find out.
fn gpu_idle(gpu: &Gpu, batch: &Batch) -> bool {
    use std::sync::atomic::Ordering;
    if batch.in_flight.load(Ordering::Acquire) == 0 {
        return true;
    }
    let _ = gpu.device.poll(wgpu::PollType::Poll);
    batch.in_flight.load(Ordering::Acquire) == 0
}

fn submit_locked(gpu: &Gpu, batch: &mut Batch) -> Option<wgpu::SubmissionIndex> {
    batch.pass = None;
    let mut encoder = batch.encoder.take()?;
    if let Some(p) = batch.profile.as_mut() {
        p.resolve(&mut encoder);
    }
    if let (Some(arena), false) = (&batch.arena, batch.meta.is_empty())
        && !batch.written.starts_with(&batch.meta)
    {
        // Ordered before this submit's commands and after every earlier submit's.
        gpu.queue.write_buffer(arena, 0, bytemuck::cast_slice(&batch.meta));
        batch.written.clone_from(&batch.meta);
    }
    batch.meta.clear();
    batch.dispatches = 0;
    batch.submits += 1;
    let index = gpu.queue.submit([encoder.finish()]);
    let in_flight = batch.in_flight.clone();
    in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    gpu.queue.on_submitted_work_done(move || {
        in_flight.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    });
    batch.recent.push_back(index.clone());
    if batch.recent.len() > MAX_AHEAD {
        let oldest = batch.recent.pop_front();
        // A browser cannot block; its queue is the browser's to bound.
        if cfg!(not(target_arch = "wasm32")) && batch.in_flight.load(std::sync::atomic::Ordering::Acquire) > MAX_AHEAD {
            batch.throttles += 1;
            gpu.block_on_gpu(oldest);
        }
    }
    if let Some(p) = batch.profile.as_mut() {
        p.submitted();
    }
    Some(index)
}
