//! `kiln-host-cost`: what the host pays to *record* random ops and dropout on a GPU tensor of
//! the `char_transformer --size large` activation shape, [64, 256, 384] f32 (6.3 M elements):
//! the call alone (no GPU wait), and the call plus `sync` (flush, submit, GPU time). Medians of
//! a few calls, in µs. `cargo run --release -p kiln-bench --bin kiln-host-cost`.

use kiln_core::{Device, Result, Tensor};
use kiln_nn::{Dropout, Module};
use std::time::Instant;

const SHAPE: [usize; 3] = [64, 256, 384];
const ITERS: usize = 10;

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn time(label: &str, device: &Device, f: impl Fn() -> Result<Tensor>) -> Result<()> {
    for _ in 0..2 {
        f()?;
        device.sync()?;
    }
    let (mut record, mut total) = (Vec::new(), Vec::new());
    for _ in 0..ITERS {
        let t0 = Instant::now();
        let y = f()?;
        let t1 = t0.elapsed();
        device.sync()?;
        let t2 = t0.elapsed();
        drop(y);
        record.push(t1.as_secs_f64() * 1e6);
        total.push(t2.as_secs_f64() * 1e6);
    }
    println!("{label:<40} record {:>10.1} µs   record + sync {:>10.1} µs", median(record), median(total));
    Ok(())
}

fn main() -> Result<()> {
    let device = Device::gpu()?;
    println!("{}  shape {SHAPE:?} f32", device.describe());
    let x = Tensor::randn(&SHAPE, &device)?;
    device.sync()?;
    let drop = Dropout::new(0.2);
    time("Dropout(0.2).forward", &device, || drop.forward(&x))?;
    time("Tensor::rand", &device, || Tensor::rand(&SHAPE, &device))?;
    time("Tensor::randn", &device, || Tensor::randn(&SHAPE, &device))?;
    Ok(())
}
