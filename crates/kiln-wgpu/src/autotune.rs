//! Matmul tile autotuning. The first float matmul of a shape class (dtype, operand layout classes,
//! and the log2 buckets of batch, m, n and k) times every candidate tile on the real operands and
//! keeps the fastest; later matmuls of the class reuse the choice. Where split k applies (few
//! output tiles, long k) each tile is also timed split into about the size rule's number of k
//! ranges, half and twice that; such classes end in `|sk` and their choices read like
//! `64x64x16/4x4/s8`. Choices persist in the cache directory, one file per adapter and driver, so
//! tuning happens once per machine; a stored choice this build cannot read is tuned again, and
//! so is every class after the set of candidate tiles changes (classes carry `|t<fingerprint>`).
//!
//! On by default on hardware adapters; off on software ones (lavapipe: the timings are noisy and
//! the fixed rule already picks the right tile there), where the size heuristic decides.
//! `KILN_AUTOTUNE=1` or `0` overrides. Timing is wall time around synchronised batches (see
//! [`time_runs`]): the tuner waits for the GPU several times per candidate, which is why it only
//! runs once per class.

use crate::pipeline_cache::write_atomic;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Each candidate is timed over repetitions adding up to about this long.
const TARGET: Duration = Duration::from_millis(3);
/// Batches stop doubling here (a run shorter than `TARGET / MAX_REPS` is timed in a shorter
/// batch).
const MAX_REPS: u32 = 64;
/// Warm-up batches last at least this long (see [`warm_up`]).
const WARM_BATCH: Duration = Duration::from_millis(10);
const WARM_MIN: Duration = Duration::from_millis(200);
const WARM_MAX: Duration = Duration::from_millis(1500);

pub(crate) struct Tuner {
    pub(crate) enabled: bool,
    path: Option<PathBuf>,
    choices: Mutex<Option<HashMap<String, String>>>,
    /// Test hook: every float tiled matmul takes this candidate (`usize::MAX`: none).
    forced: AtomicUsize,
    /// Test hook: every float tiled matmul runs as this many k ranges (`0`: none).
    forced_split: AtomicUsize,
    /// Test hook: every f16 matmul on cooperative matrices takes this block (`usize::MAX`: none).
    forced_coop: AtomicUsize,
    /// Matmul kernels keep naga's runtime checks (`KILN_MM_CHECKS=1`; a bench hook).
    checked: AtomicBool,
    /// `KILN_AUTOTUNE_LOG=1`: every timed candidate goes to stderr as one line (`autotune …`),
    /// with the product's dims and layouts, so that a sweep over a real workload's shapes needs
    /// no other tool (`benches/torch_matmul_shapes.py` times the same products in PyTorch).
    pub(crate) log: bool,
}

impl Tuner {
    pub(crate) fn new(enabled: bool, dir: Option<&std::path::Path>, tag: &str) -> Tuner {
        let path = dir.map(|d| d.join(format!("matmul-tune-{tag}.txt")));
        Tuner {
            enabled,
            path,
            choices: Mutex::new(None),
            forced: AtomicUsize::new(usize::MAX),
            forced_split: AtomicUsize::new(0),
            forced_coop: AtomicUsize::new(usize::MAX),
            checked: AtomicBool::new(std::env::var("KILN_MM_CHECKS").is_ok_and(|v| v.trim() == "1")),
            log: std::env::var("KILN_AUTOTUNE_LOG").is_ok_and(|v| v.trim() == "1"),
        }
    }

    pub(crate) fn forced_coop(&self) -> Option<usize> {
        Some(self.forced_coop.load(Ordering::Relaxed)).filter(|&i| i != usize::MAX)
    }

    pub(crate) fn checked(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }

    pub(crate) fn forced(&self) -> Option<usize> {
        Some(self.forced.load(Ordering::Relaxed)).filter(|&i| i != usize::MAX)
    }

    pub(crate) fn force(&self, index: Option<usize>) {
        self.forced.store(index.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    pub(crate) fn forced_split(&self) -> Option<usize> {
        Some(self.forced_split.load(Ordering::Relaxed)).filter(|&s| s != 0)
    }

    /// The stored choice for `class`, loading the file on first use.
    pub(crate) fn lookup(&self, class: &str) -> Option<String> {
        let mut guard = self.choices.lock().unwrap_or_else(|e| e.into_inner());
        guard.get_or_insert_with(|| self.load()).get(class).cloned()
    }

    /// Records (and persists) the winner for `class`.
    pub(crate) fn store(&self, class: &str, tile: &str) {
        let mut guard = self.choices.lock().unwrap_or_else(|e| e.into_inner());
        let map = guard.get_or_insert_with(|| self.load());
        map.insert(class.to_string(), tile.to_string());
        if let Some(path) = &self.path {
            let mut lines: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
            lines.sort();
            // A write failure only means the next run tunes again.
            if path.parent().is_some_and(|d| std::fs::create_dir_all(d).is_ok()) {
                let _ = write_atomic(path, lines.concat().as_bytes());
            }
        }
    }

    /// The number of classes with a choice (tests).
    pub(crate) fn len(&self) -> usize {
        let mut guard = self.choices.lock().unwrap_or_else(|e| e.into_inner());
        guard.get_or_insert_with(|| self.load()).len()
    }

    fn load(&self) -> HashMap<String, String> {
        let Some(text) = self.path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) else {
            return HashMap::new();
        };
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.trim().rsplit_once(' ')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect()
    }
}

impl crate::context::GpuContext {
    /// Whether float matmuls are autotuned on this context.
    pub fn autotune_enabled(&self) -> bool {
        self.tuner.enabled
    }

    /// Shape classes the matmul autotuner has a choice for (loaded or tuned).
    pub fn autotuned_classes(&self) -> usize {
        self.tuner.len()
    }

    /// How many tile configurations the matmul autotuner chooses from on this adapter.
    pub fn matmul_candidates(&self) -> usize {
        crate::kernels::matmul::candidate_count(self)
    }

    /// How many blocks the f16 cooperative-matrix matmul's autotuner chooses from (see
    /// [`force_coop_candidate`](Self::force_coop_candidate)); they run only where the adapter
    /// has cooperative matrices.
    pub fn coop_candidates(&self) -> usize {
        crate::kernels::matmul_coop::candidate_count()
    }

    /// Makes every float tiled matmul take candidate `index` (`None`: back to normal), so that
    /// tests can check each configuration against the CPU.
    #[doc(hidden)]
    pub fn force_matmul_candidate(&self, index: Option<usize>) {
        self.tuner.force(index);
    }

    /// Makes every float tiled matmul run as `splits` k ranges (split k; `Some(1)`: never split,
    /// `None`: back to normal), so that tests can exercise the split kernel where the size rule
    /// would not split. Applies even where split k is turned off.
    #[doc(hidden)]
    pub fn force_matmul_split(&self, splits: Option<usize>) {
        self.tuner.forced_split.store(splits.map_or(0, |s| s.max(1)), Ordering::Relaxed);
    }

    /// Makes every f16 matmul that takes cooperative matrices use candidate block `index` of
    /// [`coop_candidates`](Self::coop_candidates) (`None`: back to normal), so that tests and
    /// the bench can run each.
    #[doc(hidden)]
    pub fn force_coop_candidate(&self, index: Option<usize>) {
        self.tuner.forced_coop.store(index.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// Builds the tiled and cooperative matmul kernels with naga's runtime checks (index clamps,
    /// loop counters) or, by default, without: for the bench to measure the difference.
    #[doc(hidden)]
    pub fn force_matmul_checks(&self, on: bool) {
        self.tuner.checked.store(on, Ordering::Relaxed);
    }

    /// The matmul autotuner's choices so far, `(shape class, choice)` sorted by class: what the
    /// bench prints.
    #[doc(hidden)]
    pub fn autotuned_choices(&self) -> Vec<(String, String)> {
        let mut guard = self.tuner.choices.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> =
            guard.get_or_insert_with(|| self.tuner.load()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort();
        all
    }
}

/// `ceil(log2(x))`, the bucket a dimension falls in.
pub(crate) fn bucket(x: usize) -> u32 {
    x.max(1).next_power_of_two().trailing_zeros()
}

/// Times every candidate of one shape class on the real operands: `run(c)` records one product
/// in configuration `c`, `sync` waits for the GPU. Returns each candidate that could be built and
/// run with its seconds per run, in the given order.
///
/// Three things would otherwise swamp the kernels' own times (session 7 saw every tile of a
/// 167 µs product at 0.8–1.2 ms; session 8 saw the first half of a class's candidates 3–6× slow
/// and one at an impossible 130 TFLOP/s where the clock rose mid-measurement):
/// - the driver compiling each candidate's pipeline (tens of ms, the GPU idle meanwhile): every
///   candidate is built and run once before any is timed;
/// - a GPU that has been idle running below its clock: the first candidate then runs back to back
///   until two batches agree ([`warm_up`]);
/// - the fixed cost of submitting and waiting: see [`time_runs`].
pub(crate) fn time_candidates<C: Copy>(
    candidates: &[C],
    mut run: impl FnMut(C) -> kiln_backend::Result<()>,
    sync: impl Fn() -> kiln_backend::Result<()>,
) -> Vec<(C, f64)> {
    // A candidate this driver cannot build or run is no choice; the others still are.
    let built: Vec<C> = candidates.iter().copied().filter(|&c| run(c).is_ok()).collect();
    if sync().is_err() {
        return Vec::new();
    }
    if let Some(&first) = built.first()
        && warm_up(|| run(first), &sync).is_err()
    {
        return Vec::new();
    }
    built.into_iter().filter_map(|c| time_runs(|| run(c), &sync).ok().map(|secs| (c, secs))).collect()
}

/// The GPU's clock rises only after it has been busy for a while: runs `run` in batches of at
/// least `WARM_BATCH` until two batches in a row agree within 3 % per run, after `WARM_MIN` and
/// for at most `WARM_MAX`.
fn warm_up(
    mut run: impl FnMut() -> kiln_backend::Result<()>,
    sync: impl Fn() -> kiln_backend::Result<()>,
) -> kiln_backend::Result<()> {
    let start = Instant::now();
    let (mut reps, mut last) = (1u32, f64::INFINITY);
    loop {
        let batch = Duration::from_secs_f64(time_batch(&mut run, &sync, reps)?);
        if start.elapsed() >= WARM_MAX {
            return Ok(());
        }
        if batch < WARM_BATCH && reps < 1 << 12 {
            reps *= 2;
            continue;
        }
        let per_run = batch.as_secs_f64() / reps as f64;
        if start.elapsed() >= WARM_MIN && (per_run - last).abs() <= 0.03 * per_run {
            return Ok(());
        }
        last = per_run;
    }
}

/// Seconds per run of `run` (which records one dispatch); `sync` waits for the GPU. The
/// pipeline is built and the GPU warm (see [`time_candidates`]).
///
/// The candidate runs back to back, doubling the batch until one batch lasts `TARGET`; then
/// batches of n, 2n and n runs are timed, and the time per run is the difference between the
/// 2n batch and the faster n batch, over n: the fixed cost of submitting and waiting cancels. A
/// difference outside [half, all] of the 2n batch's mean can only come from a disturbance
/// (a clock change, another process); the mean, an upper bound, is taken then.
pub(crate) fn time_runs(
    mut run: impl FnMut() -> kiln_backend::Result<()>,
    sync: impl Fn() -> kiln_backend::Result<()>,
) -> kiln_backend::Result<f64> {
    let mut batch = |reps: u32| time_batch(&mut run, &sync, reps);
    let mut reps = 1;
    while batch(reps)? < TARGET.as_secs_f64() && reps < MAX_REPS {
        reps *= 2;
    }
    let once = batch(reps)?;
    let twice = batch(2 * reps)?;
    let once = once.min(batch(reps)?);
    let mean = twice / (2 * reps) as f64;
    let per_run = (twice - once) / reps as f64;
    Ok(if per_run >= 0.5 * mean && per_run <= mean { per_run } else { mean })
}

/// Wall seconds of `reps` runs of `run` back to back and one `sync`.
fn time_batch(
    run: &mut impl FnMut() -> kiln_backend::Result<()>,
    sync: &impl Fn() -> kiln_backend::Result<()>,
    reps: u32,
) -> kiln_backend::Result<f64> {
    let t0 = Instant::now();
    for _ in 0..reps {
        run()?;
    }
    sync()?;
    Ok(t0.elapsed().as_secs_f64())
}
