//! Benchmark inputs: random normal tensors from Kiln's generator, and class ids from a small
//! host generator (the seed does not matter, only that the ids are spread over the classes).

use kiln_core::{Device, Result, Tensor};

/// SplitMix64: enough randomness for labels and token ids.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-0.5, 0.5), for bulk host data.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// `N(0, 1)` f32 of `shape` on `device`.
pub fn randn(shape: &[usize], device: &Device) -> Result<Tensor> {
    Tensor::randn(shape, device)
}

/// u32 ids below `classes`, of `shape`.
pub fn ids(shape: &[usize], classes: u32, seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = SplitMix(seed);
    let n = shape.iter().product();
    let v: Vec<u32> = (0..n).map(|_| (rng.next_u64() % u64::from(classes)) as u32).collect();
    Tensor::from_vec(v, shape, device)
}
