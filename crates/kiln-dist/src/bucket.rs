//! Which gradients travel together. Buckets hold parameters in *reverse* model order, because
//! backward finishes the last layers' gradients first: the first bucket is complete (and its
//! all-reduce under way) while backward still works on the early layers.

use kiln_core::Tensor;

/// Parameter indices per bucket, and each parameter's bucket.
pub(crate) struct Plan {
    pub buckets: Vec<Vec<usize>>,
    pub bucket_of: Vec<usize>,
}

/// The first bucket's cap (as PyTorch DDP's): small, so the first all-reduce starts early in
/// backward, while a model of a single 25 MiB bucket would otherwise overlap nothing.
pub(crate) const FIRST_BUCKET_BYTES: usize = 1024 * 1024;

/// Buckets of at most `bucket_bytes` (f32) each, the first at most [`FIRST_BUCKET_BYTES`]; a
/// tensor larger than its cap gets a bucket of its own.
pub(crate) fn plan(tensors: &[Tensor], bucket_bytes: usize) -> Plan {
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for i in (0..tensors.len()).rev() {
        let size = tensors[i].numel() * 4;
        let cap = if buckets.is_empty() { bucket_bytes.min(FIRST_BUCKET_BYTES) } else { bucket_bytes };
        if !current.is_empty() && bytes + size > cap {
            buckets.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        buckets.push(current);
    }
    let mut bucket_of = vec![0; tensors.len()];
    for (b, members) in buckets.iter().enumerate() {
        for &i in members {
            bucket_of[i] = b;
        }
    }
    Plan { buckets, bucket_of }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::Device;

    #[test]
    fn buckets_fill_in_reverse_order_and_cover_every_tensor_once() {
        let d = Device::cpu();
        let sizes = [10usize, 3, 7, 40, 1, 2];
        let ts: Vec<Tensor> = sizes.iter().map(|&n| Tensor::zeros(&[n], &d).unwrap()).collect();
        // 48 bytes a bucket, from the last tensor: [5, 4] = 12 B; 3 (160 B) alone; [2, 1] = 40 B; [0].
        let p = plan(&ts, 48);
        assert_eq!(p.buckets, vec![vec![5, 4], vec![3], vec![2, 1], vec![0]]);
        for (b, members) in p.buckets.iter().enumerate() {
            for &i in members {
                assert_eq!(p.bucket_of[i], b);
            }
        }
        assert_eq!(plan(&ts, usize::MAX).buckets, vec![vec![5, 4, 3, 2, 1, 0]]);
    }

    #[test]
    fn the_first_bucket_is_small_so_communication_starts_early() {
        let d = Device::cpu();
        let mib = 1024 * 1024 / 4;
        let ts: Vec<Tensor> = [mib, mib, mib / 2, mib / 2].iter().map(|&n| Tensor::zeros(&[n], &d).unwrap()).collect();
        assert_eq!(plan(&ts, 25 * 1024 * 1024).buckets, vec![vec![3, 2], vec![1, 0]]);
    }
}
