//! Which attention kernels run: the flash kernels (`attention.rs`: no score matrix, any
//! sequence length) or the materialised path (`attention_matmul.rs`: the `[bh, q, kv]` score
//! matrix built by batched matmuls, several times faster while that matrix is small). A
//! process-wide switch, `KILN_ATTENTION=auto|flash|matmul` or [`set_attention_path`], for A/B
//! runs and tests; both paths give the same results within rounding.

use kiln_backend::AttentionParams;
use std::sync::atomic::{AtomicU8, Ordering};

/// The attention kernels to use on GPU devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttentionPath {
    /// Materialised while the score matrix fits [`ATTENTION_SCORE_BUDGET`], flash beyond.
    Auto,
    /// Always the flash kernels.
    Flash,
    /// The materialised path whenever its score matrix fits one storage binding (beyond
    /// that, flash: the materialised path cannot run there).
    Materialized,
}

/// Bytes of f32 scores (`batch·heads·q_len·kv_len·4`) up to which `Auto` materialises them
/// (see [`auto_materialises`], the one place the rule lives). Measured on an H100 (Vulkan,
/// 2026-12-07, f32, causal, forward + backward, the flash kernels before their register
/// tiling): the materialised path took 1.43 ms against 6.87 for flash at W10's [64, 6, 256, 64]
/// (96 MiB of scores), 0.40 against 1.63 at W6's [16, 4, 256, 64], 6.69 against 31.4 at
/// [16, 8, 1024, 64] (512 MiB): 4-5× faster wherever it fit. So the budget only bounds memory:
/// the backward holds two such matrices (P and dS) while one layer's gradient runs, 2 GiB at
/// most, where the flash kernels hold nothing of that size.
pub const ATTENTION_SCORE_BUDGET: u64 = 1 << 30;

/// 0: not decided yet (read `KILN_ATTENTION` on first use), then 1 + the path's index.
static SWITCH: AtomicU8 = AtomicU8::new(0);

const PATHS: [AttentionPath; 3] = [AttentionPath::Auto, AttentionPath::Flash, AttentionPath::Materialized];

/// Chooses the attention kernels for every GPU device from now on (default: `Auto`, or
/// `KILN_ATTENTION`). Results are the same either way, within rounding.
pub fn set_attention_path(path: AttentionPath) {
    let code = PATHS.iter().position(|&p| p == path).unwrap_or(0) as u8 + 1;
    SWITCH.store(code, Ordering::SeqCst);
}

/// The attention kernels in use.
pub fn attention_path() -> AttentionPath {
    let code = SWITCH.load(Ordering::Relaxed);
    if code != 0 {
        return PATHS[(code - 1) as usize];
    }
    let path = std::env::var("KILN_ATTENTION").map_or(AttentionPath::Auto, |v| parse(&v));
    let code = PATHS.iter().position(|&p| p == path).unwrap_or(0) as u8 + 1;
    // A concurrent `set_attention_path` wins over the environment.
    let _ = SWITCH.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
    PATHS[(SWITCH.load(Ordering::Relaxed) - 1) as usize]
}

fn parse(value: &str) -> AttentionPath {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => AttentionPath::Auto,
        "flash" => AttentionPath::Flash,
        "matmul" | "materialized" | "materialised" => AttentionPath::Materialized,
        other => {
            eprintln!("kiln: KILN_ATTENTION={other:?} is not auto, flash or matmul; using auto");
            AttentionPath::Auto
        }
    }
}

/// Whether a call takes the materialised path: `path` as set, `max_binding` the adapter's
/// storage-binding limit, which the pooled score buffer must fit. Empty calls take the flash
/// kernels, which handle them without dispatching.
pub(crate) fn materialise(path: AttentionPath, p: &AttentionParams, max_binding: u64) -> bool {
    let scores = [p.batch, p.heads, p.q_len, p.kv_len].iter().try_fold(1u64, |acc, &x| acc.checked_mul(x as u64));
    let Some(scores) = scores.filter(|&n| n > 0 && n <= u32::MAX as u64) else {
        return false;
    };
    let bytes = scores * 4;
    let fits = crate::pool::size_class(bytes) <= max_binding;
    match path {
        AttentionPath::Flash => false,
        AttentionPath::Materialized => fits,
        AttentionPath::Auto => fits && auto_materialises(p, bytes),
    }
}

/// `Auto`'s rule for a call whose f32 score matrix takes `score_bytes` (and fits a storage
/// binding): materialise while it is at most [`ATTENTION_SCORE_BUDGET`], flash beyond.
fn auto_materialises(_p: &AttentionParams, score_bytes: u64) -> bool {
    score_bytes <= ATTENTION_SCORE_BUDGET
}

impl crate::GpuContext {
    /// Whether attention with these sizes takes the materialised path on this device under the
    /// current [`attention_path`] (benchmarks report which path ran).
    pub fn attention_materialises(&self, p: &AttentionParams) -> bool {
        materialise(attention_path(), p, self.limits.max_storage_buffer_binding_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(batch: usize, heads: usize, q_len: usize, kv_len: usize) -> AttentionParams {
        AttentionParams::new(batch, heads, q_len, kv_len, 64, false, 0.125)
    }

    #[test]
    fn auto_materialises_within_the_budget_only() {
        let big = u64::MAX;
        // W6: 16 · 4 heads · 256 · 256 · 4 B = 16 MiB; W10: 64 · 6 · 256 · 256 · 4 B = 96 MiB;
        // 16 · 8 · 1024 · 1024 · 4 B = 512 MiB.
        assert!(materialise(AttentionPath::Auto, &params(16, 4, 256, 256), big));
        assert!(materialise(AttentionPath::Auto, &params(64, 6, 256, 256), big));
        assert!(materialise(AttentionPath::Auto, &params(16, 8, 1024, 1024), big));
        // Exactly the budget, and one key more.
        let rows = (ATTENTION_SCORE_BUDGET / 4 / 1024) as usize;
        assert!(materialise(AttentionPath::Auto, &params(1, 1, rows, 1024), big));
        assert!(!materialise(AttentionPath::Auto, &params(1, 1, rows, 1025), big));
        // Within the budget but past the binding limit.
        assert!(!materialise(AttentionPath::Auto, &params(16, 4, 256, 256), 1 << 20));
    }

    #[test]
    fn forced_paths_and_limits() {
        let p = params(2, 3, 70, 33);
        assert!(!materialise(AttentionPath::Flash, &p, u64::MAX));
        assert!(materialise(AttentionPath::Materialized, &p, u64::MAX));
        // Past the budget only a forced call materialises.
        let long = params(16, 8, 2048, 2048);
        assert!(!materialise(AttentionPath::Auto, &long, u64::MAX));
        assert!(materialise(AttentionPath::Materialized, &long, u64::MAX));
        // Past the binding limit not even a forced materialised call can run.
        assert!(!materialise(AttentionPath::Materialized, &p, 1024));
        assert!(!materialise(AttentionPath::Auto, &p, 1024));
        // Empty, or past u32 indexing: flash.
        assert!(!materialise(AttentionPath::Materialized, &params(2, 3, 0, 33), u64::MAX));
        assert!(!materialise(AttentionPath::Materialized, &params(2, 3, 70, 0), u64::MAX));
        assert!(!materialise(AttentionPath::Materialized, &params(1 << 20, 1, 1 << 10, 1 << 10), u64::MAX));
    }

    #[test]
    fn environment_values() {
        assert_eq!(parse("flash"), AttentionPath::Flash);
        assert_eq!(parse(" MatMul "), AttentionPath::Materialized);
        assert_eq!(parse("auto"), AttentionPath::Auto);
        assert_eq!(parse("nonsense"), AttentionPath::Auto);
    }
}
