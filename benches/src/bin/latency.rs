//! `kiln-latency`: what one host–GPU round trip costs, piece by piece. Every workload that ends
//! in a sync (W2–W4, W8b, W9) pays it once per iteration, so it bounds how close small kernels
//! get to PyTorch. Prints the median and 90th percentile of each, in µs.
//!
//! `KILN_SPIN_US=0` turns the spinning wait off, for an A/B in one lease.

use kiln_core::{Device, Result, Tensor};
use std::time::Instant;

const ITERS: usize = 2000;

fn stats(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[t.len() * 9 / 10])
}

fn time(label: &str, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    for _ in 0..50 {
        f()?;
    }
    let mut t = Vec::with_capacity(ITERS);
    for _ in 0..ITERS {
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let (med, p90) = stats(t);
    println!("{label:<44} median {med:8.1} µs   p90 {p90:8.1} µs");
    Ok(())
}

fn main() -> Result<()> {
    let device = Device::gpu()?;
    println!("{}  KILN_SPIN_US={:?}", device.describe(), std::env::var("KILN_SPIN_US").ok());
    let Some(ctx) = device.gpu_context().cloned() else { return Ok(()) };
    time("sync, nothing recorded", || device.sync())?;
    let mut y = Tensor::zeros(&[1], &device)?;
    time("1 tiny op + sync", || {
        y = y.add_scalar(1.0)?;
        device.sync()
    })?;
    time("1 tiny op + read 4 bytes", || {
        y = y.add_scalar(1.0)?;
        y.to_vec::<f32>().map(|_| ())
    })?;
    let (mut flush, mut wait) = (Vec::new(), Vec::new());
    for i in 0..ITERS + 50 {
        y = y.add_scalar(1.0)?;
        let t0 = Instant::now();
        let index = ctx.flush()?;
        let t1 = Instant::now();
        ctx.device.poll(wgpu::PollType::Wait { submission_index: index, timeout: None }).ok();
        let t2 = Instant::now();
        if i >= 50 {
            flush.push((t1 - t0).as_secs_f64() * 1e6);
            wait.push((t2 - t1).as_secs_f64() * 1e6);
        }
    }
    let ((f50, f90), (w50, w90)) = (stats(flush), stats(wait));
    println!("{:<44} median {f50:8.1} µs   p90 {f90:8.1} µs", "  of which flush (arena write + submit)");
    println!("{:<44} median {w50:8.1} µs   p90 {w90:8.1} µs", "  of which blocking poll(Wait)");
    time("raw wgpu: empty submit + poll(Wait)", || {
        let index = ctx.queue.submit([ctx.device.create_command_encoder(&Default::default()).finish()]);
        ctx.device.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None }).ok();
        Ok(())
    })?;
    let scratch = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    for (label, write) in
        [("raw wgpu: empty submit, host side only", false), ("raw wgpu: write_buffer 64 B + submit, host side", true)]
    {
        let mut host = Vec::with_capacity(ITERS);
        for i in 0..ITERS + 50 {
            let t0 = Instant::now();
            if write {
                ctx.queue.write_buffer(&scratch, 0, &[7u8; 64]);
            }
            let index = ctx.queue.submit([ctx.device.create_command_encoder(&Default::default()).finish()]);
            let t1 = Instant::now();
            ctx.device.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None }).ok();
            if i >= 50 {
                host.push((t1 - t0).as_secs_f64() * 1e6);
            }
        }
        let (m, p) = stats(host);
        println!("{label:<44} median {m:8.1} µs   p90 {p:8.1} µs");
    }
    let x = Tensor::randn(&[4096, 4096], &device)?;
    time("W4a: sum [4096, 4096] over rows + sync", || {
        let s = x.sum(&[-1], false)?;
        device.sync()?;
        drop(s);
        Ok(())
    })?;
    time("W4b: softmax [4096, 4096] + sync", || {
        let s = x.softmax(-1)?;
        device.sync()?;
        drop(s);
        Ok(())
    })?;
    Ok(())
}
