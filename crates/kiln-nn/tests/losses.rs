//! Losses against formulas worked out independently here (on host f64 data), PyTorch's
//! reductions and options, gradient checks, and error cases.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{assert_close, data, gradcheck, leaf64};
use kiln_core::{DType, Device, Tensor};
use kiln_nn::loss::*;

fn cpu() -> Device {
    Device::cpu()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().expect("read back")
}

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &cpu()).unwrap()
}

fn ids(v: &[u32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()], &cpu()).unwrap()
}

/// log-softmax of one row.
fn log_softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    row.iter().map(|x| x - lse).collect()
}

fn opts(reduction: Reduction, ignore_index: Option<u32>, label_smoothing: f64) -> CrossEntropyOptions {
    CrossEntropyOptions { reduction, ignore_index, label_smoothing, ..Default::default() }
}

#[test]
fn cross_entropy_known_numbers() {
    // Uniform logits over 4 classes: ln 4 whatever the target.
    let z = Tensor::zeros(&[3, 4], &cpu()).unwrap();
    assert!((cross_entropy_loss(&z, &ids(&[0, 3, 2])).unwrap().item().unwrap() - 4f64.ln()).abs() < 1e-6);

    // logits [1, 2, 3], target 2: −log(e³/(e + e² + e³)) = log(1 + e⁻¹ + e⁻²) = 0.40760596.
    let l = t64(&[1.0, 2.0, 3.0], &[1, 3]);
    let v = cross_entropy_loss(&l, &ids(&[2])).unwrap().item().unwrap();
    assert!((v - 0.407_605_964_444_380_9).abs() < 1e-12, "{v}");

    // Label smoothing 0.1 on the same row: 0.9·0.40760596 + 0.1·mean(2.40760596, 1.40760596, 0.40760596)
    // = 0.9·0.40760596 + 0.1·1.40760596 = 0.50760596.
    let v = cross_entropy(&l, &Target::Indices(&ids(&[2])), &opts(Reduction::Mean, None, 0.1)).unwrap().item().unwrap();
    assert!((v - 0.507_605_964_444_380_9).abs() < 1e-12, "{v}");
}

#[test]
fn cross_entropy_ignore_index_and_smoothing_by_hand() {
    let rows = [
        [0.5, -1.0, 2.0, 0.0],
        [1.0, 1.0, -2.0, 3.0],
        [0.1, 0.2, 0.3, 0.4],
        [-1.0, 2.0, 0.5, 0.5],
        [2.0, 0.0, 0.0, -1.0],
    ];
    let target = [2u32, 7, 0, 7, 3]; // 7 is the ignored (and out-of-range) id
    let flat: Vec<f64> = rows.iter().flatten().cloned().collect();
    let logits = t64(&flat, &[5, 4]);
    for eps in [0.0, 0.2] {
        let per: Vec<f64> = rows
            .iter()
            .zip(target)
            .map(|(r, t)| {
                if t == 7 {
                    return 0.0;
                }
                let lp = log_softmax(r);
                (1.0 - eps) * -lp[t as usize] + eps * lp.iter().map(|v| -v).sum::<f64>() / 4.0
            })
            .collect();
        let ce = |red| cross_entropy(&logits, &Target::Indices(&ids(&target)), &opts(red, Some(7), eps)).unwrap();
        // Mean over the 3 targets that are not ignored.
        assert!((ce(Reduction::Mean).item().unwrap() - per.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        assert!((ce(Reduction::Sum).item().unwrap() - per.iter().sum::<f64>()).abs() < 1e-12);
        assert_close("ce none", &vals(&ce(Reduction::None)), &per, 1e-12);
    }
    // ignore_index inside the class range.
    let t2 = [2u32, 1, 1, 0, 3];
    let v = cross_entropy(&logits, &Target::Indices(&ids(&t2)), &opts(Reduction::Mean, Some(1), 0.0))
        .unwrap()
        .item()
        .unwrap();
    let want = [0usize, 3, 4].iter().map(|&i| -log_softmax(&rows[i])[t2[i] as usize]).sum::<f64>() / 3.0;
    assert!((v - want).abs() < 1e-12);
    // Every target ignored: 0/0, as PyTorch.
    let v = cross_entropy(&logits, &Target::Indices(&ids(&[7; 5])), &opts(Reduction::Mean, Some(7), 0.0))
        .unwrap()
        .item()
        .unwrap();
    assert!(v.is_nan());
    // i32 ids work too.
    let ti = Tensor::from_vec(vec![2i32, 1, 1, 0, 3], &[5], &cpu()).unwrap();
    assert!(
        (cross_entropy(&logits, &Target::Indices(&ti), &opts(Reduction::Mean, Some(1), 0.0)).unwrap().item().unwrap()
            - want)
            .abs()
            < 1e-12
    );
}

#[test]
fn cross_entropy_spatial_and_probability_targets() {
    let d = cpu();
    // [n, c, l] logits with [n, l] targets: each position is its own sample.
    let (n, c, l) = (2, 3, 4);
    let (x, xv) = data(1, &[n, c, l], DType::F64, &d);
    let tv: Vec<u32> = (0..n * l).map(|i| (i * 7 % c) as u32).collect();
    let t = Tensor::from_vec(tv.clone(), &[n, l], &d).unwrap();
    let mut per = Vec::new();
    for b in 0..n {
        for p in 0..l {
            let row: Vec<f64> = (0..c).map(|k| xv[(b * c + k) * l + p]).collect();
            per.push(-log_softmax(&row)[tv[b * l + p] as usize]);
        }
    }
    let none = cross_entropy(&x, &Target::Indices(&t), &opts(Reduction::None, None, 0.0)).unwrap();
    assert_eq!(none.shape(), &[n, l]);
    assert_close("ce spatial", &vals(&none), &per, 1e-12);
    let mean = cross_entropy(&x, &Target::Indices(&t), &CrossEntropyOptions::default()).unwrap().item().unwrap();
    assert!((mean - per.iter().sum::<f64>() / 8.0).abs() < 1e-12);

    // Unbatched [c] logits with a single id.
    let v =
        cross_entropy(&t64(&[1.0, 2.0, 3.0], &[3]), &Target::Indices(&ids(&[0])), &opts(Reduction::None, None, 0.0))
            .unwrap();
    assert_eq!(v.shape(), &[] as &[usize]);
    assert!((v.item().unwrap() - (0.407_605_964_444_380_9 + 2.0)).abs() < 1e-12);

    // Probability targets: −Σ y log p, smoothed y' = (1 − ε)y + ε/C, mean over samples.
    let (x, xv) = data(2, &[3, 4], DType::F64, &d);
    let (_, pv) = data(3, &[3, 4], DType::F64, &d);
    let probs: Vec<f64> = pv
        .chunks(4)
        .flat_map(|r| {
            let e: Vec<f64> = r.iter().map(|v| v.exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect();
    let p = t64(&probs, &[3, 4]);
    for eps in [0.0, 0.3] {
        let per: Vec<f64> = (0..3)
            .map(|i| {
                let lp = log_softmax(&xv[i * 4..i * 4 + 4]);
                (0..4).map(|k| -((1.0 - eps) * probs[i * 4 + k] + eps / 4.0) * lp[k]).sum()
            })
            .collect();
        let ce = |r| cross_entropy(&x, &Target::Probs(&p), &opts(r, None, eps)).unwrap();
        assert_close("ce probs none", &vals(&ce(Reduction::None)), &per, 1e-12);
        assert!((ce(Reduction::Mean).item().unwrap() - per.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        assert!((ce(Reduction::Sum).item().unwrap() - per.iter().sum::<f64>()).abs() < 1e-12);
    }
    // One-hot probabilities agree with class ids.
    let onehot = Tensor::one_hot(&ids(&[1, 3, 0]), 4).unwrap().to_dtype(DType::F64).unwrap();
    let a = cross_entropy(&x, &Target::Probs(&onehot), &opts(Reduction::Mean, None, 0.1)).unwrap().item().unwrap();
    let b = cross_entropy(&x, &Target::Indices(&ids(&[1, 3, 0])), &opts(Reduction::Mean, None, 0.1))
        .unwrap()
        .item()
        .unwrap();
    assert!((a - b).abs() < 1e-12);
}

#[test]
fn nll_loss_matches_cross_entropy_of_log_softmax() {
    let (x, xv) = data(4, &[4, 5], DType::F64, &cpu());
    let lp = x.log_softmax(-1).unwrap();
    let t = ids(&[4, 0, 2, 2]);
    let per: Vec<f64> = (0..4).map(|i| -log_softmax(&xv[i * 5..i * 5 + 5])[[4, 0, 2, 2][i]]).collect();
    assert_close("nll none", &vals(&nll_loss(&lp, &t, Reduction::None).unwrap()), &per, 1e-12);
    assert!(
        (nll_loss(&lp, &t, Reduction::Mean).unwrap().item().unwrap() - per.iter().sum::<f64>() / 4.0).abs() < 1e-12
    );
    assert!((nll_loss(&lp, &t, Reduction::Sum).unwrap().item().unwrap() - per.iter().sum::<f64>()).abs() < 1e-12);
}

#[test]
fn bce_with_logits_is_stable_and_exact() {
    let x = [-100.0, -3.0, -0.5, 0.0, 0.7, 4.0, 100.0];
    let y = [0.0, 1.0, 0.3, 1.0, 0.0, 1.0, 1.0];
    let per: Vec<f64> = x
        .iter()
        .zip(&y)
        .map(|(&x, &y)| {
            // −[y·log σ(x) + (1 − y)·log(1 − σ(x))] with log σ(x) = −log(1 + e^−x).
            let log_sig = |v: f64| if v >= 0.0 { -(-v).exp().ln_1p() } else { v - v.exp().ln_1p() };
            -(y * log_sig(x) + (1.0 - y) * log_sig(-x))
        })
        .collect();
    let (xt, yt) = (t64(&x, &[7]), t64(&y, &[7]));
    let got = vals(&binary_cross_entropy_with_logits(&xt, &yt, Reduction::None).unwrap());
    assert_close("bce", &got, &per, 1e-12);
    assert!(got.iter().all(|v| v.is_finite()));
    assert!(
        (binary_cross_entropy_with_logits(&xt, &yt, Reduction::Mean).unwrap().item().unwrap()
            - per.iter().sum::<f64>() / 7.0)
            .abs()
            < 1e-12
    );
    // f32 keeps relative precision for confident predictions.
    let x32 = Tensor::from_vec(vec![-10f32, 10.0], &[2], &cpu()).unwrap();
    let y32 = Tensor::from_vec(vec![0f32, 1.0], &[2], &cpu()).unwrap();
    let v = vals(&binary_cross_entropy_with_logits(&x32, &y32, Reduction::None).unwrap());
    let want = (-10f64).exp().ln_1p();
    assert!(v.iter().all(|v| ((v - want) / want).abs() < 1e-5), "{v:?}");
    // The gradient is σ(x) − y everywhere, including x = 0.
    let xl = t64(&x, &[7]).with_grad();
    binary_cross_entropy_with_logits(&xl, &yt, Reduction::Sum).unwrap().backward().unwrap();
    let want: Vec<f64> = x.iter().zip(&y).map(|(&x, &y)| 1.0 / (1.0 + (-x).exp()) - y).collect();
    assert_close("bce grad", &vals(&xl.grad().unwrap()), &want, 1e-12);
}

#[test]
fn regression_losses_by_formula() {
    let d = cpu();
    let (p, pv) = data(5, &[3, 4], DType::F64, &d);
    let (t, tv) = data(6, &[3, 4], DType::F64, &d);
    let (p, pv) = (p.mul_scalar(2.0).unwrap(), pv.iter().map(|v| v * 2.0).collect::<Vec<_>>());
    let diff: Vec<f64> = pv.iter().zip(&tv).map(|(a, b)| a - b).collect();
    type Loss = Box<dyn Fn(Reduction) -> kiln_core::Result<Tensor>>;
    let (p2, t2, p3, t3, p4, t4, p5, t5) =
        (p.clone(), t.clone(), p.clone(), t.clone(), p.clone(), t.clone(), p.clone(), t.clone());
    let (beta, delta) = (0.6, 0.8);
    assert!(diff.iter().any(|d| d.abs() < beta) && diff.iter().any(|d| d.abs() > delta), "data covers both branches");
    let cases: Vec<(&str, Loss, Vec<f64>)> = vec![
        ("mse", Box::new(move |r| mse_loss(&p2, &t2, r)), diff.iter().map(|d| d * d).collect()),
        ("l1", Box::new(move |r| l1_loss(&p3, &t3, r)), diff.iter().map(|d| d.abs()).collect()),
        (
            "smooth_l1",
            Box::new(move |r| smooth_l1_loss(&p4, &t4, beta, r)),
            diff.iter().map(|d| if d.abs() < beta { 0.5 * d * d / beta } else { d.abs() - 0.5 * beta }).collect(),
        ),
        (
            "huber",
            Box::new(move |r| huber_loss(&p5, &t5, delta, r)),
            diff.iter().map(|d| if d.abs() < delta { 0.5 * d * d } else { delta * (d.abs() - 0.5 * delta) }).collect(),
        ),
    ];
    for (name, f, per) in cases {
        assert_close(name, &vals(&f(Reduction::None).unwrap()), &per, 1e-12);
        assert!(
            (f(Reduction::Mean).unwrap().item().unwrap() - per.iter().sum::<f64>() / 12.0).abs() < 1e-12,
            "{name} mean"
        );
        assert!((f(Reduction::Sum).unwrap().item().unwrap() - per.iter().sum::<f64>()).abs() < 1e-12, "{name} sum");
        assert!(f(Reduction::BatchMean).is_err(), "{name}: batchmean is kl_div's");
    }
    // beta = 0 is L1.
    assert_close(
        "smooth_l1(β=0)",
        &vals(&smooth_l1_loss(&p, &t, 0.0, Reduction::None).unwrap()),
        &diff.iter().map(|d| d.abs()).collect::<Vec<_>>(),
        1e-12,
    );
    assert!(huber_loss(&p, &t, 0.0, Reduction::Mean).is_err());
    assert!(smooth_l1_loss(&p, &t, -1.0, Reduction::Mean).is_err());
}

#[test]
fn kl_div_by_formula() {
    // Rows of target probabilities, one with a zero entry (which contributes 0).
    let y: [f64; 6] = [0.2, 0.3, 0.5, 0.0, 0.6, 0.4];
    let q = [0.1, 0.6, 0.3, 0.25, 0.25, 0.5];
    let input: Vec<f64> = q.iter().map(|v: &f64| v.ln()).collect();
    let per: Vec<f64> = y.iter().zip(&input).map(|(&y, &x)| if y == 0.0 { 0.0 } else { y * (y.ln() - x) }).collect();
    let (x, t) = (t64(&input, &[2, 3]), t64(&y, &[2, 3]));
    assert_close("kl none", &vals(&kl_div(&x, &t, Reduction::None).unwrap()), &per, 1e-12);
    let sum: f64 = per.iter().sum();
    assert!((kl_div(&x, &t, Reduction::Sum).unwrap().item().unwrap() - sum).abs() < 1e-12);
    assert!((kl_div(&x, &t, Reduction::Mean).unwrap().item().unwrap() - sum / 6.0).abs() < 1e-12);
    assert!((kl_div(&x, &t, Reduction::BatchMean).unwrap().item().unwrap() - sum / 2.0).abs() < 1e-12);
}

#[test]
fn loss_gradients_match_central_differences() {
    let d = cpu();
    let x = leaf64(10, &[4, 3]);
    let t = ids(&[2, 0, 5, 1]);
    let f = || cross_entropy(&x, &Target::Indices(&t), &opts(Reduction::Mean, Some(5), 0.15));
    gradcheck("cross_entropy(ignore, smoothing)", &f, &[("logits".into(), x.clone())]);

    let xs = leaf64(11, &[2, 3, 2]);
    let ts = Tensor::from_vec(vec![1u32, 2, 0, 1], &[2, 2], &d).unwrap();
    let f = || cross_entropy(&xs, &Target::Indices(&ts), &CrossEntropyOptions::default());
    gradcheck("cross_entropy(spatial)", &f, &[("logits".into(), xs.clone())]);

    let probs = data(12, &[4, 3], DType::F64, &d).0.softmax(-1).unwrap();
    let f = || cross_entropy(&x, &Target::Probs(&probs), &opts(Reduction::Sum, None, 0.1));
    gradcheck("cross_entropy(probs)", &f, &[("logits".into(), x.clone())]);

    let lp = leaf64(13, &[4, 3]);
    let f = || nll_loss(&lp, &ids(&[0, 2, 1, 1]), Reduction::Mean);
    gradcheck("nll_loss", &f, &[("log_probs".into(), lp.clone())]);

    let (p, y) = (leaf64(14, &[3, 4]), leaf64(15, &[3, 4]));
    let yb = data(16, &[3, 4], DType::F64, &d).0.abs().unwrap();
    let f = || binary_cross_entropy_with_logits(&p.mul_scalar(3.0)?, &yb, Reduction::Mean);
    gradcheck("bce_with_logits", &f, &[("logits".into(), p.clone())]);
    let both = [("pred".to_string(), p.clone()), ("target".to_string(), y.clone())];
    gradcheck("mse", &|| mse_loss(&p, &y, Reduction::Mean), &both);
    gradcheck("l1", &|| l1_loss(&p, &y, Reduction::Sum), &both);
    gradcheck("smooth_l1", &|| smooth_l1_loss(&p, &y, 0.5, Reduction::Mean), &both);
    gradcheck("huber", &|| huber_loss(&p, &y, 0.5, Reduction::Mean), &both);

    let q = leaf64(17, &[2, 4]);
    let target = data(18, &[2, 4], DType::F64, &d).0.softmax(-1).unwrap();
    let f = || kl_div(&q.log_softmax(-1)?, &target, Reduction::BatchMean);
    gradcheck("kl_div", &f, &[("input".into(), q.clone())]);
}

#[test]
fn loss_errors_are_typed_not_panics() {
    let d = cpu();
    let x = Tensor::zeros(&[3, 4], &d).unwrap();
    let ce = |t: &Tensor, o: CrossEntropyOptions| cross_entropy(&x, &Target::Indices(t), &o);
    assert!(ce(&ids(&[0, 1]), CrossEntropyOptions::default()).is_err(), "batch size");
    assert!(ce(&ids(&[0, 1, 4]), CrossEntropyOptions::default()).is_err(), "class out of range");
    assert!(ce(&Tensor::zeros(&[3], &d).unwrap(), CrossEntropyOptions::default()).is_err(), "float ids");
    assert!(ce(&ids(&[0, 1, 2]), opts(Reduction::Mean, None, 1.5)).is_err(), "smoothing");
    assert!(ce(&ids(&[0, 1, 2]), opts(Reduction::BatchMean, None, 0.0)).is_err());
    let p = Tensor::zeros(&[3, 4], &d).unwrap();
    assert!(
        cross_entropy(&x, &Target::Probs(&p), &opts(Reduction::Mean, Some(0), 0.0)).is_err(),
        "ignore_index with probs"
    );
    assert!(
        cross_entropy(&x, &Target::Probs(&Tensor::zeros(&[3, 3], &d).unwrap()), &CrossEntropyOptions::default())
            .is_err()
    );
    assert!(cross_entropy_loss(&ids(&[1, 2]), &ids(&[0, 1])).is_err(), "integer logits");
    assert!(cross_entropy_loss(&Tensor::scalar(1.0, &d).unwrap(), &ids(&[0])).is_err());
    let y = Tensor::zeros(&[4, 3], &d).unwrap();
    assert!(mse_loss(&x, &y, Reduction::Mean).is_err());
    assert!(l1_loss(&x, &y, Reduction::Mean).is_err());
    assert!(binary_cross_entropy_with_logits(&x, &y, Reduction::Mean).is_err());
    assert!(kl_div(&x, &y, Reduction::Mean).is_err());
    assert!(mse_loss(&x, &x.to_dtype(DType::F64).unwrap(), Reduction::Mean).is_err(), "dtype mismatch");
}

#[test]
fn cross_entropy_on_gpu_matches_cpu() {
    let Some(g) = common::gpu() else { return };
    let (x, _) = data(20, &[5, 7], DType::F32, &cpu());
    let t = ids(&[6, 0, 3, 3, 1]);
    let o = opts(Reduction::Mean, Some(3), 0.1);
    let c = cross_entropy(&x, &Target::Indices(&t), &o).unwrap().item().unwrap();
    let gv = cross_entropy(&x.to(&g).unwrap(), &Target::Indices(&t.to(&g).unwrap()), &o).unwrap().item().unwrap();
    assert!((c - gv).abs() < 1e-5, "cpu {c} gpu {gv}");
    let y = data(21, &[5, 7], DType::F32, &cpu()).0;
    let c = binary_cross_entropy_with_logits(&x, &y, Reduction::Mean).unwrap().item().unwrap();
    let gv = binary_cross_entropy_with_logits(&x.to(&g).unwrap(), &y.to(&g).unwrap(), Reduction::Mean)
        .unwrap()
        .item()
        .unwrap();
    assert!((c - gv).abs() < 1e-5, "cpu {c} gpu {gv}");
}
