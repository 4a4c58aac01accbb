//! The timing protocol of WORKLOADS.md and the JSON line format shared with `torch_bench.py`
//! and `burn-bench`.

use kiln_core::{Device, Result};
use std::io::Write;
use std::time::{Duration, Instant};

/// Untimed iterations before measuring: pipelines get built and the buffer pool filled.
pub const WARMUP_ITERS: usize = 3;
/// The fewest timed iterations behind a median.
pub const MIN_ITERS: usize = 5;

/// What every workload needs: the device, the size class and where results go.
pub struct Ctx {
    pub framework: String,
    pub adapter: String,
    pub small: bool,
    /// Model workloads run under f16 autocast with a `GradScaler` (`--amp`).
    pub amp: bool,
    /// W10's optimizer steps (`--steps`, or its default for the size class).
    pub w10_steps: usize,
    pub device: Device,
    only: Option<Vec<String>>,
    deadline: Option<Instant>,
    min_time: Duration,
    /// Buffers the pool asked the driver for per timed iteration, once a loop has timed some.
    allocs_per_iter: std::cell::Cell<Option<f64>>,
}

impl Ctx {
    pub fn new(device: Device, adapter: String, args: &crate::args::Args, start: Instant) -> Ctx {
        Ctx {
            framework: format!("kiln-{}{}", env!("CARGO_PKG_VERSION"), if args.amp { "-amp" } else { "" }),
            adapter,
            small: args.small,
            amp: args.amp,
            w10_steps: args.steps.unwrap_or(if args.small { 30 } else { 300 }),
            device,
            only: args.only.clone(),
            deadline: args.max_seconds.map(|s| start + Duration::from_secs_f64(s)),
            min_time: Duration::from_secs_f64(args.min_time),
            allocs_per_iter: std::cell::Cell::new(None),
        }
    }

    /// Buffers the pool has asked the driver for so far (0 on the CPU backend).
    pub fn allocations(&self) -> u64 {
        if self.device.is_gpu() { self.device.memory_stats().allocations } else { 0 }
    }

    /// The timed loop that started at `allocations_before` ran `iters` iterations: see
    /// `allocs_per_step` in [`Ctx::memory_keys`].
    pub fn note_timed(&self, allocations_before: u64, iters: usize) {
        let n = iters.max(1) as f64;
        self.allocs_per_iter.set(Some(self.allocations().saturating_sub(allocations_before) as f64 / n));
    }

    /// Was `id` asked for? `W4` selects `W4a` and `W4b`, `W8` selects `W8a` and `W8b`; `W1` does
    /// not select `W1h`.
    pub fn selected(&self, id: &str) -> bool {
        let Some(list) = &self.only else { return true };
        let id = id.to_ascii_lowercase();
        list.iter().any(|w| {
            *w == id
                || (id.len() == w.len() + 1 && id.starts_with(w.as_str()) && (id.ends_with('a') || id.ends_with('b')))
        })
    }

    pub fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Waits for every recorded GPU command: how each timed iteration ends.
    pub fn sync(&self) -> Result<()> {
        self.device.sync()
    }

    /// Prints one result line on stdout.
    pub fn emit(&self, workload: &str, size: &str, metric: &str, value: f64) {
        self.emit_with(workload, size, metric, value, &[]);
    }

    /// A result line with the device's memory since the workload started (see
    /// [`Ctx::memory_keys`]) after the six keys; the model workloads report this way.
    pub fn emit_with_memory(&self, workload: &str, size: &str, metric: &str, value: f64) {
        self.emit_with(workload, size, metric, value, &self.memory_keys());
    }

    /// On a GPU: `peak_pool_mib`, the most bytes the buffer pool held from the driver (in
    /// tensors plus free for reuse; PyTorch's `max_memory_reserved`), `peak_live_mib`, the most in
    /// tensors (`max_memory_allocated`), both since `main` reset the peaks before the workload,
    /// and `live_mib`, the bytes in tensors now (the model, its gradients and optimizer state);
    /// and `allocs_per_step`, buffers asked from the driver per timed step (0 when the pool
    /// recycles every step's buffers, as it should once warm).
    /// Nothing on the CPU backend, which does not count its memory.
    pub fn memory_keys(&self) -> Vec<(&'static str, f64)> {
        if !self.device.is_gpu() {
            return Vec::new();
        }
        let m = self.device.memory_stats();
        let mib = |b: u64| b as f64 / 1048576.0;
        // Under KILN_MEMORY_CENSUS=1: which ops' outputs made up the live peak.
        for (op, buffers, bytes) in self.device.memory_census().into_iter().take(20) {
            eprintln!("  live at peak: {:>10.1} MiB in {buffers:>5} buffers from {op}", mib(bytes));
        }
        let mut keys = vec![
            ("peak_pool_mib", mib(m.peak_total_bytes)),
            ("peak_live_mib", mib(m.peak_live_bytes)),
            ("live_mib", mib(m.live_bytes)),
        ];
        if let Some(a) = self.allocs_per_iter.get() {
            keys.push(("allocs_per_step", a));
        }
        keys
    }

    /// One result line: the six keys every program prints, then `extra` numbers.
    pub fn emit_with(&self, workload: &str, size: &str, metric: &str, value: f64, extra: &[(&str, f64)]) {
        let mut line = format!(
            "{{\"framework\": {}, \"adapter\": {}, \"workload\": {}, \"size\": {}, \"metric\": {}, \"value\": {}",
            json_str(&self.framework),
            json_str(&self.adapter),
            json_str(workload),
            json_str(size),
            json_str(metric),
            json_num(value)
        );
        for (key, v) in extra {
            // Counts (W10's steps) print as whole numbers.
            let num = if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { json_num(*v) };
            line.push_str(&format!(", {}: {num}", json_str(key)));
        }
        line.push('}');
        let mut out = std::io::stdout().lock();
        // A closed stdout (`| head`) is not worth a panic: the results just go nowhere.
        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number: four decimals like the other two programs, but tiny values keep their
/// significant digits (exponent form) instead of rounding to 0; `null` when not finite.
pub fn json_num(v: f64) -> String {
    if !v.is_finite() {
        "null".into()
    } else if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

/// The median (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// Per iteration: `setup` (untimed), then `run` (timed; it must end with the device
/// synchronised). `WARMUP_ITERS` warm-up iterations, then timed ones until both `MIN_ITERS`
/// iterations and the minimum time are reached (or `MIN_ITERS` once past `--max-seconds`).
/// Returns the median iteration in seconds.
pub fn measure_with_setup<T>(
    ctx: &Ctx,
    label: &str,
    mut setup: impl FnMut() -> Result<T>,
    mut run: impl FnMut(T) -> Result<()>,
) -> Result<f64> {
    let t_warm = Instant::now();
    for _ in 0..WARMUP_ITERS {
        run(setup()?)?;
    }
    let warm = t_warm.elapsed().as_secs_f64();
    let allocations_before = ctx.allocations();
    let mut times = Vec::new();
    let mut measured = Duration::ZERO;
    loop {
        let input = setup()?;
        let t0 = Instant::now();
        run(input)?;
        let dt = t0.elapsed();
        measured += dt;
        times.push(dt.as_secs_f64());
        if times.len() >= MIN_ITERS && (measured >= ctx.min_time || ctx.past_deadline()) {
            break;
        }
    }
    let n = times.len();
    ctx.note_timed(allocations_before, n);
    let med = median(times);
    eprintln!("  {label}: warm-up {warm:.3} s ({WARMUP_ITERS} it), {n} timed it, median {:.3} ms", med * 1e3);
    Ok(med)
}

/// [`measure_with_setup`] without a setup step.
pub fn measure(ctx: &Ctx, label: &str, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    measure_with_setup(ctx, label, || Ok(()), |()| run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_literals() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(json_num(1234.56789), "1234.5679");
        assert_eq!(json_num(0.0), "0.0000");
        assert_eq!(json_num(f64::NAN), "null");
        assert_eq!(json_num(1.5e-5), "1.5000e-5");
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
