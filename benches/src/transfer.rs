//! Host–device traffic: W8a (bulk upload and readback bandwidth) and W8b (the cost of one tiny
//! dispatch in a long dependent chain).

use crate::harness::{Ctx, measure, measure_with_setup, median};
use crate::inputs::SplitMix;
use kiln_core::{Error, Result, Tensor};
use std::time::Instant;

/// W8a: a 64 MiB (8 MiB with `--small`) f32 upload, then readback of a resident tensor.
pub fn w8a(ctx: &Ctx) -> Result<()> {
    let mib = if ctx.small { 8 } else { 64 };
    let n = mib * 1024 * 1024 / 4;
    let bytes = (n * 4) as f64;
    let d = &ctx.device;
    let mut rng = SplitMix(81);
    let host: Vec<f32> = (0..n).map(|_| rng.next_f32()).collect();

    // The clone is the host-side copy a caller makes anyway; keep it off the clock.
    let t_up = measure_with_setup(
        ctx,
        "W8a h2d",
        || Ok(host.clone()),
        |data| {
            let t = Tensor::from_vec(data, &[n], d)?;
            ctx.sync()?;
            drop(t);
            Ok(())
        },
    )?;
    ctx.emit("W8a", &format!("{mib}MiB/h2d"), "GB/s", bytes / t_up / 1e9);

    if ctx.past_deadline() {
        return Ok(());
    }
    let resident = Tensor::from_vec(host.clone(), &[n], d)?;
    ctx.sync()?;
    if resident.to_vec::<f32>()? != host {
        return Err(Error::Backend { op: "W8a", msg: "readback differs from the uploaded data".into() });
    }
    let t_down = measure(ctx, "W8a d2h", || {
        let v = resident.to_vec::<f32>()?;
        std::hint::black_box(&v);
        Ok(())
    })?;
    ctx.emit("W8a", &format!("{mib}MiB/d2h"), "GB/s", bytes / t_down / 1e9);
    Ok(())
}

/// W8b: 1000 chained `y = y + 1` on a one-element tensor, then one readback: µs per op. The
/// line also carries the split of an iteration: `record_us_per_op` (the 1000 calls, nothing
/// waits) and `readback_us` (the one `item()`: planning and dispatching the fused kernels,
/// the submit, the wait and the copy back), medians like the headline number.
pub fn w8b(ctx: &Ctx) -> Result<()> {
    const OPS: usize = 1000;
    let d = &ctx.device;
    let mut last = 0.0;
    let (mut record, mut readback) = (Vec::new(), Vec::new());
    let t = measure_with_setup(
        ctx,
        "W8b",
        || {
            let y = Tensor::zeros(&[1], d)?;
            ctx.sync()?;
            Ok(y)
        },
        |mut y| {
            let t0 = Instant::now();
            for _ in 0..OPS {
                y = y.add_scalar(1.0)?;
            }
            let t1 = Instant::now();
            // The readback is the synchronisation: it waits for all 1000 dispatches.
            last = y.item()?;
            record.push((t1 - t0).as_secs_f64());
            readback.push(t1.elapsed().as_secs_f64());
            Ok(())
        },
    )?;
    if last != OPS as f64 {
        eprintln!("W8b: WARNING result {last} != {OPS}");
    }
    let split = [("record_us_per_op", median(record) * 1e6 / OPS as f64), ("readback_us", median(readback) * 1e6)];
    ctx.emit_with("W8b", &OPS.to_string(), "us/op", t * 1e6 / OPS as f64, &split);
    Ok(())
}
