//! `kiln-bench`: Kiln's run of the benchmark suite in `shared/bench/WORKLOADS.md`.
//!
//! Prints one JSON object per result on stdout, joinable with `torch_bench.py` and `burn-bench`
//! on (workload, size):
//!
//! ```text
//! {"framework": "kiln-0.1.0", "adapter": "NVIDIA H100 80GB HBM3 (vulkan)", "workload": "W1", "size": "4096", "metric": "GFLOP/s", "value": 1234.5}
//! ```
//!
//! Progress, per-result timing detail and failures go to stderr. A workload that fails (out of
//! memory, a missing kernel) is reported there and the suite goes on with the next one.

mod args;
mod harness;
mod inputs;
mod models;
mod ops;
mod steps;
mod transfer;
mod w10;
mod w11;

use harness::Ctx;
use kiln_core::{Device, Result, Tensor};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

type Workload = fn(&Ctx) -> Result<()>;

/// Every workload in the order the baselines run them: (name, ids it reports, function).
const WORKLOADS: &[(&str, &[&str], Workload)] = &[
    ("W1", &["W1"], ops::w1),
    ("W1h", &["W1h"], ops::w1h),
    ("W2", &["W2"], ops::w2),
    ("W3", &["W3"], ops::w3),
    ("W4", &["W4a", "W4b"], ops::w4),
    ("W5", &["W5"], steps::w5),
    ("W6", &["W6"], steps::w6),
    ("W6d", &["W6d"], steps::w6d),
    ("W7", &["W7"], steps::w7),
    ("W8a", &["W8a"], transfer::w8a),
    ("W8b", &["W8b"], transfer::w8b),
    ("W9", &["W9"], steps::w9),
    ("W10", &["W10"], w10::w10),
    ("W11", &["W11"], w11::w11),
];

fn open_device(word: &str) -> Result<Device> {
    match word.trim().to_ascii_lowercase().as_str() {
        // `Device::gpu` honours KILN_DEVICE, as every other Kiln program does.
        "gpu" => Device::gpu(),
        other => Device::parse(other),
    }
}

/// "<adapter name> (<backend>)" for a GPU, like torch's "<name> (CUDA <ver>)"; the CPU
/// backend describes itself.
fn adapter_label(device: &Device) -> String {
    match device.gpu_context() {
        Some(g) => format!("{} ({})", g.summary.name, g.summary.backend),
        None => device.describe(),
    }
}

/// One tiny op and readback, so that device start-up is not charged to the first workload and
/// a broken device is caught before anything is timed.
fn self_check(device: &Device) -> Result<()> {
    let v = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], device)?.mul_scalar(2.0)?.to_vec::<f32>()?;
    if v != [2.0, 4.0, 6.0] {
        return Err(kiln_core::Error::Backend { op: "self-check", msg: format!("[1, 2, 3] * 2 gave {v:?}") });
    }
    Ok(())
}

fn main() {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{}", args::USAGE);
            return;
        }
        Err(e) => {
            eprintln!("kiln-bench: {e}\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    let device = match open_device(&args.device).and_then(|d| self_check(&d).map(|()| d)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kiln-bench: no usable device for --device {}: {e}", args.device);
            std::process::exit(2);
        }
    };
    let adapter = adapter_label(&device);
    let ctx = Ctx::new(device, adapter, &args, start);
    eprintln!("kiln-bench: framework={} device={} small={}", ctx.framework, ctx.device.describe(), ctx.small);

    let mut failed = Vec::new();
    for &(name, ids, run) in WORKLOADS {
        if !ids.iter().any(|id| ctx.selected(id)) {
            continue;
        }
        if ctx.past_deadline() {
            eprintln!("{name}: skipped (--max-seconds reached)");
            continue;
        }
        eprintln!("{name}: start");
        // Each workload's memory peaks start from what it inherits: no free buffers (as
        // torch_bench.py empties PyTorch's cache after each workload) and its live bytes.
        if let Err(e) = ctx.sync() {
            eprintln!("{name}: FAILED: the device did not settle before it: {e}");
            failed.push(name);
            continue;
        }
        ctx.device.empty_cache();
        ctx.device.reset_peak_memory_stats();
        let t0 = Instant::now();
        // A panic inside Kiln is a bug, but it must not hide the other workloads' numbers.
        match catch_unwind(AssertUnwindSafe(|| run(&ctx))) {
            Ok(Ok(())) => {
                // Live bytes after a workload should be ~0: its tensors are gone, the pool keeps the rest.
                let m = ctx.device.memory_stats();
                let mem = if ctx.device.is_gpu() {
                    format!(
                        " (live {:.1} MiB, pooled {:.1} MiB, {} pipelines)",
                        m.live_bytes as f64 / 1048576.0,
                        m.pooled_bytes as f64 / 1048576.0,
                        m.pipelines
                    )
                } else {
                    String::new()
                };
                eprintln!("{name}: done in {:.1} s{mem}", t0.elapsed().as_secs_f64());
            }
            Ok(Err(e)) => {
                eprintln!("{name}: FAILED: {e}");
                failed.push(name);
            }
            Err(_) => {
                eprintln!("{name}: FAILED (panic, see above)");
                failed.push(name);
            }
        }
    }
    let failures = if failed.is_empty() { String::new() } else { format!(", failed: {}", failed.join(" ")) };
    eprintln!("kiln-bench: total {:.1} s{failures}", start.elapsed().as_secs_f64());
}
