//! Split k for the tiled matmul, forced on the GPU and checked against the CPU oracle: long k with
//! small and odd m and n, batched, transposed and permuted operands, a broadcast batch, a k that
//! no split count divides, and more k ranges than k has slabs (empty ranges must write zeros).
//! Forcing is context-wide, so these tests live in their own binary and take turns.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{check, random};
use kiln::prelude::*;
use std::sync::Mutex;

static TURN: Mutex<()> = Mutex::new(());

/// Runs `f` with every float tiled matmul on `g` split into `splits` k ranges.
fn with_splits(g: &Device, splits: usize, f: impl FnOnce()) {
    let ctx = g.gpu_context().expect("a GPU device");
    ctx.force_matmul_split(Some(splits));
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    ctx.force_matmul_split(None);
    if let Err(e) = run {
        std::panic::resume_unwind(e);
    }
}

/// f32 and f16 tolerances for a k-long sum of products of values in [-1, 1): the summation order
/// differs from the CPU's, and f16 results round once from f32.
fn tolerances(dtype: DType, k: usize) -> (f64, f64) {
    match dtype {
        DType::F16 => (2e-3, 2e-3 * (k as f64).sqrt()),
        _ => (1e-5, 2e-6 * k as f64),
    }
}

fn cases(g: &Device, dtype: DType, splits: usize) {
    let r = |shape: &[usize], seed: u64| random(shape, DType::F32, seed, -1.0, 1.0).to_dtype(dtype).unwrap();
    let what = |s: &str| format!("{s} {dtype:?} split {splits}");
    let (rt, at) = tolerances(dtype, 2053);
    // k = 2053: no split count divides it, nor the 16-deep slabs.
    check(&what("[37, 2053]·[2053, 29]"), g, &[r(&[37, 2053], 1), r(&[2053, 29], 2)], rt, at, |t| t[0].matmul(&t[1]));
    check(&what("transposed"), g, &[r(&[2053, 37], 3), r(&[29, 2053], 4)], rt, at, |t| t[0].t()?.matmul(&t[1].t()?));
    let (rt, at) = tolerances(dtype, 1500);
    check(&what("[3, 33, 1500]·[3, 1500, 65]"), g, &[r(&[3, 33, 1500], 5), r(&[3, 1500, 65], 6)], rt, at, |t| {
        t[0].matmul(&t[1])
    });
    // The batch dim is not outermost in memory.
    check(&what("permuted batch"), g, &[r(&[33, 3, 1500], 7), r(&[1500, 3, 65], 8)], rt, at, |t| {
        t[0].permute(&[1, 0, 2])?.matmul(&t[1].permute(&[1, 0, 2])?)
    });
    // One rhs for every batch entry (batch stride 0); 3·32·64 outputs take the vec4 sum.
    check(&what("broadcast batch"), g, &[r(&[3, 32, 1500], 9), r(&[1, 1500, 64], 10)], rt, at, |t| {
        t[0].matmul(&t[1].expand(&[3, 1500, 64])?)
    });
    check(&what("2-D rhs"), g, &[r(&[2, 33, 1500], 11), r(&[1500, 65], 12)], rt, at, |t| t[0].matmul(&t[1]));
    // k = 40 is three 16-deep slabs: with 7 ranges (and with 3, of 16 each) the last are empty.
    let (rt, at) = tolerances(dtype, 40);
    check(&what("short k"), g, &[r(&[37, 40], 13), r(&[40, 29], 14)], rt, at, |t| t[0].matmul(&t[1]));
    check(&what("short k, one slab"), g, &[r(&[8, 5], 15), r(&[5, 12], 16)], rt, at, |t| t[0].matmul(&t[1]));
}

#[test]
fn forced_split_k_matches_cpu_f32() {
    let Some(g) = common::gpu("forced_split_k_matches_cpu_f32") else { return };
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    for splits in [2, 3, 7] {
        with_splits(&g, splits, || cases(&g, DType::F32, splits));
    }
}

#[test]
fn forced_split_k_matches_cpu_f16() {
    let Some(g) = common::gpu("forced_split_k_matches_cpu_f16") else { return };
    if !g.gpu_context().is_some_and(|c| c.has_f16()) {
        eprintln!("SKIPPED forced_split_k_matches_cpu_f16: the adapter has no SHADER_F16");
        return;
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    for splits in [2, 3, 7] {
        with_splits(&g, splits, || cases(&g, DType::F16, splits));
    }
}

#[test]
fn forced_split_k_gradients_match_cpu() {
    // Backward's products (`g · bᵀ`, `aᵀ · g`) are the long-k shapes split k is for.
    let Some(g) = common::gpu("forced_split_k_gradients_match_cpu") else { return };
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = random(&[300, 24], DType::F32, 21, -1.0, 1.0);
    let b = random(&[24, 20], DType::F32, 22, -1.0, 1.0);
    let grads = |dev: &Device| -> Vec<Vec<f64>> {
        let a = a.to(dev).unwrap().with_grad();
        let b = b.to(dev).unwrap().with_grad();
        let y = a.t().unwrap().matmul(&a).unwrap().matmul(&b).unwrap().square().unwrap().sum_all().unwrap();
        y.backward().unwrap();
        vec![a.grad().unwrap().to_f64_vec().unwrap(), b.grad().unwrap().to_f64_vec().unwrap()]
    };
    let want = grads(&Device::cpu());
    with_splits(&g, 3, || {
        for (got, want) in grads(&g).iter().zip(&want) {
            let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            common::assert_close("split-k gradient", got, want, 1e-4, 1e-5 * scale);
        }
    });
}

#[test]
fn forced_split_k_past_the_binding_limit_falls_back_where_partials_would_not_fit() {
    // A device whose bindings stop at 64 KiB: matmul runs in pieces (tests/chunked.rs), and S
    // partial copies of a piece's output may not fit one binding; such pieces run unsplit instead
    // of failing. (Partials past the limit would be refused by the dispatch.)
    let test = "forced_split_k_past_the_binding_limit_falls_back_where_partials_would_not_fit";
    let Some(g) = common::own_gpu(test, |l| l.max_storage_buffer_binding_size = 64 << 10) else { return };
    let tall = random(&[600, 40], DType::F32, 31, -1.0, 1.0);
    let wide = random(&[40, 41], DType::F32, 32, -1.0, 1.0); // C: 98 KB, pieces of ~64 KB
    let a = random(&[200, 600], DType::F32, 33, -1.0, 1.0); // A: 480 KB, pieces of rows
    let b = random(&[600, 20], DType::F32, 34, -1.0, 1.0);
    let small = random(&[60, 600], DType::F32, 35, -1.0, 1.0); // one piece, partials fit
    for splits in [2, 3, 7] {
        with_splits(&g, splits, || {
            let (rt, at) = tolerances(DType::F32, 600);
            check(&format!("C past the limit, split {splits}"), &g, &[tall.clone(), wide.clone()], rt, at, |t| {
                t[0].matmul(&t[1])
            });
            check(&format!("A past the limit, split {splits}"), &g, &[a.clone(), b.clone()], rt, at, |t| {
                t[0].matmul(&t[1])
            });
            check(&format!("in one binding, split {splits}"), &g, &[small.clone(), b.clone()], rt, at, |t| {
                t[0].matmul(&t[1])
            });
        });
    }
}
