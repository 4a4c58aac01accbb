//! Kiln's index ops against values PyTorch computed (scripts/torch_index_refs.py wrote
//! tests/data/torch_index_refs.safetensors, float64 on the CPU): topk and max/min tie-breaking
//! and NaN, scatter_reduce with and without self (empty groups, integer mean's floor, prod's
//! gradient at zeros, amax's shared gradient), scatter, index_add, and cross-entropy with class
//! weights, ignore_index and label smoothing. On the CPU in f64 (tight) and on the GPU in f32.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::assert_close;
use kiln::ScatterOp;
use kiln::prelude::*;
use kiln_nn::loss::{CrossEntropyOptions, Reduction, Target, cross_entropy};
use std::collections::HashMap;

struct Refs {
    map: HashMap<String, Tensor>,
    dev: Device,
    /// The float dtype inputs are converted to (f64 on the CPU, f32 on the GPU).
    float: DType,
}

impl Refs {
    fn load(dev: &Device, float: DType) -> Refs {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/torch_index_refs.safetensors");
        let map = kiln_nn::checkpoint::load_state_dict(path)
            .expect("tests/data/torch_index_refs.safetensors")
            .into_iter()
            .collect();
        Refs { map, dev: dev.clone(), float }
    }

    /// The stored tensor on the device: floats in `self.float`, indices as u32 unless `i32`.
    fn get(&self, name: &str) -> Tensor {
        let t = self.map.get(name).unwrap_or_else(|| panic!("no reference {name:?}"));
        let t = if t.dtype().is_float() { t.to_dtype(self.float).unwrap() } else { t.clone() };
        t.to(&self.dev).unwrap()
    }

    fn ids(&self, name: &str) -> Tensor {
        self.get(name).to_dtype(DType::U32).unwrap()
    }

    fn want(&self, name: &str) -> Vec<f64> {
        self.map.get(name).unwrap_or_else(|| panic!("no reference {name:?}")).to_f64_vec().unwrap()
    }

    fn tol(&self) -> (f64, f64) {
        if self.float == DType::F64 { (1e-12, 1e-12) } else { (2e-5, 2e-6) }
    }

    fn close(&self, what: &str, got: &Tensor, want: &str) {
        let (r, a) = self.tol();
        let w = self.want(want);
        assert_eq!(got.numel(), w.len(), "{what}: {:?} vs {} values", got.shape(), w.len());
        assert_close(&format!("{what} on {}", self.dev.name()), &got.to_f64_vec().unwrap(), &w, r, a);
    }
}

fn each_device(test: &str, f: impl Fn(&Refs)) {
    f(&Refs::load(&Device::cpu(), DType::F64));
    if let Some(g) = common::gpu(test) {
        f(&Refs::load(&g, DType::F32));
    }
}

#[test]
fn topk_matches_torch() {
    each_device("topk_matches_torch", |r| {
        let x = r.get("topk.x");
        let host = x.to_f64_vec().unwrap();
        for dim in [0usize, 1] {
            for largest in [true, false] {
                let tag = format!("topk.d{dim}.{}", if largest { "max" } else { "min" });
                let k = if dim == 0 { 2 } else { 3 };
                let (v, i) = x.topk_dim(k, dim as isize, largest, true).unwrap();
                r.close(&tag, &v, &format!("{tag}.values"));
                // PyTorch orders tied values arbitrarily: every index must point at its value,
                // and Kiln puts the lower index first among ties.
                let (v, i) = (v.to_f64_vec().unwrap(), i.contiguous().unwrap().to_f64_vec().unwrap());
                let (rows, cols) = (3, 6);
                let shape = if dim == 0 { [k, cols] } else { [rows, k] };
                for a in 0..shape[0] {
                    for b in 0..shape[1] {
                        let p = a * shape[1] + b;
                        let src = if dim == 0 { i[p] as usize * cols + b } else { a * cols + i[p] as usize };
                        let same = host[src] == v[p] || (host[src].is_nan() && v[p].is_nan());
                        assert!(same, "{tag}: index {} does not hold {}", i[p], v[p]);
                        let prev = if dim == 0 {
                            a.checked_sub(1).map(|a| a * shape[1] + b)
                        } else {
                            b.checked_sub(1).map(|b| a * shape[1] + b)
                        };
                        if let Some(q) = prev.filter(|&q| v[q] == v[p]) {
                            assert!(i[q] < i[p], "{tag}: ties not in index order");
                        }
                    }
                }
            }
        }
        // Rows without ties: the exact indices too.
        let want = r.want("topk.d1.max.indices");
        let (_, i) = x.topk_dim(3, 1, true, true).unwrap();
        assert_eq!(&i.to_f64_vec().unwrap()[3..9], &want[3..9], "topk indices without ties");
    });
}

#[test]
fn max_min_dim_match_torch() {
    each_device("max_min_dim_match_torch", |r| {
        let x = r.get("extreme.x");
        for dim in [0isize, 1] {
            for (name, f) in [
                ("max", Tensor::max_dim as fn(&Tensor, isize, bool) -> Result<(Tensor, Tensor)>),
                ("min", Tensor::min_dim),
            ] {
                let (v, i) = f(&x, dim, false).unwrap();
                let tag = format!("extreme.{name}.d{dim}");
                r.close(&tag, &v, &format!("{tag}.values"));
                assert_eq!(
                    i.to_f64_vec().unwrap(),
                    r.want(&format!("{tag}.indices")),
                    "{tag} indices (first of ties, NaN wins)"
                );
            }
        }
        let xg = r.get("extreme.grad.x").with_grad();
        let w = r.get("extreme.grad.w");
        (&xg.max_dim(0, false).unwrap().0 * &w).unwrap().sum_all().unwrap().backward().unwrap();
        r.close("max_dim gradient", &xg.grad().unwrap(), "extreme.grad.max_d0");
    });
}

#[test]
fn scatter_reduce_matches_torch() {
    each_device("scatter_reduce_matches_torch", |r| {
        let (index, w) = (r.ids("sr.index"), r.get("sr.w"));
        for op in [ScatterOp::Sum, ScatterOp::Prod, ScatterOp::Mean, ScatterOp::Amax, ScatterOp::Amin] {
            for include_self in [true, false] {
                let tag = format!("sr.{}.{}", op.name(), if include_self { "self" } else { "noself" });
                let (s, src) = (r.get("sr.self").with_grad(), r.get("sr.src").with_grad());
                let y = s.scatter_reduce(1, &index, &src, op, include_self).unwrap();
                r.close(&tag, &y, &format!("{tag}.out"));
                (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                r.close(&format!("{tag} d self"), &s.grad().unwrap(), &format!("{tag}.dself"));
                r.close(&format!("{tag} d src"), &src.grad().unwrap(), &format!("{tag}.dsrc"));
                // Integers: wrapping sums and products, floor-division mean.
                let si = r.get("sri.self");
                let y = si.scatter_reduce(0, &r.ids("sri.index"), &r.get("sri.src"), op, include_self).unwrap();
                assert_eq!(
                    y.to_f64_vec().unwrap(),
                    r.want(&format!("sri.{}.{}", op.name(), if include_self { "self" } else { "noself" })),
                    "{tag} i32"
                );
            }
        }
    });
}

#[test]
fn scatter_and_index_add_match_torch() {
    each_device("scatter_and_index_add_match_torch", |r| {
        for (op, dim) in [("scatter", 0isize), ("index_add", 1)] {
            let (s, src) = (r.get(&format!("{op}.self")).with_grad(), r.get(&format!("{op}.src")).with_grad());
            let idx = r.ids(&format!("{op}.index"));
            let y =
                if op == "scatter" { s.scatter(dim, &idx, &src) } else { s.index_add(dim, &idx, &src, -0.75) }.unwrap();
            r.close(op, &y, &format!("{op}.out"));
            (&y * &r.get(&format!("{op}.w"))).unwrap().sum_all().unwrap().backward().unwrap();
            r.close(&format!("{op} d self"), &s.grad().unwrap(), &format!("{op}.dself"));
            r.close(&format!("{op} d src"), &src.grad().unwrap(), &format!("{op}.dsrc"));
        }
        let y = r.get("scatter.self").scatter_value(0, &r.ids("scatter.index"), -2.5).unwrap();
        r.close("scatter value", &y, "scatter.value_out");
    });
}

#[test]
fn weighted_cross_entropy_matches_torch() {
    each_device("weighted_cross_entropy_matches_torch", |r| {
        let (target, weight, target3, w3) =
            (r.ids("ce.target"), r.get("ce.weight"), r.ids("ce3.target"), r.get("ce3.w"));
        for ignore in [None, Some(2u32)] {
            for eps in [0.0, 0.2] {
                for (red, reduction) in [("mean", Reduction::Mean), ("sum", Reduction::Sum), ("none", Reduction::None)]
                {
                    let i = ignore.map_or("none".to_string(), |i| i.to_string());
                    let tag = format!("i{i}.e{}.{red}", (eps * 10.0) as u32);
                    let opts = CrossEntropyOptions {
                        reduction,
                        ignore_index: ignore,
                        label_smoothing: eps,
                        weight: Some(weight.clone()),
                    };
                    let x = r.get("ce.logits").with_grad();
                    let y = cross_entropy(&x, &Target::Indices(&target), &opts).unwrap();
                    r.close(&format!("ce.{tag}"), &y, &format!("ce.{tag}"));
                    if reduction == Reduction::Mean {
                        y.backward().unwrap();
                        r.close(&format!("ce.{tag} grad"), &x.grad().unwrap(), &format!("ce.{tag}.grad"));
                    }
                    let x3 = r.get("ce3.logits").with_grad();
                    let y3 = cross_entropy(&x3, &Target::Indices(&target3), &opts).unwrap();
                    r.close(&format!("ce3.{tag}"), &y3, &format!("ce3.{tag}"));
                    if reduction == Reduction::None {
                        (&y3 * &w3).unwrap().sum_all().unwrap().backward().unwrap();
                        r.close(&format!("ce3.{tag} grad"), &x3.grad().unwrap(), &format!("ce3.{tag}.grad"));
                    }
                }
            }
        }
        let probs = r.get("cep.probs");
        for eps in [0.0, 0.2] {
            let tag = format!("cep.e{}", (eps * 10.0) as u32);
            let x = r.get("ce.logits").with_grad();
            let opts = CrossEntropyOptions { label_smoothing: eps, weight: Some(weight.clone()), ..Default::default() };
            let y = cross_entropy(&x, &Target::Probs(&probs), &opts).unwrap();
            r.close(&tag, &y, &tag);
            y.backward().unwrap();
            r.close(&format!("{tag} grad"), &x.grad().unwrap(), &format!("{tag}.grad"));
        }
    });
}
