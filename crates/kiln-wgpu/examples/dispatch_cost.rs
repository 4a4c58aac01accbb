//! Host time to record tiny dispatches (no GPU wait inside the timed part): what bind-group
//! reuse saves. `KILN_BIND_CACHE=0` for the uncached path; `KILN_FUSION=0` keeps every op a dispatch.
use kiln_backend::{BackendStorage, BinaryOp, HostData, Layout};
use kiln_wgpu::{GpuContext, GpuStorage, context::AdapterChoice};
use std::time::Instant;

fn main() {
    let dev = GpuContext::new(&AdapterChoice::Any).expect("device");
    let l = Layout::contiguous(&[1]);
    let one = GpuStorage::from_host(&dev, &HostData::F32(vec![1.0])).expect("upload");
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let mut y = GpuStorage::from_host(&dev, &HostData::F32(vec![0.0])).expect("upload");
        dev.sync().expect("sync");
        let t = Instant::now();
        for _ in 0..500 {
            y = y.binary(&l, &one, &l, BinaryOp::Add).expect("add");
        }
        let rec = t.elapsed().as_secs_f64();
        dev.sync().expect("sync");
        best = best.min(rec);
        assert_eq!(y.to_host(&l).expect("read").to_f64_vec(), vec![500.0]);
    }
    println!("{}: {:.2} µs to record one dispatch (best of 20 × 500)", dev.summary.name, best * 1e6 / 500.0);
}
