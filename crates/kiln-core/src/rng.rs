//! The seedable generator behind `rand`/`randn`/dropout. Numbers are drawn on the host and
//! uploaded, so the same seed gives the same tensors on every device.

use std::sync::Mutex;

static STATE: Mutex<u64> = Mutex::new(0x853c_49e6_748f_ea9b);

/// Seeds Kiln's global generator (like `torch.manual_seed`).
pub fn manual_seed(seed: u64) {
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = seed ^ 0x9e37_79b9_7f4a_7c15;
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` uniform numbers in [0, 1).
pub(crate) fn uniform(n: usize) -> Vec<f64> {
    let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    (0..n).map(|_| (splitmix(&mut s) >> 11) as f64 / (1u64 << 53) as f64).collect()
}

/// `n` standard normal numbers (Box–Muller).
pub(crate) fn normal(n: usize) -> Vec<f64> {
    let u = uniform(n.div_ceil(2) * 2);
    let mut out = Vec::with_capacity(n);
    for pair in u.chunks_exact(2) {
        let r = (-2.0 * (1.0 - pair[0]).ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * pair[1];
        out.push(r * theta.cos());
        out.push(r * theta.sin());
    }
    out.truncate(n);
    out
}
