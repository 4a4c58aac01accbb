//! Kiln's global random generator: one Philox 4x32-10 stream (`kiln_backend::philox`) keyed by
//! the seed. Each random op reserves the next blocks of the stream (4 numbers a block) and its
//! device computes them there, a pure function of (seed, block, element): the same seed gives
//! the same numbers on every device, and no number is drawn on the host.

use kiln_backend::PhiloxKey;
use std::sync::Mutex;

/// The generator's position: its seed (the Philox key) and the next unused block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RngState {
    pub seed: u64,
    /// Blocks (of four 32-bit numbers) used so far; the next random op starts here.
    pub offset: u64,
}

/// Fixed, so a program that never seeds is still reproducible (PyTorch's default seed).
const DEFAULT_SEED: u64 = 67_280_421_310_721;

static STATE: Mutex<RngState> = Mutex::new(RngState { seed: DEFAULT_SEED, offset: 0 });

fn state() -> std::sync::MutexGuard<'static, RngState> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seeds Kiln's global generator (like `torch.manual_seed`): the offset goes back to 0.
pub fn manual_seed(seed: u64) {
    *state() = RngState { seed, offset: 0 };
}

/// Where the generator stands (like `torch.get_rng_state`).
pub fn rng_state() -> RngState {
    *state()
}

/// Puts the generator at `state`, e.g. one saved by [`rng_state`] to replay a step's dropout.
pub fn set_rng_state(state_: RngState) {
    *state() = state_;
}

/// Reserves the blocks for `numel` numbers: the returned key is the op's, and the next op starts
/// after it (wrapping past 2^64 blocks).
pub(crate) fn reserve(numel: usize) -> PhiloxKey {
    let mut s = state();
    let key = PhiloxKey { seed: s.seed, counter: s.offset };
    s.offset = s.offset.wrapping_add(numel.div_ceil(4) as u64);
    key
}
