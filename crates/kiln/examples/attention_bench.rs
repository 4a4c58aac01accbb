//! Attention microbenchmark: the fused flash-attention op against the materialised
//! `softmax(q·kᵀ/√d)·v` it replaces, causal, forward and forward + backward, on [b, h, t, d].
//!
//! `cargo run --release --example attention_bench -- [b h t d] [--device gpu|cpu]`
//! (default 16 4 256 64, the W6 shape). Prints one JSON line per measurement; the median of
//! at least 10 timed iterations after 3 warm-ups, each ending in `sync`.

use kiln::prelude::*;
use std::time::Instant;

fn median_ms(device: &Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
        device.sync()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 10 || start.elapsed().as_secs_f64() < 1.0 {
        let t = Instant::now();
        f()?;
        device.sync()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn materialised(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let d = q.shape()[3] as f64;
    let scores = q.matmul(&k.transpose(-2, -1)?)?.mul_scalar(1.0 / d.sqrt())?;
    scores.masked_fill(mask, f32::MIN as f64)?.softmax(-1)?.matmul(v)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = match args.iter().position(|a| a == "--device") {
        Some(i) => Device::parse(args.get(i + 1).map_or("gpu", |s| s.as_str()))?,
        None => Device::gpu()?,
    };
    let dims: Vec<usize> = args.iter().take_while(|a| !a.starts_with("--")).filter_map(|a| a.parse().ok()).collect();
    let [b, h, t, d] = match dims[..] {
        [b, h, t, d] => [b, h, t, d],
        _ => [16, 4, 256, 64],
    };
    eprintln!("{} — [b {b}, h {h}, t {t}, d {d}], causal", device.describe());
    kiln::manual_seed(0);
    let q = Tensor::randn(&[b, h, t, d], &device)?.with_grad();
    let k = Tensor::randn(&[b, h, t, d], &device)?.with_grad();
    let v = Tensor::randn(&[b, h, t, d], &device)?.with_grad();
    let future: Vec<bool> = (0..t * t).map(|i| i % t > i / t).collect();
    let mask = Tensor::from_vec(future, &[t, t], &device)?;
    let flops_fwd = 4.0 * (b * h * t * t * d) as f64 / 2.0; // causal: half the score matrix
    let report = |name: &str, pass: &str, ms: f64, flops: f64| {
        println!(
            "{{\"bench\":\"attention\",\"impl\":\"{name}\",\"pass\":\"{pass}\",\"shape\":\"b{b}h{h}t{t}d{d}\",\"ms\":{ms:.4},\"tflops\":{:.3}}}",
            flops / ms / 1e9
        );
    };
    let fused_fwd = median_ms(&device, || kiln::no_grad(|| Tensor::scaled_dot_product_attention(&q, &k, &v, true, None).map(|_| ())))?;
    report("fused", "forward", fused_fwd, flops_fwd);
    let clear = || [&q, &k, &v].iter().for_each(|t| t.zero_grad());
    let fused_all = median_ms(&device, || {
        clear();
        Tensor::scaled_dot_product_attention(&q, &k, &v, true, None)?.sum_all()?.backward()
    })?;
    report("fused", "forward+backward", fused_all, 3.5 * flops_fwd);
    let mat_fwd = median_ms(&device, || kiln::no_grad(|| materialised(&q, &k, &v, &mask).map(|_| ())))?;
    report("materialised", "forward", mat_fwd, flops_fwd);
    let mat_all = median_ms(&device, || {
        clear();
        materialised(&q, &k, &v, &mask)?.sum_all()?.backward()
    })?;
    report("materialised", "forward+backward", mat_all, 3.5 * flops_fwd);
    Ok(())
}
