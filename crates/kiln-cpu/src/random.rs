//! Random tensors from Kiln's Philox stream (`kiln_backend::philox`): element `i` is lane
//! `i % 4` of block `counter + i / 4`, so blocks are independent and large tensors fill in
//! parallel.

use crate::elem::Elem;
use crate::kernel::{alloc, for_each_block};
use half::f16;
use kiln_backend::{DType, Distribution, HostData, PhiloxKey, Result};

/// Elements per parallel task: a multiple of 4, so every task starts on a block.
const TASK: usize = 1 << 14;

fn fill<T: Elem>(
    op: &'static str,
    numel: usize,
    dist: Distribution,
    key: PhiloxKey,
    f16_out: bool,
    conv: fn(f64) -> T,
) -> Result<Vec<T>> {
    let mut out = alloc(op, numel, T::default())?;
    for_each_block(&mut out, TASK, |task, chunk| {
        let first = task * TASK / 4;
        for (q, four) in chunk.chunks_mut(4).enumerate() {
            let block = key.block((first + q) as u64);
            for (lane, v) in four.iter_mut().enumerate() {
                *v = conv(dist.sample(block, lane, f16_out));
            }
        }
    });
    Ok(out)
}

/// `numel` elements of `dtype` from `dist` at `key`. Values are f32s (or u32 words): f16 rounds
/// them through f32 as the GPU does, f64 holds them exactly.
pub(crate) fn random(numel: usize, dist: Distribution, key: PhiloxKey, dtype: DType) -> Result<HostData> {
    let op = dist.name();
    if (dist == Distribution::Bits) != (dtype == DType::U32) || (dist != Distribution::Bits && !dtype.is_float()) {
        return Err(crate::kernel::unsupported(op, dtype, "random bits are u32, other distributions float"));
    }
    Ok(match dtype {
        DType::F32 => HostData::F32(fill(op, numel, dist, key, false, |v| v as f32)?),
        DType::F16 => HostData::F16(fill(op, numel, dist, key, true, |v| f16::from_f32(v as f32))?),
        DType::F64 => HostData::F64(fill(op, numel, dist, key, false, |v| v)?),
        DType::U32 => HostData::U32(fill(op, numel, dist, key, false, |v| v as u32)?),
        _ => return Err(crate::kernel::unsupported(op, dtype, "random bits are u32, other distributions float")),
    })
}
