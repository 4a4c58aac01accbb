//! Attention benchmark: `Tensor::scaled_dot_product_attention` forward, and forward + backward,
//! on [b, h, t, d] with a chosen kernel path and dtype; `--sweep` runs the shapes that set
//! `Auto`'s materialise-or-flash rule (`kiln-wgpu/src/kernels/attention_path.rs`) on both paths.
//!
//! ```text
//! cargo run --release --example attention_bench -- [b h t d] [--path auto|flash|matmul]
//!     [--dtype f32|f16|autocast] [--no-causal] [--device gpu|cpu] [--mask] [--dropout P]
//! cargo run --release --example attention_bench -- --sweep [--quick]
//! ```
//!
//! One JSON line per measurement: the median ms of at least 5 timed iterations (and at least
//! `--min-s` seconds, default 0.5) after 3 warm-ups, each ending in `sync`; `path` is the path
//! asked for and `taken` the one that ran (a forced `matmul` whose score matrix exceeds the
//! storage-binding limit runs flash); `peak_bytes` is what the buffer pool held at its fullest
//! (live + pooled: each case runs in a fresh process, and the sweep lifts the pool's budget so
//! nothing is released), `input_bytes` q, k, v and the output gradient alone; `score_bytes`
//! the f32 score matrix b·h·t·t·4 the materialised path builds; `tile` the `KILN_FLASH_TILE` in
//! force, if any; `mask` whether a float `[t, t]` attn_mask was added (`--mask`) and `dropout`
//! the attention dropout (`--dropout P`), both through `Tensor::sdpa`. `--sweep` runs every case as a
//! child process and passes its lines through (a failed case prints an `"error"` line).
//! Default shape: 16 4 256 64 (W6).

use kiln::prelude::*;
use std::process::Command;
use std::time::Instant;

/// The sweep: W6 and W10 (the `char_transformer --size large` step) first, then longer
/// sequences; the materialised path cannot run the last two (score matrix past 2 GiB).
const SWEEP: [[usize; 4]; 9] = [
    [16, 4, 256, 64],
    [64, 6, 256, 64],
    [64, 6, 128, 64],
    [64, 6, 512, 64],
    [16, 8, 1024, 64],
    [8, 8, 2048, 64],
    [2, 8, 2048, 128],
    [4, 8, 4096, 64],
    [1, 16, 8192, 128],
];

struct Case {
    shape: [usize; 4],
    causal: bool,
    dtype: String,
    path: String,
    min_s: f64,
    mask: bool,
    dropout: f64,
}

fn median_ms(device: &Device, min_s: f64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
        device.sync()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || start.elapsed().as_secs_f64() < min_s {
        let t = Instant::now();
        f()?;
        device.sync()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(|s| s.as_str())
}

fn run_case(device: &Device, c: &Case) -> Result<()> {
    let [b, h, t, d] = c.shape;
    let path = match c.path.as_str() {
        "flash" => kiln::AttentionPath::Flash,
        "matmul" => kiln::AttentionPath::Materialized,
        _ => kiln::AttentionPath::Auto,
    };
    kiln::set_attention_path(path);
    kiln::manual_seed(0);
    // Inputs and the output gradient in the benchmarked dtype (f32 for autocast, as a model's
    // activations are there).
    let stored = if c.dtype == "f16" { DType::F16 } else { DType::F32 };
    let input = || -> Result<Tensor> { Tensor::randn(&[b, h, t, d], device)?.mul_scalar(0.5)?.to_dtype(stored) };
    let (q, k, v) = (input()?.with_grad(), input()?.with_grad(), input()?.with_grad());
    let g = input()?;
    let mask = if c.mask { Some(Tensor::randn(&[t, t], device)?.mul_scalar(0.1)?) } else { None };
    let opts = SdpaOptions { causal: c.causal, attn_mask: mask.as_ref(), dropout_p: c.dropout, ..Default::default() };
    let attend = || -> Result<Tensor> {
        let f = || Tensor::sdpa(&q, &k, &v, &opts);
        if c.dtype == "autocast" { kiln::autocast(DType::F16, f) } else { f() }
    };
    let taken = match device.gpu_context() {
        Some(ctx) => {
            let p = kiln::AttentionParams::new(b, h, t, t, d, c.causal, 0.0);
            if ctx.attention_materialises(&p) { "matmul" } else { "flash" }
        }
        None => "cpu",
    };
    let fwd = median_ms(device, c.min_s, || kiln::no_grad(|| attend().map(|_| ())))?;
    let clear = || [&q, &k, &v].iter().for_each(|t| t.zero_grad());
    let all = median_ms(device, c.min_s, || {
        clear();
        attend()?.mul(&g)?.sum_all()?.backward()
    })?;
    let stats = device.memory_stats();
    let peak = stats.live_bytes + stats.pooled_bytes;
    let bytes = stored.size_in_bytes() as u64;
    let input_bytes = 4 * (b * h * t * d) as u64 * bytes;
    let score_bytes = (b * h * t * t) as u64 * 4;
    // Useful flops: the causal half of the score matrix, or all of it.
    let flops = 4.0 * (b * h * t * t * d) as f64 / if c.causal { 2.0 } else { 1.0 };
    let tile = std::env::var("KILN_FLASH_TILE").unwrap_or_default();
    for (pass, ms, f) in [("forward", fwd, flops), ("forward+backward", all, 3.5 * flops)] {
        println!(
            "{{\"bench\":\"attention\",\"shape\":[{b},{h},{t},{d}],\"causal\":{},\"dtype\":\"{}\",\"path\":\"{}\",\"taken\":\"{taken}\",\
             \"tile\":\"{tile}\",\"mask\":{},\"dropout\":{},\"pass\":\"{pass}\",\"ms\":{ms:.4},\"tflops\":{:.3},\"peak_bytes\":{peak},\"input_bytes\":{input_bytes},\"score_bytes\":{score_bytes}}}",
            c.causal,
            c.dtype,
            c.path,
            c.mask,
            c.dropout,
            f / ms / 1e9
        );
    }
    Ok(())
}

/// Every sweep case in a child process of its own, so each starts with an empty pool.
fn sweep(quick: bool, min_s: f64) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::invalid("attention_bench", e.to_string()))?;
    let shapes: &[[usize; 4]] = if quick { &SWEEP[..2] } else { &SWEEP };
    let mut cases = Vec::new();
    for &shape in shapes {
        for dtype in ["f32", "f16"] {
            for path in ["flash", "matmul", "auto"] {
                cases.push((shape, true, dtype, path));
            }
        }
    }
    // W10 without the causal mask, as an encoder would run it.
    for path in ["flash", "matmul"] {
        cases.push((SWEEP[1], false, "f32", path));
    }
    if !quick {
        // The whole W10 attention under f16 autocast, as `char_transformer --amp` runs it.
        cases.push((SWEEP[1], true, "autocast", "auto"));
    }
    let mut cases: Vec<_> = cases.into_iter().map(|(s, c, d, p)| (s, c, d, p, "")).collect();
    // W10's flash kernels at other tile shapes (`KILN_FLASH_TILE`, rows/4 x streamed rows per
    // thread), to tune the automatic choice.
    for tile in ["16x1", "8x2", "8x1", "4x2", "4x1"] {
        cases.push((SWEEP[1], true, "f32", "flash", tile));
    }
    for (shape, causal, dtype, path, tile) in cases {
        let [b, h, t, d] = shape;
        let mut cmd = Command::new(&exe);
        if !tile.is_empty() {
            cmd.env("KILN_FLASH_TILE", tile);
        }
        cmd.args([b, h, t, d].map(|x| x.to_string()))
            .args(["--path", path, "--dtype", dtype, "--min-s", &min_s.to_string()])
            .env("KILN_POOL_BUDGET_MB", "1000000");
        if !causal {
            cmd.arg("--no-causal");
        }
        let out = cmd.output().map_err(|e| Error::invalid("attention_bench", e.to_string()))?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").replace('"', "'");
            println!(
                "{{\"bench\":\"attention\",\"shape\":[{b},{h},{t},{d}],\"causal\":{causal},\"dtype\":\"{dtype}\",\"path\":\"{path}\",\"error\":\"{last}\"}}"
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let min_s = flag(&args, "--min-s").and_then(|s| s.parse().ok()).unwrap_or(0.5);
    if args.iter().any(|a| a == "--sweep") {
        return sweep(args.iter().any(|a| a == "--quick"), min_s);
    }
    let device = Device::parse(flag(&args, "--device").unwrap_or("gpu"))?;
    let dims: Vec<usize> = args.iter().take_while(|a| !a.starts_with("--")).filter_map(|a| a.parse().ok()).collect();
    let shape = match dims[..] {
        [b, h, t, d] => [b, h, t, d],
        _ => [16, 4, 256, 64],
    };
    let case = Case {
        shape,
        causal: !args.iter().any(|a| a == "--no-causal"),
        dtype: flag(&args, "--dtype").unwrap_or("f32").to_string(),
        path: flag(&args, "--path").unwrap_or("auto").to_string(),
        min_s,
        mask: args.iter().any(|a| a == "--mask"),
        dropout: flag(&args, "--dropout").and_then(|s| s.parse().ok()).unwrap_or(0.0),
    };
    if !["f32", "f16", "autocast"].contains(&case.dtype.as_str())
        || !["auto", "flash", "matmul"].contains(&case.path.as_str())
    {
        return Err(Error::invalid(
            "attention_bench",
            "--dtype takes f32, f16 or autocast; --path auto, flash or matmul",
        ));
    }
    eprintln!("{} — {:?}, causal {}, {}, path {}", device.describe(), case.shape, case.causal, case.dtype, case.path);
    run_case(&device, &case)
}
