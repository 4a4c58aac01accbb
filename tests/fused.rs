//! Fused ops (layer/RMS norm, cross-entropy from logits, attention, the Adam step) and the
//! flattened `[b, t, d]·[d, k]` matmul: against their composite definitions in f64 on the CPU,
//! and the GPU against the CPU on random odd sizes, with strided and broadcast inputs.

#![allow(clippy::unwrap_used)]
// tests: a panic is the failure report
// `&[a.clone()]` reads like the `&[a.clone(), b.clone()]` calls beside it, and cloning a
// Tensor only bumps a reference count: clearer than `std::slice::from_ref(&a)`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use common::{assert_close, gpu, has_f16_else_refused, random, values};
use kiln::AdamParams;
use kiln::optim_kernels::OptimKernels;
use kiln::prelude::*;

/// The output and the gradient of Σ out·w for every input, read back as f64.
fn run(inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let leaves: Vec<Tensor> = inputs.iter().map(|t| t.with_grad()).collect();
    let out = f(&leaves).expect("forward");
    let w = Tensor::from_host(
        kiln::HostData::from_f64(&values(out.numel(), 9, -1.0, 1.0), out.dtype()),
        out.shape(),
        out.device(),
    )
    .expect("weights");
    out.mul(&w).unwrap().sum_all().unwrap().backward().expect("backward");
    let grads = leaves.iter().map(|l| l.grad().map_or(vec![0.0; l.numel()], |g| g.to_f64_vec().unwrap())).collect();
    (out.to_f64_vec().unwrap(), grads)
}

/// `fused` against `reference` on the same f64 CPU inputs: outputs and gradients.
fn same_as_composite(
    what: &str,
    inputs: &[Tensor],
    fused: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    reference: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) {
    let (fo, fg) = run(inputs, fused);
    let (ro, rg) = run(inputs, reference);
    assert_close(&format!("{what}: output"), &fo, &ro, 1e-10, 1e-12);
    for (i, (a, b)) in fg.iter().zip(&rg).enumerate() {
        assert_close(&format!("{what}: grad {i}"), a, b, 1e-9, 1e-11);
    }
}

/// `f` on the GPU against the CPU (f32): outputs and gradients.
fn gpu_matches_cpu(
    what: &str,
    dev: &Device,
    inputs: &[Tensor],
    rtol: f64,
    atol: f64,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) {
    let (co, cg) = run(inputs, f);
    let on_gpu: Vec<Tensor> = inputs.iter().map(|t| t.to(dev).unwrap()).collect();
    let (go, gg) = run(&on_gpu, f);
    assert_close(&format!("{what}: output"), &go, &co, rtol, atol);
    for (i, (a, b)) in gg.iter().zip(&cg).enumerate() {
        assert_close(&format!("{what}: grad {i}"), a, b, rtol, atol);
    }
}

fn f64_input(shape: &[usize], seed: u64) -> Tensor {
    random(shape, DType::F64, seed, -2.0, 2.0)
}

fn composite_norm(x: &Tensor, dims: &[isize], eps: f64, rms: bool) -> Result<Tensor> {
    if rms {
        return x * &x.square()?.mean(dims, true)?.add_scalar(eps)?.rsqrt()?;
    }
    let c = (x - &x.mean(dims, true)?)?;
    &c * &c.square()?.mean(dims, true)?.add_scalar(eps)?.rsqrt()?
}

#[test]
fn norms_match_their_composite_definition() {
    // A transposed input, and a normalized shape of two dims.
    let x = f64_input(&[5, 3, 4], 1).transpose(0, 1).unwrap();
    let w = f64_input(&[5, 4], 2);
    let b = f64_input(&[5, 4], 3);
    same_as_composite(
        "layer_norm",
        &[x.clone(), w.clone(), b.clone()],
        &|t| t[0].layer_norm(&[5, 4], Some(&t[1]), Some(&t[2]), 1e-5),
        &|t| &(&composite_norm(&t[0], &[-2, -1], 1e-5, false)? * &t[1])? + &t[2],
    );
    same_as_composite("layer_norm without affine", &[x.clone()], &|t| t[0].layer_norm(&[4], None, None, 0.1), &|t| {
        composite_norm(&t[0], &[-1], 0.1, false)
    });
    let w4 = f64_input(&[4], 4);
    same_as_composite("rms_norm", &[x, w4], &|t| t[0].rms_norm(&[4], Some(&t[1]), 1e-6), &|t| {
        &composite_norm(&t[0], &[-1], 1e-6, true)? * &t[1]
    });
}

fn composite_cross_entropy(x: &Tensor, ids: &[u32], ignore: Option<u32>, eps: f64) -> Result<Tensor> {
    let (rows, c) = (x.shape()[0], x.shape()[1]);
    let lp = x.log_softmax(-1)?;
    let safe: Vec<u32> = ids.iter().map(|&t| if Some(t) == ignore { 0 } else { t }).collect();
    let ids_t = Tensor::from_vec(safe, &[rows, 1], x.device())?;
    let nll = lp.gather(1, &ids_t)?.reshape(&[rows])?.neg()?;
    let smooth = lp.sum(&[-1], false)?.neg()?.mul_scalar(eps / c as f64)?;
    let per = (&nll.mul_scalar(1.0 - eps)? + &smooth)?;
    let keep: Vec<f64> = ids.iter().map(|&t| if Some(t) == ignore { 0.0 } else { 1.0 }).collect();
    &per * &Tensor::from_host(kiln::HostData::from_f64(&keep, x.dtype()), &[rows], x.device())?
}

#[test]
fn cross_entropy_rows_match_log_softmax_and_gather() {
    let ids = [3u32, 0, 6, 2, 6, 1, 5];
    for (ignore, eps) in [(None, 0.0), (Some(6), 0.0), (Some(6), 0.1), (None, 0.25)] {
        // Logits as a transposed view: [7 rows, 9 classes] read column-major.
        let x = f64_input(&[9, 7], 5).t().unwrap();
        same_as_composite(
            &format!("cross_entropy ignore {ignore:?} smoothing {eps}"),
            &[x],
            &|t| {
                let ids = Tensor::from_vec(ids.to_vec(), &[7], t[0].device())?;
                t[0].cross_entropy_rows(&ids, ignore, eps)
            },
            &|t| composite_cross_entropy(&t[0], &ids, ignore, eps),
        );
    }
}

fn composite_attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, tq, d) = (q.shape()[0], q.shape()[2], q.shape()[3]);
    let tk = k.shape()[2];
    let scores = q.matmul(&k.transpose(-2, -1)?)?.mul_scalar(1.0 / (d as f64).sqrt())?;
    let mut hidden: Vec<bool> = vec![false; b * tq * tk];
    for bi in 0..b {
        for i in 0..tq {
            for j in 0..tk {
                let padded = match mask {
                    Some(m) => m.to_f64_vec()?[bi * tk + j] != 0.0,
                    None => false,
                };
                hidden[(bi * tq + i) * tk + j] = padded || (causal && j > i);
            }
        }
    }
    let hidden = Tensor::from_vec(hidden, &[b, 1, tq, tk], q.device())?;
    let p = scores.masked_fill(&hidden, -1e300)?.softmax(-1)?.masked_fill(&hidden, 0.0)?;
    p.matmul(v)
}

#[test]
fn attention_matches_softmax_of_scores() {
    let cpu = Device::cpu();
    // [b, h, t, d] built as [b, t, h, d] and transposed, as attention layers do.
    let qkv = |tq: usize, tk: usize, d: usize, seed: u64| {
        [
            f64_input(&[2, tq, 3, d], seed).transpose(1, 2).unwrap(),
            f64_input(&[2, tk, 3, d], seed + 1).transpose(1, 2).unwrap(),
            f64_input(&[2, tk, 3, d], seed + 2).transpose(1, 2).unwrap(),
        ]
    };
    // The second batch row hides every key: its queries attend to nothing.
    let mask =
        Tensor::from_vec(vec![false, true, false, false, true, true, true, true, true, true], &[2, 5], &cpu).unwrap();
    for (tq, tk, d, causal, m) in
        [(5, 5, 4, false, None), (5, 5, 3, true, None), (3, 5, 4, false, Some(&mask)), (5, 5, 2, true, Some(&mask))]
    {
        same_as_composite(
            &format!("attention tq {tq} tk {tk} d {d} causal {causal} mask {}", m.is_some()),
            &qkv(tq, tk, d, 10),
            &|t| Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], causal, m),
            &|t| composite_attention(&t[0], &t[1], &t[2], causal, m),
        );
    }
}

#[test]
fn fused_ops_on_gpu_match_cpu() {
    let Some(dev) = gpu("fused_ops_on_gpu_match_cpu") else { return };
    let f32_input = |shape: &[usize], seed: u64| random(shape, DType::F32, seed, -2.0, 2.0);

    // Rows of 5, 300, 1000 and 2100 (32, 64, 128 and 256 threads per row; several rows share a
    // workgroup, the last one partly past the end); a transposed input.
    for n in [300usize, 5, 1000, 2100] {
        let x = f32_input(&[n, 7], 20).t().unwrap();
        let (w, b) = (f32_input(&[n], 21), f32_input(&[n], 22));
        gpu_matches_cpu(&format!("layer_norm n {n}"), &dev, &[x.clone(), w.clone(), b], 1e-4, 1e-4, &|t| {
            t[0].layer_norm(&[n], Some(&t[1]), Some(&t[2]), 1e-5)
        });
        gpu_matches_cpu(&format!("rms_norm n {n}"), &dev, &[x, w], 1e-4, 1e-4, &|t| {
            t[0].rms_norm(&[n], Some(&t[1]), 1e-6)
        });
    }
    // 70 rows: the weight gradient folds three chunks of rows.
    let x = f32_input(&[70, 9], 23);
    gpu_matches_cpu("layer_norm 70 rows", &dev, &[x, f32_input(&[9], 24), f32_input(&[9], 25)], 1e-4, 1e-4, &|t| {
        t[0].layer_norm(&[9], Some(&t[1]), Some(&t[2]), 1e-5)
    });

    for (classes, ignore, eps) in [(11usize, None, 0.0), (300, Some(2u32), 0.1)] {
        let x = f32_input(&[classes, 6], 30).t().unwrap();
        let ids: Vec<u32> = [0u32, 2, 5, 2, 10, 1].iter().map(|&i| i % classes as u32).collect();
        gpu_matches_cpu(&format!("cross_entropy classes {classes}"), &dev, &[x], 1e-4, 1e-5, &|t| {
            let ids = Tensor::from_vec(ids.clone(), &[6], t[0].device())?;
            t[0].cross_entropy_rows(&ids, ignore, eps)
        });
    }
}

/// Serialises the tests that force an attention path (the switch is process-wide) and puts
/// `Auto` back afterwards, panic or not.
fn on_path<R>(path: kiln::AttentionPath, f: impl FnOnce() -> R) -> R {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            kiln::set_attention_path(kiln::AttentionPath::Auto);
        }
    }
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = Restore;
    kiln::set_attention_path(path);
    f()
}

const BOTH_PATHS: [kiln::AttentionPath; 2] = [kiln::AttentionPath::Flash, kiln::AttentionPath::Materialized];

/// A `[2, tk]` key mask: batch 0 hides key 0 (with causal, query 0 sees nothing) and every
/// seventh key; batch 1 hides every key (`all`: its queries see nothing) or every fifth.
fn key_mask(tk: usize, all: bool) -> Tensor {
    let hidden: Vec<bool> =
        (0..2 * tk).map(|i| if i < tk { i == 0 || i % 7 == 3 } else { all || i % 5 == 1 }).collect();
    Tensor::from_vec(hidden, &[2, tk], &Device::cpu()).unwrap()
}

#[test]
fn attention_on_gpu_matches_cpu_on_both_paths() {
    let Some(dev) = gpu("attention_on_gpu_matches_cpu_on_both_paths") else { return };
    let f32_input = |shape: &[usize], seed: u64| random(shape, DType::F32, seed, -2.0, 2.0);
    // (tq, tk, d, causal, mask: None, Some(false) partial, Some(true) with a batch that sees
    // nothing). Odd lengths (1, 7, 33, 65) take the materialised row kernel's scalar form, key
    // counts that are multiples of 4 its vec4 form; 70 rows span five flash tiles; head dims 3
    // and 80 pad the flash kernel's slices; 256 is its largest. The materialised row kernels
    // hold rows of up to 512 keys in 2 chunks a thread, up to 2,048 in 8 (1023 and 1024 keys),
    // and stream longer ones (2,100 keys).
    let cases: [(usize, usize, usize, bool, Option<bool>); 15] = [
        (1, 1, 1, false, None),
        (7, 1, 3, true, None),
        (7, 7, 3, true, Some(false)),
        (33, 65, 64, false, Some(true)),
        (65, 33, 80, true, Some(true)),
        (12, 64, 32, true, Some(false)),
        (70, 70, 16, true, None),
        (70, 70, 3, false, Some(true)),
        (5, 70, 64, false, None),
        (9, 33, 128, false, None),
        (20, 20, 256, true, None),
        (3, 300, 8, false, Some(false)),
        (4, 1023, 8, true, Some(false)),
        (9, 1024, 8, true, None),
        (2, 2100, 4, false, Some(true)),
    ];
    for path in BOTH_PATHS {
        for (n, &(tq, tk, d, causal, masked)) in cases.iter().enumerate() {
            let seed = 40 + 3 * n as u64;
            // [b, h, t, d] built as [b, t, h, d] and transposed, as attention layers do.
            let q = f32_input(&[2, tq, 2, d], seed).transpose(1, 2).unwrap();
            let k = f32_input(&[2, tk, 2, d], seed + 1).transpose(1, 2).unwrap();
            // One head's values broadcast to both heads.
            let v = f32_input(&[2, 1, tk, d], seed + 2).expand(&[2, 2, tk, d]).unwrap();
            let mask = masked.map(|all| key_mask(tk, all));
            let what = format!("{path:?} attention tq {tq} tk {tk} d {d} causal {causal} mask {masked:?}");
            on_path(path, || {
                gpu_matches_cpu(&what, &dev, &[q, k, v], 1e-3, 1e-4, &|t| {
                    let m = match &mask {
                        Some(m) => Some(m.to(t[0].device())?),
                        None => None,
                    };
                    Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], causal, m.as_ref())
                })
            });
        }
    }
}

/// `[2, 2, t, d]` q, k and v for the flash tests: q and k transposed views of `[b, t, h, d]` (as
/// attention layers pass them), v one head's values broadcast to both heads.
fn flash_inputs(tq: usize, tk: usize, d: usize, seed: u64) -> [Tensor; 3] {
    let f32_input = |shape: &[usize], seed: u64| random(shape, DType::F32, seed, -2.0, 2.0);
    [
        f32_input(&[2, tq, 2, d], seed).transpose(1, 2).unwrap(),
        f32_input(&[2, tk, 2, d], seed + 1).transpose(1, 2).unwrap(),
        f32_input(&[2, 1, tk, d], seed + 2).expand(&[2, 2, tk, d]).unwrap(),
    ]
}

fn flash_matches_cpu(dev: &Device, what: &str, inputs: [Tensor; 3], causal: bool, mask: Option<&Tensor>) {
    gpu_matches_cpu(what, dev, &inputs, 1e-3, 1e-4, &|t| {
        let m = match mask {
            Some(m) => Some(m.to(t[0].device())?),
            None => None,
        };
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], causal, m.as_ref())
    });
}

/// The flash kernels at lengths around their tile edges (1, 7, 33, 257) and every head-dim
/// class (16, 32 and 64 split over 4, 8 and 16 threads; 80 over 4 threads of 5 vec4s; 128 over
/// 16 of 2), causal and not, with rows that see no key.
#[test]
fn flash_attention_at_odd_lengths_and_head_dims() {
    let Some(dev) = gpu("flash_attention_at_odd_lengths_and_head_dims") else { return };
    let mut n = 0u64;
    for t in [1usize, 7, 33, 257] {
        for d in [16usize, 32, 64, 80, 128] {
            n += 1;
            let causal = n.is_multiple_of(2);
            // Every third case masks keys, the batch-1 half of those hiding every key.
            let masked = n.is_multiple_of(3).then_some(n % 2 == 1);
            let mask = masked.map(|all| key_mask(t, all));
            // Queries and keys of different lengths in some cases.
            let tk = if n % 4 == 1 { t + 2 } else { t };
            let mask = if tk == t { mask } else { masked.map(|all| key_mask(tk, all)) };
            let what = format!("flash tq {t} tk {tk} d {d} causal {causal} mask {masked:?}");
            on_path(kiln::AttentionPath::Flash, || {
                flash_matches_cpu(&dev, &what, flash_inputs(t, tk, d, 200 + 3 * n), causal, mask.as_ref())
            });
        }
    }
}

/// Every tile shape the flash kernels can be forced to (as on GPUs with more workgroup memory
/// than lavapipe's 32 KiB) gives the CPU's results: one, two and four streamed rows per
/// thread, 1 to 16 row groups.
#[test]
fn flash_attention_at_every_tiling() {
    let Some(dev) = gpu("flash_attention_at_every_tiling") else { return };
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            kiln::set_flash_tile(None);
        }
    }
    on_path(kiln::AttentionPath::Flash, || {
        let _restore = Restore;
        for (s, shape) in [(1, 1), (2, 2), (4, 1), (8, 2), (16, 1), (16, 2), (2, 4)].into_iter().enumerate() {
            kiln::set_flash_tile(Some(shape));
            for (c, &(tq, tk, d, causal, masked)) in
                [(7usize, 33usize, 16usize, true, Some(false)), (33, 7, 32, false, Some(true)), (20, 20, 8, true, None)]
                    .iter()
                    .enumerate()
            {
                let mask = masked.map(|all| key_mask(tk, all));
                let what = format!("flash tile {shape:?} tq {tq} tk {tk} d {d} causal {causal} mask {masked:?}");
                flash_matches_cpu(
                    &dev,
                    &what,
                    flash_inputs(tq, tk, d, 300 + 10 * s as u64 + c as u64),
                    causal,
                    mask.as_ref(),
                );
            }
        }
    });
}

/// The forward of one path and the backward of the other (the switch flipped in between): both
/// save and read the same log-sum-exp, +inf for rows that see no key included.
#[test]
fn attention_paths_share_the_saved_log_sum_exp() {
    use kiln::AttentionPath::{Flash, Materialized};
    let Some(dev) = gpu("attention_paths_share_the_saved_log_sum_exp") else { return };
    let (tq, tk, d) = (9, 13, 5);
    let mask = key_mask(tk, true);
    let inputs: Vec<Tensor> =
        (0..3).map(|i| random(&[2, 2, if i == 0 { tq } else { tk }, d], DType::F32, 70 + i, -2.0, 2.0)).collect();
    let attend = |t: &[Tensor]| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], true, Some(&mask.to(t[0].device()).unwrap()))
    };
    let (co, cg) = run(&inputs, &attend);
    for (first, second) in [(Flash, Materialized), (Materialized, Flash)] {
        let (go, gg) = on_path(first, || {
            let leaves: Vec<Tensor> = inputs.iter().map(|t| t.to(&dev).unwrap().with_grad()).collect();
            let out = attend(&leaves).unwrap();
            let w = Tensor::from_host(
                kiln::HostData::from_f64(&values(out.numel(), 9, -1.0, 1.0), out.dtype()),
                out.shape(),
                &dev,
            )
            .unwrap();
            let loss = out.mul(&w).unwrap().sum_all().unwrap();
            kiln::set_attention_path(second);
            loss.backward().unwrap();
            let grads: Vec<Vec<f64>> = leaves.iter().map(|l| l.grad().unwrap().to_f64_vec().unwrap()).collect();
            (out.to_f64_vec().unwrap(), grads)
        });
        let what = format!("forward {first:?}, backward {second:?}");
        assert_close(&format!("{what}: output"), &go, &co, 1e-3, 1e-4);
        for (i, (a, b)) in gg.iter().zip(&cg).enumerate() {
            assert_close(&format!("{what}: grad {i}"), a, b, 1e-3, 1e-4);
        }
    }
}

/// f16 inputs on the GPU (f16 storage, f32 softmax) against the CPU in f32 on the same
/// f16-rounded values, on both paths.
#[test]
fn attention_in_f16_on_gpu_matches_cpu_on_both_paths() {
    let Some(dev) = gpu("attention_in_f16_on_gpu_matches_cpu_on_both_paths") else { return };
    if !has_f16_else_refused(&dev) {
        return;
    }
    let round = |t: Tensor| t.to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap();
    for path in BOTH_PATHS {
        for (tq, tk, d, causal, masked) in [(33usize, 20usize, 64usize, true, Some(true)), (16, 19, 16, false, None)] {
            let q = round(random(&[2, 2, tq, d], DType::F32, 60, -1.0, 1.0));
            let k = round(random(&[2, 2, tk, d], DType::F32, 61, -1.0, 1.0));
            let v = round(random(&[2, 2, tk, d], DType::F32, 62, -1.0, 1.0));
            let mask = masked.map(|all| key_mask(tk, all));
            let attend = |t: &[Tensor], half: bool| -> Result<Tensor> {
                let m = match &mask {
                    Some(m) => Some(m.to(t[0].device())?),
                    None => None,
                };
                let cast = |x: &Tensor| if half { x.to_dtype(DType::F16) } else { Ok(x.clone()) };
                let o = Tensor::scaled_dot_product_attention(
                    &cast(&t[0])?,
                    &cast(&t[1])?,
                    &cast(&t[2])?,
                    causal,
                    m.as_ref(),
                )?;
                o.to_dtype(DType::F32)
            };
            let (co, cg) = run(&[q.clone(), k.clone(), v.clone()], &|t| attend(t, false));
            let on_gpu: Vec<Tensor> = [q, k, v].iter().map(|t| t.to(&dev).unwrap()).collect();
            let (go, gg) = on_path(path, || run(&on_gpu, &|t| attend(t, true)));
            let what = format!("{path:?} f16 attention tq {tq} tk {tk} d {d} causal {causal}");
            assert_close(&format!("{what}: output"), &go, &co, 2e-2, 1e-2);
            for (i, (a, b)) in gg.iter().zip(&cg).enumerate() {
                assert_close(&format!("{what}: grad {i}"), a, b, 3e-2, 2e-2);
            }
        }
    }
}

type AttentionCase = (usize, usize, usize, bool, Option<bool>);

/// A device of its own on the test adapter that counts dispatches per kernel.
fn counting_gpu() -> kiln_wgpu::GpuDevice {
    let options = kiln_wgpu::ContextOptions { profile: kiln_wgpu::ProfileMode::Counts, ..Default::default() };
    kiln_wgpu::GpuContext::new_with(&kiln_wgpu::context::AdapterChoice::from_env(), &options)
        .expect("a profiled context")
}

/// The tensor-core flash kernels (their names contain `coop` and `kind`) on `ctx` against the
/// CPU in f32 on the same f16-rounded values: f16 inputs, and f32 inputs under f16 autocast
/// (`autocast`), forward and backward, checking from the dispatch counts that they ran.
fn tensor_core_attention_matches_cpu(ctx: &kiln_wgpu::GpuDevice, kind: &str, cases: &[AttentionCase], autocast: bool) {
    let dev = Device::Gpu(ctx.clone());
    let round = |t: Tensor| t.to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap();
    let count = |prefix: &str| {
        ctx.profile_counts()
            .iter()
            .filter(|(n, _)| n.starts_with(prefix) && n.contains("coop") && n.contains(kind))
            .map(|(_, c)| c)
            .sum::<u64>()
    };
    let counts = || [count("attention|"), count("attention_bwd_dq|"), count("attention_bwd_dkv|")];
    on_path(kiln::AttentionPath::Flash, || {
        for (n, &(tq, tk, d, causal, masked)) in cases.iter().enumerate() {
            let seed = 500 + 3 * n as u64;
            let q = round(random(&[2, 2, tq, d], DType::F32, seed, -1.0, 1.0));
            let k = round(random(&[2, 2, tk, d], DType::F32, seed + 1, -1.0, 1.0));
            let v = round(random(&[2, 2, tk, d], DType::F32, seed + 2, -1.0, 1.0));
            let mask = masked.map(|all| key_mask(tk, all));
            // half: f16 inputs; autocast: f32 inputs under f16 autocast; neither: the CPU's f32.
            let attend = |t: &[Tensor], half: bool, autocast: bool| -> Result<Tensor> {
                let m = match &mask {
                    Some(m) => Some(m.to(t[0].device())?),
                    None => None,
                };
                let cast = |x: &Tensor| if half { x.to_dtype(DType::F16) } else { Ok(x.clone()) };
                let run = || {
                    Tensor::scaled_dot_product_attention(
                        &cast(&t[0])?,
                        &cast(&t[1])?,
                        &cast(&t[2])?,
                        causal,
                        m.as_ref(),
                    )
                };
                let o = if autocast { kiln::autocast(DType::F16, run)? } else { run()? };
                if autocast {
                    assert_eq!(o.dtype(), DType::F32, "autocast hands back f32");
                }
                o.to_dtype(DType::F32)
            };
            let (co, cg) = run(&[q.clone(), k.clone(), v.clone()], &|t| attend(t, false, false));
            let on_gpu: Vec<Tensor> = [q, k, v].iter().map(|t| t.to(&dev).unwrap()).collect();
            let modes: &[(bool, bool)] = if autocast { &[(true, false), (false, true)] } else { &[(true, false)] };
            for &(half, autocast) in modes {
                let before = counts();
                let (go, gg) = run(&on_gpu, &|t| attend(t, half, autocast));
                let after = counts();
                let what = format!(
                    "tensor-core attention{kind} (autocast {autocast}) tq {tq} tk {tk} d {d} causal {causal} mask {masked:?}"
                );
                assert!(
                    after.iter().zip(before).all(|(a, b)| *a > b),
                    "{what}: tensor-core kernels did not run: {:?}",
                    ctx.profile_counts()
                );
                assert_close(&format!("{what}: output"), &go, &co, 2e-2, 1e-2);
                for (i, (a, b)) in gg.iter().zip(&cg).enumerate() {
                    assert_close(&format!("{what}: grad {i}"), a, b, 3e-2, 2e-2);
                }
            }
        }
    });
}

/// The tensor-core (cooperative-matrix) flash kernels against the CPU on an adapter that has
/// cooperative matrices. Adapters without them (lavapipe) skip this with a line on stderr, and
/// fail it under `KILN_REQUIRE_COOP=1` (set that on a GPU that has them, e.g. an NVIDIA card
/// through Vulkan).
#[test]
fn attention_on_tensor_cores_matches_cpu() {
    const TEST: &str = "attention_on_tensor_cores_matches_cpu";
    let Some(dev) = gpu(TEST) else { return };
    if !dev.gpu_context().is_some_and(|c| c.uses_cooperative_matrices()) {
        if std::env::var("KILN_REQUIRE_COOP").is_ok_and(|v| v == "1") {
            panic!("{TEST}: KILN_REQUIRE_COOP=1 but {} has no cooperative matrices (or KILN_COOP=0)", dev.describe());
        }
        eprintln!(
            "SKIPPED {TEST}: {} has no cooperative matrices (set KILN_REQUIRE_COOP=1 to make this a failure)",
            dev.describe()
        );
        return;
    }
    let ctx = counting_gpu();
    assert!(ctx.uses_cooperative_matrices(), "{TEST}: the profiled context picked another adapter: {}", ctx.summary);
    // Lengths off and on the 16-row tiles, every head-dim class the blocks take (16 to 128),
    // causal or not, rows that see no key.
    let cases = [
        (33, 33, 64, true, Some(true)),
        (70, 45, 16, false, None),
        (128, 128, 128, true, Some(false)),
        (1, 7, 32, false, None),
        (257, 257, 64, true, None),
        (20, 40, 80, true, Some(true)),
        (64, 64, 64, false, Some(false)),
    ];
    tensor_core_attention_matches_cpu(&ctx, "", &cases, true);
}

/// The same kernels with their cooperative-matrix operations emulated in plain WGSL
/// (`kiln_wgpu::emulate_cooperative_matrices`), on any adapter with f16: their indexing,
/// masking and softmax logic checked where no tensor cores exist (lavapipe).
#[test]
fn attention_tensor_core_kernels_emulated_match_cpu() {
    const TEST: &str = "attention_tensor_core_kernels_emulated_match_cpu";
    let Some(dev) = gpu(TEST) else { return };
    if !has_f16_else_refused(&dev) {
        return;
    }
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            kiln_wgpu::emulate_cooperative_matrices(false);
        }
    }
    let _restore = Restore;
    kiln_wgpu::emulate_cooperative_matrices(true);
    let ctx = counting_gpu();
    let cases = [
        (33, 33, 64, true, Some(true)),
        (20, 40, 16, false, None),
        (7, 7, 32, true, Some(false)),
        (17, 9, 48, false, Some(true)),
    ];
    tensor_core_attention_matches_cpu(&ctx, "|emulated", &cases, false);
}

#[test]
fn adam_step_is_in_place_and_gpu_matches_cpu() {
    let params = |step, decoupled| AdamParams {
        lr: 0.05,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
        decoupled,
        step,
    };
    let cpu = Device::cpu();
    let mut devices = vec![cpu.clone()];
    devices.extend(gpu("adam_step_is_in_place_and_gpu_matches_cpu"));
    let mut results: Vec<Vec<f64>> = Vec::new();
    for dev in &devices {
        let mut all = Vec::new();
        for decoupled in [false, true] {
            let p = random(&[3, 67], DType::F32, 50, -1.0, 1.0).to(dev).unwrap();
            let (m, v) = (Tensor::zeros_like(&p).unwrap(), Tensor::zeros_like(&p).unwrap());
            let before = p.detach();
            for step in 1..=3 {
                // A transposed gradient: the step reads it through a copy.
                let g = random(&[67, 3], DType::F32, 50 + step, -1.0, 1.0).to(dev).unwrap().t().unwrap();
                p.adam_step_(&g, &m, &v, &params(step, decoupled)).unwrap();
            }
            // `before` shared the parameter's storage: the first step copied it, so it still
            // holds the starting values.
            assert_eq!(before.to_f64_vec().unwrap(), random(&[3, 67], DType::F32, 50, -1.0, 1.0).to_f64_vec().unwrap());
            all.extend(p.to_f64_vec().unwrap());
            all.extend(m.to_f64_vec().unwrap());
            all.extend(v.to_f64_vec().unwrap());
        }
        results.push(all);
    }
    if let [c, g] = &results[..] {
        assert_close("adam trajectory gpu vs cpu", g, c, 1e-5, 1e-6);
    }
    let p = Tensor::zeros(&[4], &cpu).unwrap();
    let bad = Tensor::zeros(&[5], &cpu).unwrap();
    assert!(matches!(p.adam_step_(&bad, &bad, &bad, &params(1, true)), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(p.adam_step_(&p, &p, &p, &params(1, true)), Err(Error::InvalidArgument { .. })));
}

/// The gated Adam step (GradScaler's): the step count on the device, skipped updates that
/// change nothing and do not count. GPU against CPU, and both against the host-counted
/// `adam_step_` run on the clean steps only; odd sizes, f16 on the GPU, β₁ = 0, and a count far
/// past where the series for 1 − βᵗ hands over to `exp`.
#[test]
fn adam_step_gated_skips_without_counting_and_gpu_matches_cpu() {
    let cpu = Device::cpu();
    let mut devices = vec![cpu.clone()];
    devices.extend(gpu("adam_step_gated_skips_without_counting_and_gpu_matches_cpu"));
    let skips = [false, true, false, false, true, true, false];
    // From 0; β₁ = 0 (ln β₁ = −∞); across t·ln β₂ = −0.5 (t ≈ 500), where the kernel's
    // series hands over to exp; and far past it.
    let cases = [(0.9, 0.999, 0u32), (0.0, 0.99, 0), (0.9, 0.999, 498), (0.9, 0.999, 100_000)];
    for (n, (beta1, beta2, start)) in [1usize, 7, 1023, 4097].into_iter().zip(cases) {
        for decoupled in [false, true] {
            let h = |step| AdamParams { lr: 0.05, beta1, beta2, eps: 1e-8, weight_decay: 0.1, decoupled, step };
            let what = format!("n {n} β ({beta1}, {beta2}) from step {start} decoupled {decoupled}");
            let mut runs: Vec<Vec<f64>> = Vec::new();
            for dev in &devices {
                // Moments as mid-training (all-zero moments at a large count make each update
                // ±lr·√(1/(1−β₂))/(1/(1−β₁))-sized whatever the gradient, which magnifies f32
                // rounding far past what the comparison is about).
                let p = random(&[n], DType::F32, 70, -1.0, 1.0).to(dev).unwrap();
                let m = random(&[n], DType::F32, 72, -0.1, 0.1).to(dev).unwrap();
                let v = random(&[n], DType::F32, 73, 0.01, 0.02).to(dev).unwrap();
                let steps = Tensor::from_vec(vec![start; 2], &[2], dev).unwrap();
                // The reference: the host-counted step on the clean gradients only.
                let (rp, rm, rv) = (p.copy().unwrap(), m.copy().unwrap(), v.copy().unwrap());
                let mut clean = u64::from(start);
                for (i, &skip) in skips.iter().enumerate() {
                    let mut gv = values(n, 80 + i as u64, -1.0, 1.0);
                    if skip {
                        gv[n / 2] = f64::INFINITY;
                    }
                    let g = Tensor::from_host(kiln::HostData::from_f64(&gv, DType::F32), &[n], dev).unwrap();
                    let flag = Tensor::full_dtype(&[1], f64::from(u8::from(skip)), DType::U32, dev).unwrap();
                    let before: Vec<Vec<f64>> = [&p, &m, &v].iter().map(|t| t.to_f64_vec().unwrap()).collect();
                    p.adam_step_gated_(&g, &m, &v, &steps, Some(&flag), &h(i as u64 + 1)).unwrap();
                    let now_slot = steps.to_vec::<u32>().unwrap()[(i + 1) % 2];
                    if skip {
                        let after: Vec<Vec<f64>> = [&p, &m, &v].iter().map(|t| t.to_f64_vec().unwrap()).collect();
                        assert_eq!(after, before, "{what} step {i}: a skipped step changed the state");
                    } else {
                        clean += 1;
                        rp.adam_step_(&g, &rm, &rv, &h(clean)).unwrap();
                    }
                    assert_eq!(u64::from(now_slot), clean, "{what} step {i}: the count");
                    assert_close(
                        &format!("{what} step {i} on {dev:?}: vs host-counted"),
                        &p.to_f64_vec().unwrap(),
                        &rp.to_f64_vec().unwrap(),
                        2e-6,
                        1e-7,
                    );
                }
                let mut all = p.to_f64_vec().unwrap();
                all.extend(m.to_f64_vec().unwrap());
                all.extend(v.to_f64_vec().unwrap());
                runs.push(all);
            }
            if let [c, g] = &runs[..] {
                // As `adam_step_is_in_place_and_gpu_matches_cpu`: f32 arithmetic on the GPU,
                // f64 on the CPU.
                assert_close(&format!("{what}: gpu vs cpu"), g, c, 1e-5, 1e-6);
            }
        }
    }
    // f16 parameters on the GPU: same count, values within f16 rounding of the CPU's f32 run.
    if let Some(dev) = devices.get(1).filter(|d| has_f16_else_refused(d)) {
        let h = |step| AdamParams {
            lr: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: true,
            step,
        };
        let mut outs = Vec::new();
        for (d, dt) in [(&cpu, DType::F32), (dev, DType::F16)] {
            let p = random(&[37], dt, 71, -1.0, 1.0).to(d).unwrap();
            let (m, v) = (Tensor::zeros_like(&p).unwrap(), Tensor::zeros_like(&p).unwrap());
            let steps = Tensor::full_dtype(&[2], 0.0, DType::U32, d).unwrap();
            for (i, skip) in [false, true, false].into_iter().enumerate() {
                let g = random(&[37], dt, 90 + i as u64, -1.0, 1.0).to(d).unwrap();
                let flag = Tensor::full_dtype(&[1], f64::from(u8::from(skip)), DType::U32, d).unwrap();
                p.adam_step_gated_(&g, &m, &v, &steps, Some(&flag), &h(i as u64 + 1)).unwrap();
            }
            assert_eq!(steps.to_vec::<u32>().unwrap()[1], 2, "{dt}: the count");
            outs.push(p.to_f64_vec().unwrap());
        }
        assert_close("f16 gated adam vs f32 cpu", &outs[1], &outs[0], 2e-3, 2e-3);
    }
    // Typed errors, nothing changed.
    let p = Tensor::zeros(&[4], &cpu).unwrap();
    let (g, m, v) =
        (Tensor::ones(&[4], &cpu).unwrap(), Tensor::zeros(&[4], &cpu).unwrap(), Tensor::zeros(&[4], &cpu).unwrap());
    let h = AdamParams { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: true, step: 1 };
    let f32_steps = Tensor::zeros(&[2], &cpu).unwrap();
    assert!(matches!(p.adam_step_gated_(&g, &m, &v, &f32_steps, None, &h), Err(Error::InvalidArgument { .. })));
    let steps = Tensor::full_dtype(&[2], 0.0, DType::U32, &cpu).unwrap();
    let f32_flag = Tensor::zeros(&[1], &cpu).unwrap();
    assert!(matches!(p.adam_step_gated_(&g, &m, &v, &steps, Some(&f32_flag), &h), Err(Error::DTypeMismatch { .. })));
    assert!(matches!(
        p.adam_step_gated_(&g, &m, &v, &steps, None, &AdamParams { step: 0, ..h }),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!((p.to_vec::<f32>().unwrap(), steps.to_vec::<u32>().unwrap()), (vec![0.0; 4], vec![0, 0]));
}

#[test]
fn batched_times_matrix_runs_as_one_product() {
    let cpu = Device::cpu();
    let mut devices = vec![cpu.clone()];
    devices.extend(gpu("batched_times_matrix_runs_as_one_product"));
    for dev in &devices {
        let x = random(&[3, 5, 7], DType::F32, 60, -1.0, 1.0).to(dev).unwrap();
        let w = random(&[7, 4], DType::F32, 61, -1.0, 1.0).to(dev).unwrap();
        // Flattenable, and not (a transposed left operand must keep the batched path).
        for (name, a) in [("dense", x.clone()), ("strided", x.transpose(0, 1).unwrap())] {
            let (out, grads) = run(&[a.clone(), w.clone()], &|t| t[0].matmul(&t[1]));
            let (ref_out, ref_grads) = run(&[a.clone(), w.clone()], &|t| {
                let per: Vec<Tensor> = (0..t[0].shape()[0])
                    .map(|i| t[0].narrow(0, i, 1).unwrap().squeeze(0).unwrap().matmul(&t[1]).unwrap())
                    .collect();
                Tensor::stack(&per, 0)
            });
            assert_close(&format!("{name} output"), &out, &ref_out, 1e-5, 1e-6);
            assert_close(&format!("{name} grad x"), &grads[0], &ref_grads[0], 1e-5, 1e-6);
            assert_close(&format!("{name} grad w"), &grads[1], &ref_grads[1], 1e-5, 1e-6);
        }
        // A vector on the right still drops its dim.
        let v = random(&[7], DType::F32, 62, -1.0, 1.0).to(dev).unwrap();
        assert_eq!(x.matmul(&v).unwrap().shape(), &[3, 5]);
    }
}

#[test]
fn fused_ops_reject_bad_inputs() {
    let cpu = Device::cpu();
    let x = Tensor::zeros(&[2, 3], &cpu).unwrap();
    assert!(matches!(x.layer_norm(&[4], None, None, 1e-5), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(
        x.layer_norm(&[3], Some(&Tensor::zeros(&[2], &cpu).unwrap()), None, 1e-5),
        Err(Error::ShapeMismatch { .. })
    ));
    let ids = Tensor::from_vec(vec![0u32, 3], &[2], &cpu).unwrap();
    assert!(matches!(x.cross_entropy_rows(&ids, None, 0.0), Err(Error::IndexOutOfRange { .. })));
    assert!(x.cross_entropy_rows(&ids, Some(3), 0.0).is_ok());
    let q = Tensor::zeros(&[1, 2, 3, 4], &cpu).unwrap();
    let k = Tensor::zeros(&[1, 2, 5, 3], &cpu).unwrap();
    assert!(matches!(Tensor::scaled_dot_product_attention(&q, &k, &k, false, None), Err(Error::ShapeMismatch { .. })));
    let mask = Tensor::zeros(&[1, 4], &cpu).unwrap();
    assert!(matches!(
        Tensor::scaled_dot_product_attention(&q, &q, &q, false, Some(&mask)),
        Err(Error::ShapeMismatch { .. })
    ));
    if let Some(dev) = gpu("fused_ops_reject_bad_inputs") {
        let big = Tensor::zeros(&[1, 1, 2, 300], &dev).unwrap();
        assert!(matches!(
            Tensor::scaled_dot_product_attention(&big, &big, &big, true, None),
            Err(Error::Unsupported { .. })
        ));
    }
}

#[test]
fn fused_ops_take_empty_inputs() {
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu("fused_ops_take_empty_inputs"));
    for dev in &devices {
        let x = Tensor::zeros(&[0, 5], dev).unwrap().with_grad();
        let w = Tensor::ones(&[5], dev).unwrap().with_grad();
        let y = x.layer_norm(&[5], Some(&w), None, 1e-5).unwrap();
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(w.grad().unwrap().to_f64_vec().unwrap(), vec![0.0; 5]);
        let ids = Tensor::zeros(&[0], dev).unwrap().to_dtype(DType::U32).unwrap();
        assert_eq!(x.cross_entropy_rows(&ids, None, 0.0).unwrap().shape(), &[0]);
        // No keys: every query sees nothing and gets zeros.
        let q = Tensor::ones(&[1, 2, 3, 4], dev).unwrap().with_grad();
        let kv = Tensor::zeros(&[1, 2, 0, 4], dev).unwrap();
        let o = Tensor::scaled_dot_product_attention(&q, &kv, &kv, false, None).unwrap();
        assert_eq!(o.to_f64_vec().unwrap(), vec![0.0; 24]);
        o.sum_all().unwrap().backward().unwrap();
        assert_eq!(q.grad().unwrap().to_f64_vec().unwrap(), vec![0.0; 24]);
    }
}
