//! Tensor-level helpers: the shared GPU device, random tensors, the GPU-vs-CPU check and the
//! f64 gradient check.

use kiln_core::{DType, Device, HostData, Result, Tensor};
use std::sync::OnceLock;

use crate::{assert_close, gpu_or_skip, values};

/// The test GPU (lavapipe in CI), opened once per test binary. Without one: a failure under
/// `KILN_REQUIRE_GPU=1`, otherwise `None` and a `SKIPPED` line naming `test`.
pub fn gpu(test: &str) -> Option<Device> {
    static DEV: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
    gpu_or_skip(test, DEV.get_or_init(|| Device::gpu().map_err(|e| e.to_string())).clone())
}

/// A CPU tensor of `dtype` with values from [`values`] in [lo, hi) (floored for integer dtypes).
pub fn random(shape: &[usize], dtype: DType, seed: u64, lo: f64, hi: f64) -> Tensor {
    random_on(shape, dtype, seed, lo, hi, &Device::cpu())
}

/// [`random`] on `device`.
pub fn random_on(shape: &[usize], dtype: DType, seed: u64, lo: f64, hi: f64, device: &Device) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f64> =
        values(n, seed, lo, hi).into_iter().map(|x| if dtype.is_float() { x } else { x.floor() }).collect();
    Tensor::from_host(HostData::from_f64(&v, dtype), shape, device).expect("random tensor")
}

/// Runs `f` on the CPU `inputs` and on copies of them on `gpu`, and compares: equal shapes and
/// dtypes and values within `rtol·|cpu| + atol`, or errors of the same kind on both. Also checks
/// that `f` left every input (CPU and GPU) unchanged.
#[track_caller]
pub fn check(
    what: &str,
    gpu: &Device,
    inputs: &[Tensor],
    rtol: f64,
    atol: f64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let before: Vec<Vec<f64>> = inputs.iter().map(|t| t.to_f64_vec().expect("read input")).collect();
    let cpu_out = f(inputs);
    let gpu_inputs: Vec<Tensor> = inputs.iter().map(|t| t.to(gpu).expect("upload")).collect();
    let gpu_out = f(&gpu_inputs);
    match (cpu_out, gpu_out) {
        (Ok(c), Ok(g)) => {
            assert_eq!(c.shape(), g.shape(), "{what}: shapes");
            assert_eq!(c.dtype(), g.dtype(), "{what}: dtypes");
            assert_close(what, &g.to_f64_vec().expect("gpu read"), &c.to_f64_vec().expect("cpu read"), rtol, atol);
        }
        (Err(c), Err(g)) => {
            assert_eq!(std::mem::discriminant(&c), std::mem::discriminant(&g), "{what}: cpu {c} vs gpu {g}")
        }
        (c, g) => panic!("{what}: cpu {:?} vs gpu {:?}", c.map(|t| t.shape().to_vec()), g.map(|t| t.shape().to_vec())),
    }
    for (i, (t, b)) in gpu_inputs.iter().chain(inputs).zip(before.iter().chain(&before)).enumerate() {
        let now: Vec<u64> = t.to_f64_vec().expect("read input").iter().map(|v| v.to_bits()).collect();
        let was: Vec<u64> = b.iter().map(|v| v.to_bits()).collect();
        assert_eq!(now, was, "{what}: input {i} changed by the op");
    }
}

/// Checks the gradient of `Σ f(inputs) ⊙ w` (fixed random `w`, so no gradient is trivially
/// uniform) for every input against central differences (ε = 1e-6), in f64 on the CPU.
/// `inputs` are `(shape, values)`; each evaluation builds fresh leaves from them, so `f` may
/// take views (transpose, slice, broadcast) of its inputs.
#[track_caller]
pub fn gradcheck(
    what: &str,
    inputs: &[(Vec<usize>, Vec<f64>)],
    rtol: f64,
    atol: f64,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) {
    let cpu = Device::cpu();
    let make = |vals: &[(Vec<usize>, Vec<f64>)]| -> Vec<Tensor> {
        vals.iter().map(|(s, v)| Tensor::from_vec(v.clone(), s, &cpu).expect("f64 input")).collect()
    };
    let leaves: Vec<Tensor> = make(inputs).into_iter().map(|t| t.with_grad()).collect();
    let out = f(&leaves).unwrap_or_else(|e| panic!("{what}: forward failed: {e}"));
    assert_eq!(out.dtype(), DType::F64, "{what}: gradcheck runs in f64");
    let w = Tensor::from_vec(values(out.numel(), 7, -1.0, 1.0), out.shape(), &cpu).expect("weights");
    let objective = |o: &Tensor| o.mul(&w).and_then(|p| p.sum_all()).and_then(|s| s.item()).expect("objective");
    out.mul(&w)
        .and_then(|p| p.sum_all())
        .and_then(|s| s.backward())
        .unwrap_or_else(|e| panic!("{what}: backward failed: {e}"));
    const EPS: f64 = 1e-6;
    for (i, leaf) in leaves.iter().enumerate() {
        let analytic = match leaf.grad() {
            Some(g) => g.to_f64_vec().expect("grad"),
            None => vec![0.0; leaf.numel()],
        };
        let mut numeric = Vec::with_capacity(leaf.numel());
        for j in 0..leaf.numel() {
            let mut shifted = inputs.to_vec();
            shifted[i].1[j] += EPS;
            let up = objective(&f(&make(&shifted)).expect("forward +ε"));
            shifted[i].1[j] -= 2.0 * EPS;
            let down = objective(&f(&make(&shifted)).expect("forward -ε"));
            numeric.push((up - down) / (2.0 * EPS));
        }
        assert_close(&format!("{what}: d/dinput{i}"), &analytic, &numeric, rtol, atol);
    }
}
