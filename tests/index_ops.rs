//! topk on any dim, max/min along a dim with indices, scatter / scatter_reduce / index_add,
//! class-weighted cross-entropy and Embedding's padding_idx: the GPU against the CPU oracle on
//! random data (odd sizes, strided and broadcast views, every dim, negative dims too),
//! gradients against central differences in f64 on the CPU, and typed errors that leave the
//! inputs intact. PyTorch's own numbers for the subtle cases are in tests/torch_index_refs.rs.

#![allow(clippy::unwrap_used)]
// tests: a panic is the failure report
// `&[a.clone()]` reads like the `&[a.clone(), b.clone()]` calls beside it, and cloning a
// Tensor only bumps a reference count: clearer than `std::slice::from_ref(&a)`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use common::{assert_close, check, random, values};
use kiln::ScatterOp;
use kiln::prelude::*;
use kiln_nn::loss::{CrossEntropyOptions, Reduction, Target, cross_entropy};
use kiln_nn::{Embedding, Module};

/// d(sum(f(x)·w))/dx for every float input against central differences (f64, CPU); `ints`
/// are passed after the float inputs, unchanged (index tensors).
fn gradcheck(name: &str, shapes: &[&[usize]], ints: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let cpu = Device::cpu();
    let host: Vec<Vec<f64>> =
        shapes.iter().enumerate().map(|(i, s)| values(s.iter().product(), 300 + i as u64, -2.0, 2.0)).collect();
    let make = |vals: &[Vec<f64>], grad: bool| -> Vec<Tensor> {
        let mut v: Vec<Tensor> = vals
            .iter()
            .zip(shapes)
            .map(|(v, s)| {
                let t = Tensor::from_vec(v.clone(), s, &cpu).unwrap();
                if grad { t.with_grad() } else { t }
            })
            .collect();
        v.extend(ints.iter().cloned());
        v
    };
    let leaves = make(&host, true);
    let out = f(&leaves).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let w = Tensor::from_vec(values(out.numel(), 7, -1.0, 1.0), out.shape(), &cpu).unwrap();
    let objective = |o: &Tensor| o.mul(&w).unwrap().sum_all().unwrap().item().unwrap();
    out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    let eps = 1e-6;
    for i in 0..shapes.len() {
        let analytic =
            leaves[i].grad().map(|g| g.to_f64_vec().unwrap()).unwrap_or_else(|| vec![0.0; leaves[i].numel()]);
        let numeric: Vec<f64> = (0..leaves[i].numel())
            .map(|j| {
                let (mut plus, mut minus) = (host.clone(), host.clone());
                plus[i][j] += eps;
                minus[i][j] -= eps;
                (objective(&f(&make(&plus, false)).unwrap()) - objective(&f(&make(&minus, false)).unwrap()))
                    / (2.0 * eps)
            })
            .collect();
        assert_close(&format!("{name}: d/dinput{i}"), &analytic, &numeric, 1e-5, 1e-6);
    }
}

fn ids(shape: &[usize], below: usize, seed: u64) -> Tensor {
    random(shape, DType::U32, seed, 0.0, below as f64)
}

fn ids_from(v: Vec<u32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::cpu()).unwrap()
}

#[test]
fn topk_any_dim_matches_cpu() {
    let Some(g) = common::gpu("topk_any_dim_matches_cpu") else { return };
    for &n in &[1usize, 7, 1023, 4097] {
        let x = random(&[n, 3], DType::F32, n as u64, -4.0, 4.0);
        // k up to 64 of 4097 (topk_large_k_on_gpu has larger k).
        for (k, largest) in [(1, true), (n.min(5), false), (n.min(64), true)] {
            for dim in [0isize, -2] {
                let what = format!("topk n={n} k={k} dim={dim} largest={largest}");
                check(&format!("{what} values"), &g, &[x.clone()], 0.0, 0.0, |t| {
                    Ok(t[0].topk_dim(k, dim, largest, true)?.0)
                });
                check(&format!("{what} indices"), &g, &[x.clone()], 0.0, 0.0, |t| {
                    Ok(t[0].topk_dim(k, dim, largest, false)?.1)
                });
            }
        }
    }
    // Strided (a transposed view), broadcast (an expanded view) and rank 3 on every dim, ints.
    let t = random(&[9, 5], DType::F32, 3, -2.0, 2.0).t().unwrap();
    let b = random(&[1, 7], DType::I32, 4, -50.0, 50.0).expand(&[4, 7]).unwrap();
    let r3 = random(&[3, 7, 5], DType::F32, 5, -2.0, 2.0);
    for (name, x) in [("transposed", t), ("broadcast", b), ("rank3", r3)] {
        for dim in -(x.rank() as isize)..x.rank() as isize {
            let k = x.shape()[dim.rem_euclid(x.rank() as isize) as usize].min(3);
            for largest in [true, false] {
                let what = format!("topk {name} dim={dim} largest={largest}");
                check(&format!("{what} values"), &g, &[x.clone()], 0.0, 0.0, |t| {
                    Ok(t[0].topk_dim(k, dim, largest, true)?.0)
                });
                check(&format!("{what} indices"), &g, &[x.clone()], 0.0, 0.0, |t| {
                    Ok(t[0].topk_dim(k, dim, largest, true)?.1)
                });
            }
        }
    }
}

#[test]
fn topk_dim_against_host_sort() {
    // Independent of Kiln's topk: sort each column by hand (ties: lower index first).
    let v = vec![3.0f32, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 9.0];
    let x = Tensor::from_vec(v.clone(), &[4, 3], &Device::cpu()).unwrap();
    let (vals, idx) = x.topk_dim(2, 0, true, true).unwrap();
    assert_eq!(vals.shape(), &[2, 3]);
    let (vals, idx) = (vals.to_vec::<f32>().unwrap(), idx.contiguous().unwrap().to_vec::<u32>().unwrap());
    for c in 0..3 {
        let mut order: Vec<usize> = (0..4).collect();
        order.sort_by(|&a, &b| v[b * 3 + c].partial_cmp(&v[a * 3 + c]).unwrap());
        for r in 0..2 {
            assert_eq!(idx[r * 3 + c] as usize, order[r], "column {c} rank {r}");
            assert_eq!(vals[r * 3 + c], v[order[r] * 3 + c]);
        }
    }
    // A scalar is one entry along dim 0.
    let s = Tensor::from_vec(vec![2.5f32], &[], &Device::cpu()).unwrap();
    let (sv, si) = s.topk_dim(1, -1, true, true).unwrap();
    assert_eq!((sv.shape(), sv.item().unwrap(), si.to_vec::<u32>().unwrap()), (&[][..], 2.5, vec![0]));
}

#[test]
fn max_min_dim_match_cpu() {
    let Some(g) = common::gpu("max_min_dim_match_cpu") else { return };
    let mut inputs = Vec::new();
    for &n in &[1usize, 7, 1023, 4097] {
        inputs.push((format!("n={n}"), random(&[3, n], DType::F32, n as u64, -3.0, 3.0)));
    }
    inputs.push(("transposed".into(), random(&[9, 5], DType::F32, 3, -2.0, 2.0).t().unwrap()));
    inputs.push(("broadcast".into(), random(&[1, 7], DType::F32, 4, -2.0, 2.0).expand(&[4, 7]).unwrap()));
    inputs.push(("ties i32".into(), random(&[5, 6, 3], DType::I32, 5, -3.0, 3.0)));
    let nan = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0, f32::NAN, 2.0, 2.0], &[2, 3], &Device::cpu()).unwrap();
    inputs.push(("nan".into(), nan));
    for (name, x) in inputs {
        for dim in -(x.rank() as isize)..x.rank() as isize {
            for keepdim in [false, true] {
                let what = format!("{name} dim={dim} keepdim={keepdim}");
                check(&format!("max values {what}"), &g, &[x.clone()], 0.0, 0.0, |t| Ok(t[0].max_dim(dim, keepdim)?.0));
                check(&format!("max indices {what}"), &g, &[x.clone()], 0.0, 0.0, |t| {
                    Ok(t[0].max_dim(dim, keepdim)?.1)
                });
                check(&format!("min values {what}"), &g, &[x.clone()], 0.0, 0.0, |t| Ok(t[0].min_dim(dim, keepdim)?.0));
                check(&format!("min indices {what}"), &g, &[x.clone()], 0.0, 0.0, |t| {
                    Ok(t[0].min_dim(dim, keepdim)?.1)
                });
            }
        }
    }
}

#[test]
fn scatter_reduce_matches_cpu() {
    let Some(g) = common::gpu("scatter_reduce_matches_cpu") else { return };
    // [rows, n] targets along dim 1 with ids of extent m (repeats and untouched elements).
    for &(n, m) in &[(1usize, 1usize), (7, 7), (1023, 300), (4097, 9)] {
        let x = random(&[3, n], DType::F32, n as u64, -2.0, 2.0);
        let i = ids(&[3, m], n, 11 + n as u64);
        let s = random(&[3, m], DType::F32, 12 + n as u64, 0.5, 1.5);
        for op in ScatterOp::ALL {
            for include_self in [true, false] {
                let what = format!("{} n={n} m={m} include_self={include_self}", op.name());
                check(&what, &g, &[x.clone(), i.clone(), s.clone()], 2e-5, 1e-6, |t| {
                    t[0].scatter_reduce(1, &t[1], &t[2], op, include_self)
                });
            }
        }
    }
    // Every dim of a rank-3 tensor (negative too), a strided self, broadcast src, strided ids,
    // src larger than ids, and i32/f16 data.
    let x = random(&[4, 5, 6], DType::F32, 1, -2.0, 2.0).permute(&[2, 1, 0]).unwrap(); // [6, 5, 4]
    let s = random(&[1, 4, 3], DType::F32, 2, -2.0, 2.0).expand(&[3, 4, 3]).unwrap();
    for dim in -3isize..3 {
        let d = dim.rem_euclid(3) as usize;
        let i = ids(&[3, 4, 3], x.shape()[d], 20 + d as u64);
        let it = ids(&[3, 3, 4], x.shape()[d], 30 + d as u64).permute(&[0, 2, 1]).unwrap();
        for op in ScatterOp::ALL {
            for include_self in [true, false] {
                let what = format!("{} rank3 dim={dim} include_self={include_self}", op.name());
                check(&what, &g, &[x.clone(), i.clone(), s.clone()], 2e-5, 1e-6, |t| {
                    t[0].scatter_reduce(dim, &t[1], &t[2], op, include_self)
                });
                check(&format!("{what} strided ids"), &g, &[x.clone(), it.clone(), s.clone()], 2e-5, 1e-6, |t| {
                    t[0].scatter_reduce(dim, &t[1], &t[2], op, include_self)
                });
            }
        }
    }
    let big_src = random(&[5, 9], DType::F32, 3, -2.0, 2.0);
    let xi = random(&[4, 7], DType::I32, 4, -20.0, 20.0);
    let si = random(&[4, 9], DType::I32, 5, -20.0, 20.0);
    let xh = random(&[4, 7], DType::F16, 6, -2.0, 2.0);
    let sh = random(&[4, 9], DType::F16, 7, 0.5, 1.5);
    let i = ids(&[4, 9], 7, 8);
    for op in ScatterOp::ALL {
        for include_self in [true, false] {
            let what = format!("{} include_self={include_self}", op.name());
            check(
                &format!("{what} src larger"),
                &g,
                &[random(&[4, 7], DType::F32, 9, -2.0, 2.0), i.clone(), big_src.clone()],
                2e-5,
                1e-6,
                |t| t[0].scatter_reduce(1, &t[1], &t[2], op, include_self),
            );
            check(&format!("{what} i32"), &g, &[xi.clone(), i.clone(), si.clone()], 0.0, 0.0, |t| {
                t[0].scatter_reduce(-1, &t[1], &t[2], op, include_self)
            });
            check(&format!("{what} f16"), &g, &[xh.clone(), i.clone(), sh.clone()], 2e-3, 2e-3, |t| {
                t[0].scatter_reduce(-1, &t[1], &t[2], op, include_self)
            });
        }
    }
    // NaN propagates through amax/amin on both.
    let xn = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0], &[3], &Device::cpu()).unwrap();
    let sn = Tensor::from_vec(vec![f32::NAN, 5.0, 0.5, 2.0], &[4], &Device::cpu()).unwrap();
    let inn = ids_from(vec![0, 1, 2, 2], &[4]);
    for op in [ScatterOp::Amax, ScatterOp::Amin] {
        for include_self in [true, false] {
            check(&format!("{} NaN", op.name()), &g, &[xn.clone(), inn.clone(), sn.clone()], 0.0, 0.0, |t| {
                t[0].scatter_reduce(0, &t[1], &t[2], op, include_self)
            });
        }
    }
}

#[test]
fn scatter_and_index_add_match_cpu() {
    let Some(g) = common::gpu("scatter_and_index_add_match_cpu") else { return };
    for &n in &[1usize, 7, 1023, 4097] {
        let x = random(&[n, 3], DType::F32, n as u64, -2.0, 2.0);
        let i = ids(&[n.min(50), 3], n, 3);
        let s = random(&[n.min(50), 3], DType::F32, 4, -2.0, 2.0);
        check(&format!("scatter n={n}"), &g, &[x.clone(), i.clone(), s.clone()], 0.0, 0.0, |t| {
            t[0].scatter(0, &t[1], &t[2])
        });
        check(&format!("scatter_value n={n}"), &g, &[x.clone(), i.clone()], 0.0, 0.0, |t| {
            t[0].scatter_value(-2, &t[1], 0.5)
        });
        let i1 = ids(&[n.min(50)], n, 5);
        check(&format!("index_add n={n}"), &g, &[x.clone(), i1, s], 2e-5, 1e-6, |t| {
            t[0].index_add(0, &t[1], &t[2], -1.5)
        });
    }
    let x = random(&[5, 7], DType::F32, 1, -2.0, 2.0).t().unwrap(); // [7, 5], strided
    let src = random(&[7, 1], DType::F32, 2, -2.0, 2.0).expand(&[7, 4]).unwrap(); // broadcast
    let i = ids(&[4], 5, 6);
    for dim in [1isize, -1] {
        check(&format!("index_add strided dim={dim}"), &g, &[x.clone(), i.clone(), src.clone()], 2e-5, 1e-6, |t| {
            t[0].index_add(dim, &t[1], &t[2], 1.0)
        });
    }
    let xi = random(&[6, 4], DType::I32, 7, -9.0, 9.0);
    let si = random(&[3, 4], DType::I32, 8, -9.0, 9.0);
    check("index_add i32", &g, &[xi.clone(), ids(&[3], 6, 9), si.clone()], 0.0, 0.0, |t| {
        t[0].index_add(0, &t[1], &t[2], 1.0)
    });
    check("scatter i32", &g, &[xi, ids(&[3, 4], 6, 10), si], 0.0, 0.0, |t| t[0].scatter(0, &t[1], &t[2]));
}

#[test]
fn weighted_cross_entropy_and_padding_idx_match_cpu() {
    let Some(g) = common::gpu("weighted_cross_entropy_and_padding_idx_match_cpu") else { return };
    for &n in &[1usize, 7, 1023] {
        let x = random(&[n, 5], DType::F32, n as u64, -3.0, 3.0);
        let t = ids(&[n], 5, 2);
        let w = random(&[5], DType::F32, 3, 0.1, 2.0);
        for (ignore, eps) in [(None, 0.0), (Some(2), 0.0), (Some(0), 0.3), (None, 0.1)] {
            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                let what = format!("ce n={n} ignore={ignore:?} eps={eps} {reduction:?}");
                check(&what, &g, &[x.clone(), t.clone(), w.clone()], 2e-5, 1e-6, |v| {
                    let opts = CrossEntropyOptions {
                        reduction,
                        ignore_index: ignore,
                        label_smoothing: eps,
                        weight: Some(v[2].clone()),
                    };
                    cross_entropy(&v[0], &Target::Indices(&v[1]), &opts)
                });
            }
        }
    }
    // [n, c, d] logits, a transposed view.
    let x = random(&[3, 4, 5], DType::F32, 9, -2.0, 2.0).permute(&[0, 1, 2]).unwrap();
    check("ce [n, c, d]", &g, &[x, ids(&[3, 5], 4, 4), random(&[4], DType::F32, 5, 0.1, 2.0)], 2e-5, 1e-6, |v| {
        let opts = CrossEntropyOptions {
            ignore_index: Some(1),
            label_smoothing: 0.2,
            weight: Some(v[2].clone()),
            ..Default::default()
        };
        cross_entropy(&v[0], &Target::Indices(&v[1]), &opts)
    });
}

#[test]
fn embedding_padding_idx_gets_no_gradient() {
    let mut devices = vec![Device::cpu()];
    devices.extend(common::gpu("embedding_padding_idx_gets_no_gradient"));
    for d in &devices {
        kiln::manual_seed(3);
        let emb = Embedding::with_padding_idx(6, 4, -4, d).unwrap();
        assert_eq!(emb.padding_idx, Some(2));
        let table = emb.weight.to_f64_vec().unwrap();
        assert!(table[8..12].iter().all(|&v| v == 0.0), "padding row starts at zero");
        assert!(table[..8].iter().chain(&table[12..]).all(|&v| v != 0.0), "other rows are random");
        // A checkpoint may hold a nonzero padding row: lookups return it as it is.
        let loaded = Tensor::from_vec(values(24, 5, -1.0, 1.0), &[6, 4], &Device::cpu())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to(d)
            .unwrap()
            .with_grad();
        let emb = Embedding { weight: loaded.clone(), padding_idx: Some(2) };
        let ids = Tensor::from_vec(vec![2u32, 0, 2, 5], &[2, 2], d).unwrap();
        let out = emb.forward(&ids).unwrap();
        let want: Vec<f64> =
            [2usize, 0, 2, 5].iter().flat_map(|&r| loaded.to_f64_vec().unwrap()[r * 4..r * 4 + 4].to_vec()).collect();
        assert_eq!(out.to_f64_vec().unwrap(), want, "lookups on {}", d.name());
        out.sum_all().unwrap().backward().unwrap();
        let grad = emb.weight.grad().unwrap().to_f64_vec().unwrap();
        let mut expect = vec![0.0; 24];
        expect[..4].fill(1.0);
        expect[20..].fill(1.0);
        assert_eq!(grad, expect, "gradient on {} (none to the padding row)", d.name());
    }
}

#[test]
fn index_op_gradients() {
    let i = ids_from(vec![2, 0, 2, 4, 1, 1, 3, 1, 4, 4, 4, 0], &[3, 4]);
    for op in ScatterOp::ALL {
        for include_self in [true, false] {
            let name = format!("scatter_reduce {} include_self={include_self}", op.name());
            gradcheck(&name, &[&[3, 5], &[3, 4]], &[i.clone()], |t| {
                t[0].scatter_reduce(1, &t[2], &t[1], op, include_self)
            });
        }
    }
    let i0 = ids_from(vec![3, 0, 1, 1, 2, 0], &[2, 3]);
    gradcheck("scatter dim 0 (repeats)", &[&[4, 3], &[2, 3]], &[i0.clone()], |t| t[0].scatter(0, &t[2], &t[1]));
    gradcheck("scatter src larger", &[&[4, 3], &[3, 4]], &[i0.clone()], |t| t[0].scatter(-2, &t[2], &t[1]));
    gradcheck("scatter_value", &[&[4, 3]], &[i0], |t| t[0].scatter_value(0, &t[1], 3.0));
    let i1 = ids_from(vec![4, 0, 4, 2], &[4]);
    gradcheck("index_add dim 1", &[&[3, 5], &[3, 4]], &[i1.clone()], |t| t[0].index_add(1, &t[2], &t[1], -0.75));
    gradcheck("index_add dim -2", &[&[5, 2], &[4, 2]], &[i1], |t| t[0].index_add(-2, &t[2], &t[1], 2.0));
    gradcheck("topk_dim 0", &[&[5, 3]], &[], |t| Ok(t[0].topk_dim(2, 0, true, true)?.0));
    gradcheck("topk_dim -2 smallest", &[&[2, 5, 3]], &[], |t| Ok(t[0].topk_dim(3, -2, false, false)?.0));
    gradcheck("max_dim", &[&[4, 5]], &[], |t| Ok(t[0].max_dim(1, false)?.0));
    gradcheck("min_dim keepdim", &[&[4, 5, 2]], &[], |t| Ok(t[0].min_dim(-3, true)?.0));
    let tgt = ids_from(vec![0, 4, 2, 2, 1, 3], &[6]);
    let w = Tensor::from_vec(vec![0.5f64, 2.0, 1.0, 0.25, 3.0], &[5], &Device::cpu()).unwrap();
    for (ignore, eps) in [(None, 0.0), (Some(2), 0.0), (Some(2), 0.3)] {
        for reduction in [Reduction::Mean, Reduction::None] {
            let name = format!("weighted ce ignore={ignore:?} eps={eps} {reduction:?}");
            let opts =
                CrossEntropyOptions { reduction, ignore_index: ignore, label_smoothing: eps, weight: Some(w.clone()) };
            gradcheck(&name, &[&[6, 5]], &[tgt.clone()], |t| cross_entropy(&t[0], &Target::Indices(&t[1]), &opts));
        }
    }
}

/// Runs `f`, which must fail with an error matched by `is`, and checks `inputs` are unchanged.
fn assert_fails(what: &str, inputs: &[&Tensor], is: fn(&Error) -> bool, f: impl FnOnce() -> Result<()>) {
    let before: Vec<Vec<f64>> = inputs.iter().map(|t| t.to_f64_vec().unwrap()).collect();
    match f() {
        Ok(()) => panic!("{what}: succeeded"),
        Err(e) => assert!(is(&e), "{what}: wrong error {e:?}"),
    }
    for (t, b) in inputs.iter().zip(&before) {
        assert_eq!(&t.to_f64_vec().unwrap(), b, "{what}: an input changed");
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let mut devices = vec![Device::cpu()];
    devices.extend(common::gpu("bad_arguments_are_typed_errors"));
    let shape = |e: &Error| matches!(e, Error::ShapeMismatch { .. });
    let range = |e: &Error| matches!(e, Error::IndexOutOfRange { .. });
    let dtype = |e: &Error| matches!(e, Error::DTypeMismatch { .. } | Error::UnsupportedDType { .. });
    let invalid = |e: &Error| matches!(e, Error::InvalidArgument { .. } | Error::IndexOutOfRange { .. });
    for d in &devices {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], d).unwrap();
        let i = Tensor::from_vec(vec![0u32, 2, 1], &[1, 3], d).unwrap();
        let bad = Tensor::from_vec(vec![0u32, 3, 1], &[1, 3], d).unwrap();
        let neg = Tensor::from_vec(vec![0i32, -1, 1], &[1, 3], d).unwrap();
        let s = Tensor::from_vec(vec![7.0f32, 8.0, 9.0], &[1, 3], d).unwrap();
        let s64 = s.to_dtype(DType::I32).unwrap();
        let fi = i.to_dtype(DType::F32).unwrap();
        for op in ScatterOp::ALL {
            let n = op.name();
            assert_fails(&format!("{n} dim 2"), &[&x, &i, &s], invalid, || {
                x.scatter_reduce(2, &i, &s, op, true).map(drop)
            });
            assert_fails(&format!("{n} dim -3"), &[&x, &i, &s], invalid, || {
                x.scatter_reduce(-3, &i, &s, op, true).map(drop)
            });
            assert_fails(&format!("{n} id 3"), &[&x, &bad, &s], range, || {
                x.scatter_reduce(1, &bad, &s, op, false).map(drop)
            });
            assert_fails(&format!("{n} id -1"), &[&x, &neg, &s], range, || {
                x.scatter_reduce(1, &neg, &s, op, false).map(drop)
            });
            assert_fails(&format!("{n} src dtype"), &[&x, &i, &s64], dtype, || {
                x.scatter_reduce(1, &i, &s64, op, true).map(drop)
            });
            assert_fails(&format!("{n} float ids"), &[&x, &fi, &s], dtype, || {
                x.scatter_reduce(1, &fi, &s, op, true).map(drop)
            });
            let wide = Tensor::zeros(&[3, 3], d).unwrap();
            assert_fails(&format!("{n} ids past self"), &[&x, &wide], shape, || {
                x.scatter_reduce(1, &wide.to_dtype(DType::U32)?, &wide, op, true).map(drop)
            });
            let short = Tensor::zeros(&[1, 2], d).unwrap();
            assert_fails(&format!("{n} src smaller"), &[&x, &i, &short], shape, || {
                x.scatter_reduce(1, &i, &short, op, true).map(drop)
            });
            let b = x.gt_scalar(2.0).unwrap();
            assert_fails(&format!("{n} bool"), &[&b], dtype, || b.scatter_reduce(1, &i, &b, op, true).map(drop));
        }
        assert_fails("scatter_value id 3", &[&x, &bad], range, || x.scatter_value(1, &bad, 0.0).map(drop));
        let i1 = Tensor::from_vec(vec![0u32, 1], &[2], d).unwrap();
        let src = Tensor::ones(&[3, 2], d).unwrap();
        assert_fails("index_add 2-D ids", &[&x, &i], shape, || x.index_add(1, &i, &s, 1.0).map(drop));
        assert_fails("index_add source shape", &[&x, &i1, &src], shape, || x.index_add(1, &i1, &src, 1.0).map(drop));
        let i1bad = Tensor::from_vec(vec![0u32, 2], &[2], d).unwrap();
        let src0 = Tensor::ones(&[2, 3], d).unwrap();
        assert_fails("index_add id 2", &[&x, &i1bad, &src0], range, || x.index_add(0, &i1bad, &src0, 1.0).map(drop));
        assert_fails("index_add dim", &[&x], invalid, || x.index_add(2, &i1, &src0, 1.0).map(drop));
        assert_fails("topk k", &[&x], invalid, || x.topk_dim(3, 0, true, true).map(drop));
        assert_fails("topk dim", &[&x], invalid, || x.topk_dim(1, 2, true, true).map(drop));
        assert_fails("topk dim -3", &[&x], invalid, || x.topk_dim(1, -3, true, true).map(drop));
        assert_fails("max_dim dim", &[&x], invalid, || x.max_dim(2, false).map(drop));
        assert_fails("min_dim dim", &[&x], invalid, || x.min_dim(-3, true).map(drop));
        let empty = Tensor::zeros(&[2, 0], d).unwrap();
        assert_fails("max_dim empty", &[&empty], invalid, || empty.max_dim(1, false).map(drop));
        // Cross-entropy weights: wrong length, dtype; embedding padding index past the table.
        let logits = Tensor::zeros(&[2, 3], d).unwrap();
        let t = Tensor::from_vec(vec![0u32, 2], &[2], d).unwrap();
        for (what, w, is) in [
            ("weight length", Tensor::ones(&[4], d).unwrap(), shape as fn(&Error) -> bool),
            ("weight dtype", Tensor::ones(&[3], d).unwrap().to_dtype(DType::I32).unwrap(), dtype),
        ] {
            let opts = CrossEntropyOptions { weight: Some(w.clone()), ..Default::default() };
            assert_fails(what, &[&logits, &t, &w], is, || {
                cross_entropy(&logits, &Target::Indices(&t), &opts).map(drop)
            });
        }
        assert!(matches!(Embedding::with_padding_idx(4, 2, 4, d), Err(Error::IndexOutOfRange { .. })));
        assert!(matches!(Embedding::with_padding_idx(4, 2, -5, d), Err(Error::IndexOutOfRange { .. })));
    }
}

/// Long rows and large k (once stopped short on lavapipe: the old kernel made k passes inside
/// one invocation, past llvmpipe's cap of 65535 loop iterations per invocation; see
/// kernels/index.rs): odd lengths up to 65537, k from 1 to the whole row, both directions,
/// f32 / f16 / i32 with ties everywhere, a strided view, on any dim. Both backends rank ties
/// by the lower index first, so indices are compared exactly; the values are exact too, and
/// also checked as the source values at the returned indices (gather), which is what holds
/// for any tie order.
#[test]
fn topk_large_k_on_gpu() {
    let Some(g) = common::gpu("topk_large_k_on_gpu") else { return };
    let f16 = common::has_f16_else_refused(&g);
    for &n in &[1usize, 7, 1023, 4097, 65537] {
        // The longest row (slow on lavapipe) in f32 only, with k in the folding and sorting paths.
        let (rows, dtypes, mut ks) = if n > 4097 {
            (1, &[DType::F32][..], vec![1, 1000, n])
        } else {
            (3, &[DType::F32, DType::F16, DType::I32][..], vec![1, n.min(5), n.min(1000), n.min(1025), n])
        };
        ks.dedup();
        for &dtype in dtypes {
            if dtype == DType::F16 && !f16 {
                continue;
            }
            // Integers in [-6, 6): ties everywhere. Rows run along dim 0 (a strided view) too.
            let x = random(&[rows, n], DType::F32, n as u64, -6.0, 6.0).floor().unwrap().to_dtype(dtype).unwrap();
            for &k in &ks {
                for largest in [true, false] {
                    for (dim, x) in [(1isize, x.clone()), (0, x.t().unwrap().contiguous().unwrap())] {
                        let what = format!("topk {dtype} n={n} k={k} dim={dim} largest={largest}");
                        let topk = |t: &[Tensor]| t[0].topk_dim(k, dim, largest, true);
                        check(&format!("{what} values"), &g, &[x.clone()], 0.0, 0.0, |t| Ok(topk(t)?.0));
                        check(&format!("{what} indices"), &g, &[x.clone()], 0.0, 0.0, |t| Ok(topk(t)?.1));
                        let (v, i) = topk(&[x.to(&g).unwrap()]).unwrap();
                        let at = x.to(&g).unwrap().gather(dim, &i).unwrap();
                        assert_close(&what, &at.to_f64_vec().unwrap(), &v.to_f64_vec().unwrap(), 0.0, 0.0);
                    }
                }
            }
        }
    }
}

/// Times GPU topk (median of 10 after 3 warm-ups, each ending in a sync) on shapes real
/// models meet: vocabulary logits, whole-row sorts, many short rows. Prints one line a shape;
/// asserts nothing. Run on a real GPU with
/// `cargo test --release -p kiln --test index_ops topk_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn topk_timing() {
    let Some(g) = common::gpu("topk_timing") else { return };
    let cases: [(&[usize], usize); 7] = [
        (&[64, 30522], 5),
        (&[64, 30522], 1000),
        (&[1, 65536], 1),
        (&[1, 65536], 65536),
        (&[256, 4097], 4097),
        (&[4096, 1024], 10),
        (&[100_000, 10], 3),
    ];
    for (shape, k) in cases {
        let x = random(shape, DType::F32, 11, -4.0, 4.0).to(&g).unwrap();
        let mut times = Vec::new();
        for i in 0..13 {
            g.sync().unwrap();
            let start = std::time::Instant::now();
            let (v, ids) = x.topk(k, true).unwrap();
            g.sync().unwrap();
            if i >= 3 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            drop((v, ids));
        }
        times.sort_by(f64::total_cmp);
        println!("topk {shape:?} k={k}: median {:.3} ms (min {:.3} ms)", times[times.len() / 2], times[0]);
    }
}
