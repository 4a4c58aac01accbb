//! Helpers for Kiln's browser tests (`tests/browser.rs`): the page's WebGPU device, loud when
//! missing under `KILN_REQUIRE_GPU=1`, random inputs independent of Kiln's generator, and
//! comparisons of the GPU against the CPU backend compiled into the same page. Everything reads
//! back asynchronously, as a browser requires.

use kiln::prelude::*;

/// Whether a missing WebGPU adapter fails the tests: `KILN_REQUIRE_GPU=1` in the environment of
/// the `cargo test` that *compiled* them (a page has no environment; CI sets it).
pub fn require_gpu() -> bool {
    option_env!("KILN_REQUIRE_GPU") == Some("1")
}

/// The page's WebGPU device. Without one: a failure under [`require_gpu`], otherwise `None` and a
/// console line naming the skipped test.
pub async fn gpu(test: &str) -> Option<Device> {
    match Device::gpu_async().await {
        Ok(d) => Some(d),
        Err(e) if require_gpu() => panic!("{test}: KILN_REQUIRE_GPU=1 but the browser gave no WebGPU adapter: {e}"),
        Err(e) => {
            log(&format!("SKIPPED {test}: no WebGPU adapter ({e}); set KILN_REQUIRE_GPU=1 to make this a failure"));
            None
        }
    }
}

/// A line on the page's console (stdout natively).
#[cfg(target_arch = "wasm32")]
fn log(line: &str) {
    #[wasm_bindgen::prelude::wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = console, js_name = log)]
        fn console_log(s: &str);
    }
    console_log(line);
}

#[cfg(not(target_arch = "wasm32"))]
fn log(line: &str) {
    println!("{line}");
}

/// Deterministic pseudo-random values in [lo, hi) (xorshift), independent of Kiln's generator.
pub fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

/// A CPU f32 tensor with random values in [lo, hi).
pub fn random(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor {
    let v: Vec<f32> = values(shape.iter().product(), seed, lo, hi).into_iter().map(|x| x as f32).collect();
    Tensor::from_vec(v, shape, &Device::cpu()).expect("random tensor")
}

/// Every element as f64, read without blocking.
pub async fn read(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec_async().await.expect("async readback")
}

/// Asserts two value lists agree within `rtol·|b| + atol`, NaN matching NaN.
pub fn assert_close(what: &str, a: &[f64], b: &[f64], rtol: f64, atol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths {} vs {}", a.len(), b.len());
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= rtol * y.abs() + atol;
        assert!(ok, "{what}: element {i}: gpu {x} vs cpu {y}");
    }
}

/// Runs `f` on CPU inputs and on the same inputs copied to `gpu`, and compares the outputs
/// (shape, dtype, values); both erring must give the same kind of error.
pub async fn check(
    what: &str,
    gpu: &Device,
    inputs: &[Tensor],
    rtol: f64,
    atol: f64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let cpu_out = f(inputs);
    let gpu_inputs: Vec<Tensor> = inputs.iter().map(|t| t.to(gpu).expect("upload")).collect();
    let gpu_out = f(&gpu_inputs);
    match (cpu_out, gpu_out) {
        (Ok(c), Ok(g)) => {
            assert!(g.device().is_gpu(), "{what}: the result left the GPU");
            assert_eq!(c.shape(), g.shape(), "{what}: shapes");
            assert_eq!(c.dtype(), g.dtype(), "{what}: dtypes");
            assert_close(what, &read(&g).await, &read(&c).await, rtol, atol);
        }
        (Err(c), Err(g)) => {
            assert_eq!(std::mem::discriminant(&c), std::mem::discriminant(&g), "{what}: cpu {c} vs gpu {g}")
        }
        (c, g) => panic!("{what}: cpu {:?} vs gpu {:?}", c.map(|t| t.shape().to_vec()), g.map(|t| t.shape().to_vec())),
    }
}
