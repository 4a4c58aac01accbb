//! Moving bytes between host and device. Staging buffers come from the pool; the blocking path
//! waits with `device.poll`, the async path hands the wait to a helper thread and awaits a
//! channel, so an async caller never spins.

use crate::{context::GpuContext, pool::PooledBuffer};
use kiln_backend::{Error, Result};

const STAGING_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

impl GpuContext {
    /// Uploads `bytes` into a fresh storage buffer.
    pub(crate) fn upload(&self, op: &'static str, bytes: &[u8]) -> Result<PooledBuffer> {
        let buf = self.pool.storage(&self.device, op, bytes.len() as u64)?;
        // `write_buffer` lands before the *next* submit's commands: commands already recorded
        // may still use this (recycled) buffer, so submit them first.
        if self.has_pending() {
            self.flush()?;
        }
        let padded = bytes.len().next_multiple_of(4);
        if padded == bytes.len() {
            self.queue.write_buffer(buf.buffer(), 0, bytes);
        } else {
            let mut v = bytes.to_vec();
            v.resize(padded, 0);
            self.queue.write_buffer(buf.buffer(), 0, &v);
        }
        Ok(buf)
    }

    fn stage(&self, op: &'static str, src: &wgpu::Buffer, bytes: u64) -> Result<(PooledBuffer, u64, Option<wgpu::SubmissionIndex>)> {
        let padded = bytes.next_multiple_of(4).max(4);
        let staging = self.pool.get(&self.device, op, padded, STAGING_USAGE)?;
        self.copy(src, 0, staging.buffer(), 0, padded);
        let index = self.flush()?;
        Ok((staging, padded, index))
    }

    /// Reads the first `bytes` bytes of `src`, waiting for all recorded work.
    pub(crate) fn read_bytes(&self, op: &'static str, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let (staging, padded, index) = self.stage(op, src, bytes)?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.buffer().map_async(wgpu::MapMode::Read, 0..padded, move |r| {
            let _ = tx.send(r);
        });
        self.wait(index)?;
        match rx.recv() {
            Ok(Ok(())) => Ok(copy_out(&staging, bytes)),
            Ok(Err(e)) => Err(Error::Backend { op, msg: format!("mapping the readback buffer: {e}") }),
            Err(_) => Err(Error::DeviceLost { msg: format!("{op}: readback never completed") }),
        }
    }

    /// Like [`read_bytes`](Self::read_bytes) but resolves without blocking the calling task.
    pub(crate) async fn read_bytes_async(
        self: &std::sync::Arc<Self>,
        op: &'static str,
        src: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
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
            Ok(Ok(())) => Ok(copy_out(&staging, bytes)),
            Ok(Err(e)) => Err(Error::Backend { op, msg: format!("mapping the readback buffer: {e}") }),
            Err(_) => Err(Error::DeviceLost { msg: format!("{op}: readback never completed") }),
        }
    }
}

fn copy_out(staging: &PooledBuffer, bytes: u64) -> Vec<u8> {
    let out = match staging.buffer().get_mapped_range(0..bytes.next_multiple_of(4)) {
        Ok(view) => view[..bytes as usize].to_vec(),
        Err(_) => Vec::new(),
    };
    staging.buffer().unmap();
    out
}
