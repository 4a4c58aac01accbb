//! Moving bytes between host and device. Large uploads go through a ring of staging buffers
//! that stay mapped between uses: the bytes are copied once, into the mapping, and a copy
//! command in the batch moves them to the tensor's buffer, in order with the recorded work (so
//! nothing has to be submitted first). After the submit that carries the copy, the staging
//! buffer is mapped again and returns to the ring when the mapping lands. Small uploads take
//! `queue.write_buffer`, whose per-call staging costs little at their size.
//!
//! Readback staging buffers come from the pool; readers decode straight from the mapped range
//! (`read_with`), without an intermediate byte vector. The blocking path waits with
//! `device.poll`, the async path hands the wait to a helper thread and awaits a channel, so an
//! async caller never spins.

use crate::{context::GpuContext, pool::PooledBuffer};
use kiln_backend::{Error, Result};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

const STAGING_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);
const UPLOAD_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::MAP_WRITE.union(wgpu::BufferUsages::COPY_SRC);

/// Uploads from this size on take the staging ring.
const RING_MIN: usize = 256 << 10;
/// The most bytes the ring holds; past it, uploads fall back to `write_buffer`.
const RING_MAX: u64 = 512 << 20;

/// Upload staging buffers and where each is in its cycle.
#[derive(Default)]
pub(crate) struct UploadRing {
    state: Mutex<RingState>,
}

#[derive(Default)]
struct RingState {
    /// Mapped for writing and idle.
    ready: Vec<wgpu::Buffer>,
    /// Source of a copy recorded but not yet submitted.
    recorded: Vec<wgpu::Buffer>,
    /// Being mapped again (0: pending, 1: mapped, 2: failed).
    mapping: Vec<(wgpu::Buffer, Arc<AtomicU8>)>,
    bytes: u64,
}

impl UploadRing {
    /// A mapped staging buffer of exactly `size` bytes, or `None` when the ring is full.
    fn take(&self, device: &wgpu::Device, size: u64) -> Option<wgpu::Buffer> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.settle();
        if let Some(i) = s.ready.iter().position(|b| b.size() == size) {
            return Some(s.ready.swap_remove(i));
        }
        if s.bytes + size > RING_MAX {
            // Make room by dropping idle buffers of other sizes.
            while s.bytes + size > RING_MAX {
                let b = s.ready.pop()?;
                s.bytes -= b.size();
            }
        }
        s.bytes += size;
        Some(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln-upload"),
            size,
            usage: UPLOAD_USAGE,
            mapped_at_creation: true,
        }))
    }

    fn recorded(&self, buffer: wgpu::Buffer) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).recorded.push(buffer);
    }

    /// After a submit: every buffer whose copy it carried starts mapping again.
    pub(crate) fn submitted(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let recorded = std::mem::take(&mut s.recorded);
        for buffer in recorded {
            let flag = Arc::new(AtomicU8::new(0));
            let done = flag.clone();
            buffer.map_async(wgpu::MapMode::Write, .., move |r| done.store(if r.is_ok() { 1 } else { 2 }, Ordering::SeqCst));
            s.mapping.push((buffer, flag));
        }
    }
}

impl RingState {
    /// Moves buffers whose mapping landed back to `ready` (failed ones are dropped).
    fn settle(&mut self) {
        let mut i = 0;
        while i < self.mapping.len() {
            match self.mapping[i].1.load(Ordering::SeqCst) {
                0 => i += 1,
                state => {
                    let (b, _) = self.mapping.swap_remove(i);
                    if state == 1 {
                        self.ready.push(b);
                    } else {
                        self.bytes -= b.size();
                    }
                }
            }
        }
    }
}

impl GpuContext {
    /// Uploads `bytes` into a fresh storage buffer.
    pub(crate) fn upload(&self, op: &'static str, bytes: &[u8]) -> Result<PooledBuffer> {
        let buf = self.pool.storage(&self.device, op, bytes.len() as u64)?;
        let padded = bytes.len().next_multiple_of(4);
        if bytes.len() >= RING_MIN
            && let Some(staging) = self.uploads.take(&self.device, crate::pool::size_class(padded as u64))
        {
            let written = fill_mapped(&staging, bytes, padded);
            staging.unmap();
            if written.is_ok() {
                self.copy(&staging, 0, buf.buffer(), 0, padded as u64);
                self.uploads.recorded(staging);
                return Ok(buf);
            }
        }
        // `write_buffer` lands before the *next* submit's commands: commands already recorded
        // may still use this (recycled) buffer, so submit them first.
        if self.has_pending() {
            self.flush()?;
        }
        if padded == bytes.len() {
            self.queue.write_buffer(buf.buffer(), 0, bytes);
        } else if let Some(size) = wgpu::BufferSize::new(padded as u64)
            && let Some(mut view) = self.queue.write_buffer_with(buf.buffer(), 0, size)
        {
            let (mut head, mut tail) = view.slice(..).split_at(bytes.len());
            head.copy_from_slice(bytes);
            tail.fill(0);
        }
        Ok(buf)
    }

    fn stage(&self, op: &'static str, src: &wgpu::Buffer, bytes: u64) -> Result<(PooledBuffer, u64, Option<wgpu::SubmissionIndex>)> {
        let padded = bytes.next_multiple_of(4).max(4);
        let staging = self.pool.get(&self.device, op, padded, STAGING_USAGE)?;
        self.flush_fusion()?;
        self.copy(src, 0, staging.buffer(), 0, padded);
        let index = self.flush()?;
        Ok((staging, padded, index))
    }

    /// Waits for all recorded work, then hands the first `bytes` bytes of `src` to `decode`
    /// straight from the mapped staging buffer.
    pub(crate) fn read_with<T>(
        &self,
        op: &'static str,
        src: &wgpu::Buffer,
        bytes: u64,
        decode: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        if bytes == 0 {
            return Ok(decode(&[]));
        }
        let (staging, padded, index) = self.stage(op, src, bytes)?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.buffer().map_async(wgpu::MapMode::Read, 0..padded, move |r| {
            let _ = tx.send(r);
        });
        self.wait(index)?;
        match rx.recv() {
            Ok(Ok(())) => mapped(op, &staging, bytes, decode),
            Ok(Err(e)) => Err(Error::Backend { op, msg: format!("mapping the readback buffer: {e}") }),
            Err(_) => Err(Error::DeviceLost { msg: format!("{op}: readback never completed") }),
        }
    }

    /// Like [`read_with`](Self::read_with) but resolves without blocking the calling task.
    pub(crate) async fn read_with_async<T>(
        self: &std::sync::Arc<Self>,
        op: &'static str,
        src: &wgpu::Buffer,
        bytes: u64,
        decode: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        if bytes == 0 {
            return Ok(decode(&[]));
        }
        let (staging, padded, index) = self.stage(op, src, bytes)?;
        let (tx, rx) = futures::channel::oneshot::channel();
        staging.buffer().map_async(wgpu::MapMode::Read, 0..padded, move |r| {
            let _ = tx.send(r);
        });
        let ctx = self.clone();
        // The map callback fires from inside a poll; a helper thread does that blocking poll.
        std::thread::spawn(move || {
            let _ = ctx.device.poll(wgpu::PollType::Wait { submission_index: index, timeout: None });
        });
        match rx.await {
            Ok(Ok(())) => mapped(op, &staging, bytes, decode),
            Ok(Err(e)) => Err(Error::Backend { op, msg: format!("mapping the readback buffer: {e}") }),
            Err(_) => Err(Error::DeviceLost { msg: format!("{op}: readback never completed") }),
        }
    }
}

/// Uploads from this size on are copied into the mapping by several threads: a single core's
/// stores into write-combined, PCIe-mapped memory fall short of what the bus takes.
const PARALLEL_MIN: usize = 8 << 20;

/// Copies `bytes` into the mapped `staging` buffer and zeroes the rest up to `padded`.
fn fill_mapped(staging: &wgpu::Buffer, bytes: &[u8], padded: usize) -> std::result::Result<(), wgpu::MapRangeError> {
    let threads = if bytes.len() >= PARALLEL_MIN {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(4)
    } else {
        1
    };
    // Pieces start at multiples of 4 KiB (views need 8-byte aligned offsets, 4-byte lengths).
    let piece = padded.div_ceil(threads).next_multiple_of(4096);
    let views = (0..padded)
        .step_by(piece)
        .map(|start| {
            let end = (start + piece).min(padded);
            staging.get_mapped_range_mut(start as u64..end as u64).map(|v| (start, end, v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let fill = |(start, end, mut view): (usize, usize, wgpu::BufferViewMut)| {
        let data = &bytes[start.min(bytes.len())..end.min(bytes.len())];
        let (mut head, mut tail) = view.slice(..).split_at(data.len());
        head.copy_from_slice(data);
        tail.fill(0);
        debug_assert_eq!(start + data.len() + tail.len(), end);
    };
    if views.len() == 1 {
        views.into_iter().for_each(fill);
    } else {
        std::thread::scope(|s| {
            for v in views {
                s.spawn(move || fill(v));
            }
        });
    }
    Ok(())
}

/// Runs `decode` on the mapped bytes, then unmaps (also when the range cannot be had).
fn mapped<T>(op: &'static str, staging: &PooledBuffer, bytes: u64, decode: impl FnOnce(&[u8]) -> T) -> Result<T> {
    let out = match staging.buffer().get_mapped_range(0..bytes.next_multiple_of(4)) {
        Ok(view) => Ok(decode(&view[..bytes as usize])),
        Err(e) => Err(Error::Backend { op, msg: format!("reading the mapped readback buffer: {e}") }),
    };
    staging.buffer().unmap();
    out
}
