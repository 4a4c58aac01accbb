//! Shared test helpers: a numerical gradient check, deterministic host data, a lock around
//! Kiln's global generator, and the GPU probe.
//!
//! Gradient checks run in f64 on the CPU. Layers are built with
//! `kiln_nn::init::with_default_dtype(DType::F64, ..)`, which makes every parameter and
//! buffer f64 from the start, so no conversion of an existing layer is needed.
#![allow(dead_code)]

use kiln_core::{DType, Device, Result, Tensor};
use kiln_nn::Module;
use std::sync::{Mutex, MutexGuard};

/// Kiln's generator is process-global and tests run on parallel threads: a test that needs
/// reproducible random numbers (initial weights, dropout masks) holds this lock throughout.
pub fn seeded(seed: u64) -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    kiln_core::manual_seed(seed);
    guard
}

/// Builds something (usually a layer) with f64 parameters.
pub fn f64_params<T>(f: impl FnOnce() -> Result<T>) -> T {
    kiln_nn::init::with_default_dtype(DType::F64, f).expect("building in f64")
}

/// The shared deterministic generator (xorshift64*, independent of Kiln's): `Lcg::new(seed).vec(n)`
/// gives `n` values uniform in [-1, 1).
pub type Lcg = kiln_testkit::Rng;

/// A tensor of uniform [-1, 1) values in `dtype` (and the same values as f64 for hand checks).
pub fn data(seed: u64, shape: &[usize], dtype: DType, device: &Device) -> (Tensor, Vec<f64>) {
    let n = shape.iter().product();
    let v = Lcg::new(seed).vec(n);
    let host = kiln_core::HostData::from_f64(&v, dtype);
    let t = Tensor::from_host(host, shape, device).expect("test data");
    let exact = t.to_f64_vec().expect("read back");
    (t, exact)
}

/// f64 CPU data as a gradient-collecting leaf.
pub fn leaf64(seed: u64, shape: &[usize]) -> Tensor {
    data(seed, shape, DType::F64, &Device::cpu()).0.with_grad()
}

/// |got − want| ≤ tol·(1 + |want|) element by element (`kiln_testkit::assert_close`).
#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    kiln_testkit::assert_close(what, got, want, tol, tol);
}

/// Compares the gradients `backward` gives every tensor in `inputs` with central differences
/// (ε = 1e-6) of the scalar `f`, which must read the inputs' current data. Inputs are f64
/// leaves that own their storage; they are perturbed with `set_data` and restored.
pub fn gradcheck(what: &str, f: &dyn Fn() -> Result<Tensor>, inputs: &[(String, Tensor)]) {
    const EPS: f64 = 1e-6;
    const TOL: f64 = 1e-6;
    for (_, t) in inputs {
        t.zero_grad();
    }
    let y = f().expect("forward");
    assert_eq!(y.numel(), 1, "{what}: gradcheck needs a scalar");
    y.backward().expect("backward");
    for (name, t) in inputs {
        assert_eq!(t.dtype(), DType::F64, "{what}: {name} must be f64 for a gradient check");
        let analytic = match t.grad() {
            Some(g) => g.to_f64_vec().expect("grad"),
            None => vec![0.0; t.numel()],
        };
        let base = t.to_f64_vec().expect("data");
        let eval = |v: &[f64]| -> f64 {
            t.set_data(&Tensor::from_vec(v.to_vec(), t.shape(), t.device()).expect("perturbed")).expect("set_data");
            kiln_core::no_grad(|| f().expect("forward").item().expect("scalar"))
        };
        for i in 0..base.len() {
            let mut v = base.clone();
            v[i] = base[i] + EPS;
            let up = eval(&v);
            v[i] = base[i] - EPS;
            let down = eval(&v);
            let numeric = (up - down) / (2.0 * EPS);
            let err = (analytic[i] - numeric).abs() / 1f64.max(numeric.abs()).max(analytic[i].abs());
            assert!(
                err <= TOL,
                "{what}: d/d{name}[{i}]: analytic {} vs numeric {numeric} (rel err {err:e})",
                analytic[i]
            );
        }
        eval(&base);
    }
}

/// Gradient check of a module's parameters and (when `x` is a float leaf) its input, through
/// the scalar `Σ module(x) ⊙ R` for fixed random `R`, so that no gradient is trivially uniform.
pub fn check_module(what: &str, m: &dyn Module, x: &Tensor) {
    let out_shape = kiln_core::no_grad(|| m.forward(x)).expect("forward").shape().to_vec();
    let (r, _) = data(99, &out_shape, DType::F64, &Device::cpu());
    let f = || (&m.forward(x)? * &r)?.sum_all();
    let mut inputs = m.named_parameters();
    if x.requires_grad() {
        inputs.push(("input".to_string(), x.clone()));
    }
    assert!(!inputs.is_empty(), "{what}: nothing to check");
    gradcheck(what, &f, &inputs);
}

/// One plain SGD step on every parameter: `p ← p − lr·∇p`, then clears the gradients.
pub fn sgd_step(params: &[Tensor], lr: f64) {
    kiln_core::no_grad(|| {
        for p in params {
            if let Some(g) = p.grad() {
                let next = (p - &g.mul_scalar(lr).expect("lr·g")).expect("p − lr·g");
                p.set_data(&next).expect("set_data");
            }
            p.zero_grad();
        }
    });
}

/// The GPU device if an adapter is present. Without one the test says so loudly (naming the
/// test thread), and fails when `KILN_REQUIRE_GPU=1`.
pub fn gpu() -> Option<Device> {
    kiln_testkit::gpu(std::thread::current().name().unwrap_or("a kiln-nn test"))
}
