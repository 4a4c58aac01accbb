//! Single-op workloads: W1 (matmul), W1h (f16 matmul), W2 (batched matmul), W3 (fused
//! elementwise chain), W4a (row sum) and W4b (row softmax).

use crate::harness::{Ctx, measure, median};
use crate::inputs::randn;
use kiln_core::{DType, Result};
use std::time::Instant;

/// Runs `one` for each size, reporting a failure at one size (out of memory at 4096, say)
/// without giving up on the others.
fn each_size(ctx: &Ctx, id: &str, sizes: &[usize], mut one: impl FnMut(usize) -> Result<()>) -> Result<()> {
    for &n in sizes {
        if ctx.past_deadline() {
            eprintln!("{id} n={n}: skipped (--max-seconds reached)");
            continue;
        }
        if let Err(e) = one(n) {
            eprintln!("{id} n={n}: FAILED: {e}");
        }
    }
    Ok(())
}

fn square_matmul(ctx: &Ctx, id: &str, n: usize, dtype: DType) -> Result<()> {
    let d = &ctx.device;
    let a = randn(&[n, n], d)?.to_dtype(dtype)?;
    let b = randn(&[n, n], d)?.to_dtype(dtype)?;
    ctx.sync()?;
    let t = measure(ctx, &format!("{id} n={n}"), || {
        let c = a.matmul(&b)?;
        ctx.sync()?;
        drop(c);
        Ok(())
    })?;
    ctx.emit(id, &n.to_string(), "GFLOP/s", 2.0 * (n as f64).powi(3) / t / 1e9);
    Ok(())
}

/// W1: square f32 matmul, `2·n³` flops.
pub fn w1(ctx: &Ctx) -> Result<()> {
    let sizes: &[usize] = if ctx.small { &[256, 512] } else { &[256, 1024, 2048, 4096] };
    each_size(ctx, "W1", sizes, |n| square_matmul(ctx, "W1", n, DType::F32))
}

/// W1h: square matmul on f16 tensors (f16 storage, f32 accumulation inside the kernel). Skipped
/// on an adapter without `SHADER_F16`.
pub fn w1h(ctx: &Ctx) -> Result<()> {
    if let Some(g) = ctx.device.gpu_context()
        && !g.has_f16()
    {
        eprintln!("W1h: skipped: adapter {} lacks SHADER_F16", g.summary.name);
        return Ok(());
    }
    let sizes: &[usize] = if ctx.small { &[256, 512] } else { &[1024, 2048, 4096] };
    each_size(ctx, "W1h", sizes, |n| square_matmul(ctx, "W1h", n, DType::F16))
}

/// W2: `[b, m, k]·[b, k, n]`.
pub fn w2(ctx: &Ctx) -> Result<()> {
    let (b, m, k, n) = if ctx.small { (4, 512, 512, 512) } else { (32, 512, 512, 512) };
    let d = &ctx.device;
    let x = randn(&[b, m, k], d)?;
    let y = randn(&[b, k, n], d)?;
    ctx.sync()?;
    let t = measure(ctx, "W2", || {
        let z = x.matmul(&y)?;
        ctx.sync()?;
        drop(z);
        Ok(())
    })?;
    ctx.emit("W2", &format!("b{b}xm{m}xk{k}xn{n}"), "GFLOP/s", 2.0 * (b * m * k * n) as f64 / t / 1e9);
    Ok(())
}

/// Times `record` then a sync per iteration, keeping each part: the line's `record_us` (the
/// host recording the ops, nothing waits) and `sync_us` (flush, submit, GPU time, the wait),
/// medians like the headline number, show where an iteration's time goes.
fn measure_split(
    ctx: &Ctx,
    label: &str,
    mut record: impl FnMut() -> Result<kiln_core::Tensor>,
) -> Result<(f64, [(&'static str, f64); 2])> {
    let (mut rec, mut sync) = (Vec::new(), Vec::new());
    let t = measure(ctx, label, || {
        let t0 = Instant::now();
        let y = record()?;
        let t1 = Instant::now();
        ctx.sync()?;
        rec.push((t1 - t0).as_secs_f64());
        sync.push(t1.elapsed().as_secs_f64());
        drop(y);
        Ok(())
    })?;
    Ok((t, [("record_us", median(rec) * 1e6), ("sync_us", median(sync) * 1e6)]))
}

/// W3: `gelu_tanh(a·b + c)`, counted as 3 reads and 1 write of 4 bytes per element.
pub fn w3(ctx: &Ctx) -> Result<()> {
    let n = if ctx.small { 1 << 20 } else { 1 << 24 };
    let d = &ctx.device;
    let (a, b, c) = (randn(&[n], d)?, randn(&[n], d)?, randn(&[n], d)?);
    ctx.sync()?;
    let (t, split) = measure_split(ctx, "W3", || (&(&a * &b)? + &c)?.gelu_tanh())?;
    ctx.emit_with("W3", &n.to_string(), "GB/s", 16.0 * n as f64 / t / 1e9, &split);
    Ok(())
}

/// W4a (sum over the last axis, input read once) and W4b (softmax over the last axis, one read
/// and one write), on the same input.
pub fn w4(ctx: &Ctx) -> Result<()> {
    let (r, c) = if ctx.small { (512, 512) } else { (4096, 4096) };
    let size = format!("{r}x{c}");
    let x = randn(&[r, c], &ctx.device)?;
    ctx.sync()?;
    let elems = (r * c) as f64;
    if ctx.selected("W4a") && !ctx.past_deadline() {
        let (t, split) = measure_split(ctx, "W4a", || x.sum(&[-1], false))?;
        ctx.emit_with("W4a", &size, "GB/s", 4.0 * elems / t / 1e9, &split);
    }
    if ctx.selected("W4b") && !ctx.past_deadline() {
        let t = measure(ctx, "W4b", || {
            let s = x.softmax(-1)?;
            ctx.sync()?;
            drop(s);
            Ok(())
        })?;
        ctx.emit("W4b", &size, "GB/s", 8.0 * elems / t / 1e9);
    }
    Ok(())
}
