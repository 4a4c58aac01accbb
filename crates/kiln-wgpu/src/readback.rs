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

use crate::{context::GpuContext, pool::PooledBuffer};
use kiln_backend::{Error, Result};

const STAGING_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

impl GpuContext {
    /// Uploads `bytes` into a fresh storage buffer.
    pub(crate) fn upload(&self, op: &'static str, bytes: &[u8]) -> Result<PooledBuffer> {
        let buf = self.pool.storage(&self.device, op, bytes.len() as u64)?;
        let padded = bytes.len().next_multiple_of(4);
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

    /// Records a copy of `src`'s first `bytes` into a staging buffer, submits, and asks for the
    /// staging buffer to be mapped; `notify` gets the mapping's outcome from inside some poll.
    fn stage(
        &self,
        op: &'static str,
        src: &wgpu::Buffer,
        bytes: u64,
        notify: impl FnOnce(std::result::Result<(), wgpu::BufferAsyncError>) + Send + 'static,
    ) -> Result<(PooledBuffer, Option<wgpu::SubmissionIndex>)> {
        let padded = bytes.next_multiple_of(4).max(4);
        let staging = self.pool.get(&self.device, op, padded, STAGING_USAGE)?;
        self.flush_fusion()?;
        self.copy(src, 0, staging.buffer(), 0, padded);
        let index = self.flush()?;
        staging.buffer().map_async(wgpu::MapMode::Read, 0..padded, notify);
        Ok((staging, index))
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
        crate::platform::refuse_blocking(op, "to_vec_async")?;
        if bytes == 0 {
            return Ok(decode(&[]));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (staging, index) = self.stage(op, src, bytes, move |r| {
            let _ = tx.send(r);
        })?;
        self.wait(index)?;
        finish(op, &staging, bytes, decode, rx.recv().ok())
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
        let (tx, rx) = futures::channel::oneshot::channel();
        let (staging, index) = self.stage(op, src, bytes, move |r| {
            let _ = tx.send(r);
        })?;
        self.count_sync();
        self.poll_in_background(index);
        let out = finish(op, &staging, bytes, decode, rx.await.ok());
        // In a browser, errors of kernels built since the last check arrive only now.
        if crate::platform::WEB {
            self.check(op)?;
        }
        out
    }

    /// Submits everything recorded so far and resolves once the GPU has finished it, without
    /// blocking the calling task (the async form of [`sync`](Self::sync)).
    pub async fn sync_async(self: &std::sync::Arc<Self>) -> Result<()> {
        let index = self.flush()?;
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

    /// Gets the callbacks of submission `index` fired without blocking the caller: natively a
    /// helper thread does the blocking poll they fire from; a browser polls by itself.
    fn poll_in_background(self: &std::sync::Arc<Self>, index: Option<wgpu::SubmissionIndex>) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let ctx = self.clone();
            // On GL the wait polls (see `block_on_gpu`): a blocking wait there can panic.
            std::thread::spawn(move || ctx.block_on_gpu(index));
        }
        #[cfg(target_arch = "wasm32")]
        let _ = index;
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
