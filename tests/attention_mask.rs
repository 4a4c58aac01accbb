//! `Tensor::sdpa` with PyTorch's options: a general `attn_mask` (bool: true = take part, or an
//! additive float), `scale`, and attention dropout, on both GPU attention paths (materialised and
//! flash, each forced) against the CPU oracle; gradients against central differences in f64;
//! dropout's statistics; PyTorch's own values (tests/data/sdpa_refs.safetensors, written by
//! scripts/torch_sdpa_refs.py); typed errors. The attention path and the generator are
//! process-wide: every test that sets them holds `lock()`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{assert_close, values};
use kiln::prelude::*;
use kiln::{AttentionPath, set_attention_path};
use std::sync::{Mutex, MutexGuard};

fn lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn cpu() -> Device {
    Device::cpu()
}

fn tensor(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor {
    let v: Vec<f32> = values(shape.iter().product(), seed, lo, hi).into_iter().map(|x| x as f32).collect();
    Tensor::from_vec(v, shape, &cpu()).unwrap()
}

/// A bool mask of `shape` with about a third hidden, and row 0 of the last two dims wholly
/// hidden (a query that sees nothing).
fn bool_mask(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let k = *shape.last().unwrap();
    let rows_of = if shape.len() >= 2 { shape[shape.len() - 2] * k } else { usize::MAX };
    let v: Vec<bool> =
        values(n, seed, 0.0, 1.0).into_iter().enumerate().map(|(i, x)| x > 0.33 && (i % rows_of) >= k).collect();
    Tensor::from_vec(v, shape, &cpu()).unwrap()
}

/// A float mask: random biases in [-2, 2) with about a fifth -inf.
fn float_mask(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = values(n, seed, -2.0, 2.0)
        .into_iter()
        .zip(values(n, seed + 1, 0.0, 1.0))
        .map(|(x, u)| if u < 0.2 { f32::NEG_INFINITY } else { x as f32 })
        .collect();
    Tensor::from_vec(v, shape, &cpu()).unwrap()
}

/// Output and (dq, dk, dv) of `sdpa` on `device`, for upstream gradient `w` (all of `[o]`'s
/// shape), with the generator at `seed` first (dropout's mask).
fn run(
    device: &Device,
    qkv: &[Tensor; 3],
    w: &Tensor,
    mask: Option<&Tensor>,
    opts: SdpaOptions,
    seed: u64,
) -> [Vec<f64>; 4] {
    let [q, k, v] = qkv.clone().map(|t| t.to(device).unwrap().with_grad());
    let mask = mask.map(|m| m.to(device).unwrap());
    let pad = opts.key_padding_mask.map(|m| m.to(device).unwrap());
    kiln::manual_seed(seed);
    let o = Tensor::sdpa(&q, &k, &v, &SdpaOptions { attn_mask: mask.as_ref(), key_padding_mask: pad.as_ref(), ..opts })
        .unwrap();
    o.mul(&w.to(device).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    let g = |t: &Tensor| t.grad().unwrap().to_f64_vec().unwrap();
    [o.to_f64_vec().unwrap(), g(&q), g(&k), g(&v)]
}

fn compare(what: &str, a: &[Vec<f64>; 4], b: &[Vec<f64>; 4], tol: f64) {
    for (n, name) in ["out", "dq", "dk", "dv"].iter().enumerate() {
        assert_close(&format!("{what}: {name}"), &a[n], &b[n], tol, tol);
    }
}

struct Case {
    b: usize,
    h: usize,
    tq: usize,
    tk: usize,
    d: usize,
}

const CASES: [Case; 4] = [
    Case { b: 2, h: 3, tq: 7, tk: 13, d: 5 },
    Case { b: 1, h: 2, tq: 1, tk: 7, d: 8 },
    Case { b: 2, h: 1, tq: 33, tk: 20, d: 16 },
    Case { b: 1, h: 1, tq: 9, tk: 1, d: 3 },
];

/// Masks for a case: every broadcast form, bool and float.
fn masks(c: &Case) -> Vec<(String, Tensor)> {
    let (b, h, q, k) = (c.b, c.h, c.tq, c.tk);
    vec![
        ("bool [q,k]".into(), bool_mask(&[q, k], 1)),
        ("bool [b,1,q,k]".into(), bool_mask(&[b, 1, q, k], 2)),
        ("bool [b,h,q,k]".into(), bool_mask(&[b, h, q, k], 3)),
        ("float [q,k]".into(), float_mask(&[q, k], 4)),
        ("float [b,h,q,k]".into(), float_mask(&[b, h, q, k], 5)),
        ("float [1,h,1,k]".into(), float_mask(&[1, h, 1, k], 6)),
        ("float [k]".into(), float_mask(&[k], 7)),
    ]
}

#[test]
fn masks_scale_and_dropout_match_the_cpu_on_both_paths() {
    let Some(g) = common::gpu("masks_scale_and_dropout_match_the_cpu_on_both_paths") else { return };
    let _l = lock();
    for (ci, c) in CASES.iter().enumerate() {
        let qkv = [
            tensor(&[c.b, c.h, c.tq, c.d], 10 + ci as u64, -1.5, 1.5),
            tensor(&[c.b, c.h, c.tk, c.d], 20, -1.5, 1.5),
            tensor(&[c.b, c.h, c.tk, c.d], 30, -1.0, 1.0),
        ];
        let w = tensor(&[c.b, c.h, c.tq, c.d], 40, -1.0, 1.0);
        let pad =
            Tensor::from_vec((0..c.b * c.tk).map(|i| i % 5 == 3).collect::<Vec<bool>>(), &[c.b, c.tk], &cpu()).unwrap();
        for (name, m) in masks(c) {
            for (causal, scale, dropout_p, padded) in [
                (false, None, 0.0, false),
                (true, Some(0.37), 0.0, true),
                (false, Some(1.3), 0.3, false),
                (true, None, 0.5, true),
            ] {
                let opts = SdpaOptions {
                    causal,
                    scale,
                    dropout_p,
                    key_padding_mask: padded.then_some(&pad),
                    ..Default::default()
                };
                let what =
                    format!("case {ci} {name} causal {causal} scale {scale:?} dropout {dropout_p} padded {padded}");
                let want = run(&cpu(), &qkv, &w, Some(&m), opts, 5);
                for path in [AttentionPath::Materialized, AttentionPath::Flash] {
                    set_attention_path(path);
                    let got = run(&g, &qkv, &w, Some(&m), opts, 5);
                    compare(&format!("{what} {path:?}"), &got, &want, 2e-4);
                }
                set_attention_path(AttentionPath::Auto);
            }
        }
    }
}

/// Forced materialised vs forced flash on the GPU: the same results (within rounding) with a
/// mask and dropout, so the dropout mask is the same on both.
#[test]
fn paths_agree_with_mask_and_dropout() {
    let Some(g) = common::gpu("paths_agree_with_mask_and_dropout") else { return };
    let _l = lock();
    let (b, h, tq, tk, d) = (2, 4, 70, 45, 32);
    let qkv = [
        tensor(&[b, h, tq, d], 1, -1.0, 1.0),
        tensor(&[b, h, tk, d], 2, -1.0, 1.0),
        tensor(&[b, h, tk, d], 3, -1.0, 1.0),
    ];
    let w = tensor(&[b, h, tq, d], 4, -1.0, 1.0);
    let m = float_mask(&[b, 1, tq, tk], 9);
    let opts = SdpaOptions { dropout_p: 0.2, causal: true, ..Default::default() };
    set_attention_path(AttentionPath::Materialized);
    let a = run(&g, &qkv, &w, Some(&m), opts, 77);
    set_attention_path(AttentionPath::Flash);
    let f = run(&g, &qkv, &w, Some(&m), opts, 77);
    set_attention_path(AttentionPath::Auto);
    compare("materialised vs flash", &a, &f, 1e-4);
}

/// Rows whose keys are all hidden (by a bool mask, a float mask of -inf, or both with causal)
/// give zero outputs and zero gradients on every device and path.
#[test]
fn fully_masked_rows_give_zeros() {
    let _l = lock();
    let (b, h, tq, tk, d) = (1, 2, 3, 5, 4);
    let qkv = [
        tensor(&[b, h, tq, d], 1, -1.0, 1.0),
        tensor(&[b, h, tk, d], 2, -1.0, 1.0),
        tensor(&[b, h, tk, d], 3, -1.0, 1.0),
    ];
    let w = tensor(&[b, h, tq, d], 4, -1.0, 1.0);
    // Query 1 sees nothing.
    let bm: Vec<bool> = (0..tq * tk).map(|i| i / tk != 1).collect();
    let bm = Tensor::from_vec(bm, &[tq, tk], &cpu()).unwrap();
    let fm: Vec<f32> = (0..tq * tk).map(|i| if i / tk == 1 { f32::NEG_INFINITY } else { 0.5 }).collect();
    let fm = Tensor::from_vec(fm, &[tq, tk], &cpu()).unwrap();
    let mut devices = vec![cpu()];
    devices.extend(common::gpu("fully_masked_rows_give_zeros"));
    for dev in &devices {
        for path in [AttentionPath::Materialized, AttentionPath::Flash] {
            set_attention_path(path);
            for m in [&bm, &fm] {
                let [o, dq, _, _] =
                    run(dev, &qkv, &w, Some(m), SdpaOptions { dropout_p: 0.25, ..Default::default() }, 3);
                for hh in 0..h {
                    let row = (hh * tq + 1) * d;
                    assert!(
                        o[row..row + d].iter().all(|&x| x == 0.0),
                        "{dev:?} {path:?}: output of a fully masked row {:?}",
                        &o[row..row + d]
                    );
                    assert!(dq[row..row + d].iter().all(|&x| x == 0.0), "{dev:?} {path:?}: dq of a fully masked row");
                }
                assert!(o.iter().all(|x| x.is_finite()));
            }
        }
    }
    set_attention_path(AttentionPath::Auto);
}

/// d(sum(o·w)) by central differences in f64 on the CPU: masks (bool and float, broadcast),
/// scale, and dropout with a fixed seed (the same mask in every evaluation).
#[test]
fn gradients_match_central_differences() {
    let _l = lock();
    let c = cpu();
    let shapes: [&[usize]; 3] = [&[2, 2, 3, 4], &[2, 2, 5, 4], &[2, 2, 5, 4]];
    let host: Vec<Vec<f64>> =
        shapes.iter().enumerate().map(|(i, s)| values(s.iter().product(), 100 + i as u64, -1.5, 1.5)).collect();
    let make = |vals: &[Vec<f64>]| -> Vec<Tensor> {
        vals.iter().zip(shapes).map(|(v, s)| Tensor::from_vec(v.clone(), s, &c).unwrap()).collect()
    };
    let bm = bool_mask(&[2, 1, 3, 5], 8);
    let fm: Vec<f64> = values(3 * 5, 9, -1.0, 1.0)
        .into_iter()
        .enumerate()
        .map(|(i, x)| if i % 7 == 2 { f64::NEG_INFINITY } else { x })
        .collect();
    let fm = Tensor::from_vec(fm, &[3, 5], &c).unwrap();
    let configs: Vec<(&str, Option<&Tensor>, SdpaOptions)> = vec![
        ("bool mask [b,1,q,k], scale 0.7", Some(&bm), SdpaOptions { scale: Some(0.7), ..Default::default() }),
        ("causal, scale 1.1", None, SdpaOptions { causal: true, scale: Some(1.1), ..Default::default() }),
        ("dropout 0.4", None, SdpaOptions { dropout_p: 0.4, ..Default::default() }),
        (
            "float mask [q,k], dropout, causal",
            Some(&fm),
            SdpaOptions { dropout_p: 0.3, causal: true, ..Default::default() },
        ),
    ];
    for (name, mask, opts) in configs {
        let f = |t: &[Tensor]| {
            kiln::manual_seed(42);
            Tensor::sdpa(&t[0], &t[1], &t[2], &SdpaOptions { attn_mask: mask, ..opts })
        };
        let leaves: Vec<Tensor> = make(&host).into_iter().map(|t| t.with_grad()).collect();
        let out = f(&leaves).unwrap();
        let w = Tensor::from_vec(values(out.numel(), 7, -1.0, 1.0), out.shape(), &c).unwrap();
        let objective = |o: &Tensor| o.mul(&w).unwrap().sum_all().unwrap().item().unwrap();
        out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let eps = 1e-6;
        for (i, leaf) in leaves.iter().enumerate() {
            let analytic = leaf.grad().unwrap().to_f64_vec().unwrap();
            let numeric: Vec<f64> = (0..leaf.numel())
                .map(|j| {
                    let (mut plus, mut minus) = (host.clone(), host.clone());
                    plus[i][j] += eps;
                    minus[i][j] -= eps;
                    (objective(&f(&make(&plus)).unwrap()) - objective(&f(&make(&minus)).unwrap())) / (2.0 * eps)
                })
                .collect();
            assert_close(&format!("{name}: d/dinput{i}"), &analytic, &numeric, 1e-5, 1e-6);
        }
    }
}

/// Dropout keeps each probability with chance 1 − p and scales it by 1/(1 − p): with all scores
/// equal and v = 1, each output is (kept keys / kv_len) / (1 − p), so it reveals the count.
#[test]
fn dropout_statistics() {
    let _l = lock();
    let (b, h, tq, tk) = (1, 4, 64, 256);
    let mut devices = vec![cpu()];
    devices.extend(common::gpu("dropout_statistics"));
    for dev in &devices {
        for path in [AttentionPath::Materialized, AttentionPath::Flash] {
            set_attention_path(path);
            for p in [0.1, 0.5, 0.9] {
                let q = Tensor::zeros(&[b, h, tq, 4], dev).unwrap();
                let v = Tensor::ones(&[b, h, tk, 4], dev).unwrap();
                kiln::manual_seed(11);
                let o = Tensor::sdpa(
                    &q,
                    &q.narrow(2, 0, 1).unwrap().expand(&[b, h, tk, 4]).unwrap(),
                    &v,
                    &SdpaOptions { dropout_p: p, ..Default::default() },
                )
                .unwrap();
                let o = o.to_f64_vec().unwrap();
                let mut kept = 0.0;
                for (r, x) in o.iter().step_by(4).enumerate() {
                    let count = x * (1.0 - p) * tk as f64;
                    assert!(
                        (count - count.round()).abs() < 1e-3,
                        "{dev:?} {path:?} p {p}: row {r} output {x} is not a count of kept keys scaled by 1/(1 − p)"
                    );
                    kept += count.round();
                }
                let frac = kept / (b * h * tq * tk) as f64;
                assert!((frac - (1.0 - p)).abs() < 0.01, "{dev:?} {path:?} p {p}: kept fraction {frac}");
            }
            // p = 1 drops everything; p = 0 is plain attention.
            let q = tensor(&[1, 2, 5, 4], 1, -1.0, 1.0).to(dev).unwrap();
            let all = Tensor::sdpa(&q, &q, &q, &SdpaOptions { dropout_p: 1.0, ..Default::default() }).unwrap();
            assert!(all.to_f64_vec().unwrap().iter().all(|&x| x == 0.0));
            let none = Tensor::sdpa(&q, &q, &q, &SdpaOptions::default()).unwrap().to_f64_vec().unwrap();
            let plain = Tensor::scaled_dot_product_attention(&q, &q, &q, false, None).unwrap().to_f64_vec().unwrap();
            assert_eq!(none, plain);
        }
    }
    set_attention_path(AttentionPath::Auto);
    // The same seed gives the same mask; the next call a different one.
    let q = tensor(&[1, 1, 8, 4], 2, -1.0, 1.0);
    let opts = SdpaOptions { dropout_p: 0.5, ..Default::default() };
    kiln::manual_seed(3);
    let a = Tensor::sdpa(&q, &q, &q, &opts).unwrap().to_f64_vec().unwrap();
    let b2 = Tensor::sdpa(&q, &q, &q, &opts).unwrap().to_f64_vec().unwrap();
    kiln::manual_seed(3);
    let a2 = Tensor::sdpa(&q, &q, &q, &opts).unwrap().to_f64_vec().unwrap();
    assert_eq!(a, a2);
    assert_ne!(a, b2);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let c = cpu();
    let q = Tensor::zeros(&[2, 3, 4, 8], &c).unwrap();
    let k = Tensor::zeros(&[2, 3, 5, 8], &c).unwrap();
    let with = |m: &Tensor| Tensor::sdpa(&q, &k, &k, &SdpaOptions { attn_mask: Some(m), ..Default::default() });
    for shape in [&[4, 4][..], &[2, 4, 5], &[2, 3, 4, 5, 1], &[5, 4], &[2, 2, 4, 5]] {
        let m = Tensor::zeros(shape, &c).unwrap();
        assert!(matches!(with(&m), Err(Error::ShapeMismatch { .. })), "mask {shape:?}");
    }
    let ints = Tensor::zeros(&[4, 5], &c).unwrap().to_dtype(DType::I32).unwrap();
    assert!(matches!(with(&ints), Err(Error::DTypeMismatch { .. })), "{:?}", with(&ints).err());
    let learnable = Tensor::zeros(&[4, 5], &c).unwrap().with_grad();
    assert!(matches!(with(&learnable), Err(Error::Unsupported { .. })));
    assert!(with(&learnable.detach()).is_ok());
    for p in [-0.1, 1.5, f64::NAN] {
        assert!(
            matches!(
                Tensor::sdpa(&q, &k, &k, &SdpaOptions { dropout_p: p, ..Default::default() }),
                Err(Error::InvalidArgument { .. })
            ),
            "p {p}"
        );
    }
    assert!(matches!(
        Tensor::sdpa(&q, &k, &k, &SdpaOptions { scale: Some(f64::INFINITY), ..Default::default() }),
        Err(Error::InvalidArgument { .. })
    ));
    if let Some(g) = common::gpu("bad_arguments_are_typed_errors") {
        let m = Tensor::zeros(&[4, 5], &g).unwrap();
        assert!(matches!(with(&m), Err(Error::DeviceMismatch { .. })));
    }
}

/// PyTorch's values (scripts/torch_sdpa_refs.py, computed in f64 from f32 inputs): Kiln's CPU in
/// f64 and f32, and the GPU on both paths.
#[test]
fn matches_pytorch_reference_values() {
    let _l = lock();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/sdpa_refs.safetensors");
    let all = kiln_nn::checkpoint::load_state_dict(path).unwrap();
    let get = |name: &str| all.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone());
    let mut cases: Vec<String> = all.iter().filter_map(|(n, _)| n.strip_suffix(".out").map(str::to_string)).collect();
    cases.sort();
    assert_eq!(cases.len(), 8, "cases in the reference file");
    let gpu = common::gpu("matches_pytorch_reference_values");
    for case in &cases {
        let t = |key: &str| get(&format!("{case}.{key}")).unwrap_or_else(|| panic!("{case}.{key} missing"));
        let qkv = [t("q"), t("k"), t("v")];
        let mask = get(&format!("{case}.mask"));
        let scale = t("scale").to_f64_vec().unwrap()[0];
        let causal = t("causal").to_f64_vec().unwrap()[0] != 0.0;
        let want = [t("out"), t("dq"), t("dk"), t("dv")].map(|x| x.to_f64_vec().unwrap());
        let opts = SdpaOptions { scale: Some(scale), causal, ..Default::default() };
        // f64 on the CPU: PyTorch's own precision.
        let q64 = qkv.clone().map(|x| x.to_dtype(DType::F64).unwrap());
        let w64 = t("dout").to_dtype(DType::F64).unwrap();
        compare(&format!("{case} cpu f64"), &run(&cpu(), &q64, &w64, mask.as_ref(), opts, 0), &want, 1e-10);
        compare(&format!("{case} cpu f32"), &run(&cpu(), &qkv, &t("dout"), mask.as_ref(), opts, 0), &want, 1e-5);
        if let Some(g) = &gpu {
            for path in [AttentionPath::Materialized, AttentionPath::Flash] {
                set_attention_path(path);
                compare(
                    &format!("{case} gpu {path:?}"),
                    &run(g, &qkv, &t("dout"), mask.as_ref(), opts, 0),
                    &want,
                    2e-4,
                );
            }
            set_attention_path(AttentionPath::Auto);
        }
    }
}

/// The tensor-core (cooperative-matrix, f16) flash kernels with a mask and dropout against the
/// CPU on the same f16-rounded values, checking from dispatch counts that they ran: on a GPU
/// with cooperative matrices (`real`; required under `KILN_REQUIRE_COOP=1`), else with their
/// cooperative operations emulated in plain WGSL on any f16 adapter (lavapipe).
fn tensor_core_kernels_take_masks_and_dropout(real: bool) {
    let test = if real {
        "tensor_core_kernels_take_masks_and_dropout"
    } else {
        "tensor_core_kernels_take_masks_and_dropout_emulated"
    };
    let Some(g) = common::gpu(test) else { return };
    let ctx = g.gpu_context().unwrap();
    if real && !ctx.uses_cooperative_matrices() {
        if std::env::var("KILN_REQUIRE_COOP").is_ok_and(|v| v == "1") {
            panic!("{test}: KILN_REQUIRE_COOP=1 but {} has no cooperative matrices", g.describe());
        }
        eprintln!(
            "SKIPPED {test}: {} has no cooperative matrices (set KILN_REQUIRE_COOP=1 to make this a failure)",
            g.describe()
        );
        return;
    }
    if !ctx.has_f16() {
        eprintln!("SKIPPED {test}: the adapter has no SHADER_F16");
        return;
    }
    let _l = lock();
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            kiln_wgpu::emulate_cooperative_matrices(false);
            set_attention_path(AttentionPath::Auto);
        }
    }
    let _restore = Restore;
    kiln_wgpu::emulate_cooperative_matrices(!real);
    set_attention_path(AttentionPath::Flash);
    let options = kiln_wgpu::ContextOptions { profile: kiln_wgpu::ProfileMode::Counts, ..Default::default() };
    let counted =
        kiln_wgpu::GpuContext::new_with(&kiln_wgpu::context::AdapterChoice::Any, &options).expect("a profiled context");
    let dev = Device::Gpu(counted.clone());
    let coop_runs = || counted.profile_counts().iter().filter(|(n, _)| n.contains("coop")).map(|(_, c)| c).sum::<u64>();
    let round = |t: Tensor| t.to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap();
    let (b, h) = (2, 2);
    for (n, (tq, tk, d)) in [(33, 33, 64), (20, 40, 16), (7, 9, 32)].into_iter().enumerate() {
        let qkv = [
            round(tensor(&[b, h, tq, d], 60 + n as u64, -1.0, 1.0)),
            round(tensor(&[b, h, tk, d], 70, -1.0, 1.0)),
            round(tensor(&[b, h, tk, d], 80, -1.0, 1.0)),
        ];
        let w = tensor(&[b, h, tq, d], 90, -1.0, 1.0);
        for (name, m, opts) in [
            (
                "float [b,1,q,k] causal",
                float_mask(&[b, 1, tq, tk], 3),
                SdpaOptions { causal: true, ..Default::default() },
            ),
            (
                "bool [q,k] dropout",
                bool_mask(&[tq, tk], 4),
                SdpaOptions { dropout_p: 0.25, scale: Some(0.2), ..Default::default() },
            ),
        ] {
            let want = run(&cpu(), &qkv, &w, Some(&m), opts, 9);
            let half = qkv.clone().map(|t| t.to_dtype(DType::F16).unwrap());
            let before = coop_runs();
            let got = run(&dev, &half, &w.to_dtype(DType::F16).unwrap(), Some(&m), opts, 9);
            assert!(
                coop_runs() >= before + 3,
                "{test}: the tensor-core kernels did not run: {:?}",
                counted.profile_counts()
            );
            let what = format!("{test} tq {tq} tk {tk} d {d} {name}");
            assert_close(&format!("{what}: out"), &got[0], &want[0], 2e-2, 1e-2);
            for (i, name) in ["dq", "dk", "dv"].iter().enumerate() {
                assert_close(&format!("{what}: {name}"), &got[i + 1], &want[i + 1], 3e-2, 2e-2);
            }
        }
    }
}

#[test]
fn tensor_core_kernels_take_masks_and_dropout_emulated() {
    tensor_core_kernels_take_masks_and_dropout(false);
}

#[test]
fn tensor_core_kernels_take_masks_and_dropout_on_hardware() {
    tensor_core_kernels_take_masks_and_dropout(true);
}
