//! `kiln-ddp`: data-parallel W6 (the decoder-only transformer training step of WORKLOADS.md,
//! batch 16 × 256 tokens per process) on one process, or on N under `mpirun -n N` (build with
//! `--features mpi`), one JSON line per run on rank 0:
//!
//! ```text
//! cargo run --release -p kiln-bench --bin kiln-ddp -- --plain          # W6 without DDP: the baseline
//! cargo run --release -p kiln-bench --bin kiln-ddp                     # W6 through DDP, one rank
//! mpirun -n 2 target/release/kiln-ddp                                  # two processes (features mpi)
//! ```
//!
//! Each process trains on its own batch (weak scaling: the global batch is N × 16), so
//! `tokens/s` is the whole job's and `tokens/s ÷ (N × plain)` the scaling efficiency. Besides
//! the step time it reports what the gradient all-reduce costs per step: `allreduce_ms` from
//! the first bucket's readback to the last bucket's upload (overlapped with backward),
//! `exposed_ms` the part left after backward, and `sync_ms` / `host_gbps` for a
//! synchronisation alone (no backward to hide behind): the gradients' bytes × 2 (GPU → host,
//! host → GPU) per second of it.
//!
//! Flags: `--plain`, `--small` (batch 2 × 64, for a software adapter), `--steps N` (timed,
//! default 20), `--bucket-mb F` (default 25), `--device WORD` (default: this rank's GPU, see
//! `kiln_dist::local_device`).

#[path = "../models.rs"]
#[allow(dead_code)]
mod models;

use kiln_core::{Device, Tensor};
use kiln_dist::{DdpConfig, DistributedDataParallel};
use kiln_nn::ModuleExt;
use kiln_nn::optim::{AdamW, AdamWConfig, Optimizer};
use models::{GPT_VOCAB, Gpt, positions};
use std::time::Instant;

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const WARMUP: usize = 3;

struct Args {
    plain: bool,
    small: bool,
    steps: usize,
    bucket_mb: f64,
    device: Option<String>,
}

fn parse() -> AnyResult<Args> {
    let mut a = Args { plain: false, small: false, steps: 20, bucket_mb: 25.0, device: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--plain" => a.plain = true,
            "--small" => a.small = true,
            "--steps" => a.steps = value()?.parse()?,
            "--bucket-mb" => a.bucket_mb = value()?.parse()?,
            "--device" => a.device = Some(value()?),
            "--help" | "-h" => {
                println!(
                    "kiln-ddp [--plain] [--small] [--steps N] [--bucket-mb F] [--device WORD]   (under mpirun: one process per GPU)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    Ok(a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("kiln-ddp: {e}");
        std::process::exit(1);
    }
}

fn ids(n: usize, seed: u64, device: &Device) -> kiln_core::Result<Tensor> {
    let mut s = seed;
    let v: Vec<u32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % GPT_VOCAB as u64) as u32
        })
        .collect();
    Tensor::from_vec(v, &[n], device)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run() -> AnyResult<()> {
    let args = parse()?;
    let comm = if args.plain { Box::new(kiln_dist::Solo) } else { kiln_dist::init()? };
    let (rank, world) = (comm.rank(), comm.world());
    let device = match &args.device {
        Some(w) => Device::parse(w)?,
        None => kiln_dist::local_device()?,
    };
    let (b, s) = if args.small { (2, 64) } else { (16, 256) };
    kiln_core::manual_seed(0);
    let model = Gpt::new(&device)?;
    model.train();
    let cfg = DdpConfig { bucket_bytes: (args.bucket_mb * 1024.0 * 1024.0) as usize, ..DdpConfig::default() };
    let mut ddp = if args.plain { None } else { Some(DistributedDataParallel::new(&model, comm, cfg)?) };
    let mut opt = AdamW::new(model.parameters(), AdamWConfig { lr: 1e-3, weight_decay: 0.01, ..Default::default() })?;
    let tokens = ids(b * s, 6 + rank as u64, &device)?.reshape(&[b, s])?;
    let targets = ids(b * s, 7 + rank as u64, &device)?;
    let pos = positions(s, &device)?;
    let mut step = |ddp: &mut Option<DistributedDataParallel>| -> AnyResult<()> {
        let logits = model.logits(&tokens, &pos)?.reshape(&[b * s, GPT_VOCAB])?;
        let loss = kiln_nn::loss::cross_entropy_loss(&logits, &targets)?;
        opt.zero_grad();
        match ddp {
            Some(d) => d.backward(&loss, b)?,
            None => loss.backward()?,
        }
        opt.step()?;
        device.sync()?;
        Ok(())
    };
    for _ in 0..WARMUP {
        step(&mut ddp)?;
    }
    let (mut times, mut comm_ms, mut wait_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.steps {
        let t = Instant::now();
        step(&mut ddp)?;
        times.push(t.elapsed().as_secs_f64());
        if let Some(d) = &ddp {
            comm_ms.push(d.stats().last_comm_secs * 1e3);
            wait_ms.push(d.stats().last_wait_secs * 1e3);
        }
    }
    // A synchronisation alone: the full GPU → host → all-reduce → GPU path, nothing to hide behind.
    // Each round first accumulates one batch locally (`no_sync`): `sync` with no samples since
    // the last one is an error by design.
    let mut sync_ms = Vec::new();
    if let Some(d) = &mut ddp {
        for _ in 0..args.steps.min(10) {
            let logits = model.logits(&tokens, &pos)?.reshape(&[b * s, GPT_VOCAB])?;
            let loss = kiln_nn::loss::cross_entropy_loss(&logits, &targets)?;
            d.no_sync(|d| d.backward(&loss, b))?;
            device.sync()?;
            let t = Instant::now();
            d.sync()?;
            device.sync()?;
            sync_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let step_s = median(times);
    let grad_bytes = model.parameters().iter().map(|p| p.numel() as f64 * 4.0).sum::<f64>();
    if rank != 0 {
        return Ok(());
    }
    let adapter = match device.gpu_context() {
        Some(g) => format!("{} ({})", g.summary.name, g.summary.backend),
        None => device.describe(),
    };
    let mut line = format!(
        "{{\"framework\": \"kiln-{}\", \"adapter\": {adapter:?}, \"workload\": \"W6-ddp\", \"size\": \"b{b}s{s}\", \"mode\": {:?}, \"processes\": {world}, \"metric\": \"tokens/s\", \"value\": {:.1}, \"step_ms\": {:.3}, \"grad_mb\": {:.2}",
        env!("CARGO_PKG_VERSION"),
        if args.plain { "plain" } else { "ddp" },
        (world * b * s) as f64 / step_s,
        step_s * 1e3,
        grad_bytes / 1e6,
    );
    if !comm_ms.is_empty() {
        let sync = median(sync_ms);
        line.push_str(&format!(
            ", \"allreduce_ms\": {:.3}, \"exposed_ms\": {:.3}, \"sync_ms\": {sync:.3}, \"host_gbps\": {:.3}, \"bucket_mb\": {}",
            median(comm_ms),
            median(wait_ms),
            2.0 * grad_bytes / (sync * 1e-3) / 1e9,
            args.bucket_mb
        ));
    }
    line.push('}');
    println!("{line}");
    Ok(())
}
