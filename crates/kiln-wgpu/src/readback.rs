//! Moving bytes between host and device. Uploads take `queue.write_buffer`, which copies the
//! host bytes once into wgpu's own staging memory. A ring of persistently mapped upload buffers
//! was tried and removed: on the H200's Vulkan driver, every later submit slowed down by about
//! as long as copying the mapped bytes (W4b softmax 1,120 → 27 GB/s with one 64 MiB buffer
//! kept mapped).
//!
//! Readback staging buffers come from the pool; readers decode straight from the mapped range
//! (`read_with`), without an intermediate byte vector. The blocking path waits with
//! `device.poll`, the async path hands the wait to a helper thread and awaits a channel, so an
//! async caller never spins. In a browser the blocking path refuses (`Error::WouldBlock`) and
//! the async one needs no thread: the browser polls the device and fires the callback itself.

use crate::{
    batch::Batcher,
    gpu::Gpu,
    pool::{BufferPool, PooledBuffer, Span},
};
use kiln_backend::{Error, Result};
use std::sync::Arc;

const STAGING_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

/// What moving bytes uses of a context: the device, the pool buffers come from, the batch copies
/// are recorded in, and `deferred`, which records work the batch has not seen yet (the
/// context's pending fused ops) so that a copy or a submit comes after it.
pub(crate) struct Transfer<'a, D: Fn() -> Result<()>> {
    pub gpu: &'a Arc<Gpu>,
    pub pool: &'a BufferPool,
    pub batch: &'a Batcher,
    pub deferred: D,
}

impl<D: Fn() -> Result<()>> Transfer<'_, D> {
    /// Records the deferred work, submits everything recorded, and reports errors so far.
    pub(crate) fn flush(&self) -> Result<Option<wgpu::SubmissionIndex>> {
        (self.deferred)()?;
        let index = self.batch.submit(self.gpu);
        self.gpu.check("submit")?;
        Ok(index)
    }

    /// Uploads `bytes` into a fresh storage buffer.
    pub(crate) fn upload(&self, op: &'static str, bytes: &[u8]) -> Result<PooledBuffer> {
        let buf = self.pool.storage(&self.gpu.device, op, bytes.len() as u64)?;
        let padded = bytes.len().next_multiple_of(4);
        // `write_buffer` lands before the *next* submit's commands: commands already recorded
        // may still use this (recycled) buffer, so submit them first.
        if self.batch.has_pending() {
            self.flush()?;
        }
        let queue = &self.gpu.queue;
        if padded == bytes.len() {
            queue.write_buffer(buf.buffer(), buf.offset(), bytes);
        } else if let Some(size) = wgpu::BufferSize::new(padded as u64)
            && let Some(mut view) = queue.write_buffer_with(buf.buffer(), buf.offset(), size)
        {
            let (mut head, mut tail) = view.slice(..).split_at(bytes.len());
            head.copy_from_slice(bytes);
            tail.fill(0);
        }
        Ok(buf)
    }

    /// Records a copy of `src`'s first `bytes` into a staging buffer, submits, and asks for the
    /// staging buffer to be mapped; `notify` gets the mapping's outcome from inside some poll.
    fn stage(
        &self,
        op: &'static str,
        src: Span<'_>,
        bytes: u64,
        notify: impl FnOnce(std::result::Result<(), wgpu::BufferAsyncError>) + Send + 'static,
    ) -> Result<(PooledBuffer, Option<wgpu::SubmissionIndex>)> {
        let padded = bytes.next_multiple_of(4).max(4);
        let staging = self.pool.get(&self.gpu.device, op, padded, STAGING_USAGE)?;
        (self.deferred)()?;
        self.batch.copy(self.gpu, src, 0, staging.binding(), 0, padded);
        let index = self.flush()?;
        staging.buffer().map_async(wgpu::MapMode::Read, 0..padded, notify);
        Ok((staging, index))
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
        crate::platform::refuse_blocking(op, "to_vec_async")?;
        if bytes == 0 {
            return Ok(decode(&[]));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (staging, index) = self.stage(op, src, bytes, move |r| {
            let _ = tx.send(r);
        })?;
        self.gpu.wait(index)?;
        finish(op, &staging, bytes, decode, rx.recv().ok())
    }

    /// Like [`read_with`](Self::read_with) but resolves without blocking the calling task.
    pub(crate) async fn read_with_async<T>(
        &self,
        op: &'static str,
        src: Span<'_>,
        bytes: u64,
        decode: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        if bytes == 0 {
            return Ok(decode(&[]));
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        let (staging, index) = self.stage(op, src, bytes, move |r| {
            let _ = tx.send(r);
        })?;
        self.gpu.count_sync();
        self.gpu.poll_in_background(index);
        let out = finish(op, &staging, bytes, decode, rx.await.ok());
        // In a browser, errors of kernels built since the last check arrive only now.
        if crate::platform::WEB {
            self.gpu.check(op)?;
        }
        out
    }
}

/// Decodes a readback whose mapping reported `outcome` (`None`: the callback never ran, so the
/// device went away).
fn finish<T>(
    op: &'static str,
    staging: &PooledBuffer,
    bytes: u64,
    decode: impl FnOnce(&[u8]) -> T,
    outcome: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
) -> Result<T> {
    match outcome {
        Some(Ok(())) => mapped(op, staging, bytes, decode),
        Some(Err(e)) => Err(Error::Backend { op, msg: format!("mapping the readback buffer: {e}") }),
        None => Err(Error::DeviceLost { msg: format!("{op}: readback never completed") }),
    }
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
