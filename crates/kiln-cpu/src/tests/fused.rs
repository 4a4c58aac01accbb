use half::f16;
use kiln_backend::{AdamParams, AttentionParams, BackendStorage, DType, Error, HostData};

use super::{Rng, assert_close, host, st};

/// Adam's update of one element, written out in f64 from the textbook formula.
fn adam_ref(x: f64, g: f64, m: f64, v: f64, p: &AdamParams) -> (f64, f64, f64) {
    let t = p.step as f64;
    let (mut x, mut g) = (x, g);
    if p.decoupled {
        x *= 1.0 - p.lr * p.weight_decay;
    } else {
        g += p.weight_decay * x;
    }
    let m = p.beta1 * m + (1.0 - p.beta1) * g;
    let v = p.beta2 * v + (1.0 - p.beta2) * g * g;
    let m_hat_rate = p.lr / (1.0 - p.beta1.powf(t));
    let denom = v.sqrt() / (1.0 - p.beta2.powf(t)).sqrt() + p.eps;
    (x - m_hat_rate * m / denom, m, v)
}

/// f32 computes in f32: each result within a few ulp of the f64 formula, measured against the
/// size of the terms it sums (a sum that cancels has an absolute, not a relative, error). f64
/// computes the formula itself, bit for bit.
#[test]
fn adam_step_updates_in_place_as_the_f64_formula() {
    let mut rng = Rng::new(23);
    let ulp = f64::from(f32::EPSILON);
    // 7 stays on one thread; 40 001 splits across threads; 1023 and 4097 are odd vector tails.
    for n in [1, 7, 1023, 4097, 40_001] {
        for (decoupled, weight_decay) in [(false, 0.0), (false, 0.1), (true, 0.01)] {
            let p = AdamParams { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, decoupled, step: 5 };
            let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
            let (x, g, m) = (f(rng.vec(n)), f(rng.vec(n)), f(rng.vec(n)));
            let v: Vec<f32> = rng.vec(n).into_iter().map(|x| (x * x) as f32).collect();
            let (mut ps, mut ms, mut vs) = (st(x.clone()), st(m.clone()), st(v.clone()));
            ps.adam_step(&st(g.clone()), &mut ms, &mut vs, &p).expect("adam");
            let (HostData::F32(px), HostData::F32(pm), HostData::F32(pv)) = (ps.as_host(), ms.as_host(), vs.as_host())
            else {
                panic!("adam changed the dtype")
            };
            let t = p.step as f64;
            for i in 0..n {
                let (xi, gi, mi, vi) = (f64::from(x[i]), f64::from(g[i]), f64::from(m[i]), f64::from(v[i]));
                let (wx, wm, wv) = adam_ref(xi, gi, mi, vi, &p);
                // The size of each sum's terms, from the gradient's (g + λx when coupled).
                let g_terms = if decoupled { gi.abs() } else { gi.abs() + weight_decay * xi.abs() };
                let m_terms = p.beta1 * mi.abs() + (1.0 - p.beta1) * g_terms;
                let v_terms = p.beta2 * vi + (1.0 - p.beta2) * g_terms * g_terms;
                let denom = wv.sqrt() / (1.0 - p.beta2.powf(t)).sqrt() + p.eps;
                let x_terms = xi.abs() + p.lr / (1.0 - p.beta1.powf(t)) * m_terms / denom;
                let what = format!("n {n}, decoupled {decoupled}, wd {weight_decay}, element {i}");
                assert!((f64::from(pm[i]) - wm).abs() <= 4.0 * ulp * m_terms, "exp_avg {} vs {wm}, {what}", pm[i]);
                assert!((f64::from(pv[i]) - wv).abs() <= 4.0 * ulp * v_terms, "exp_avg_sq {} vs {wv}, {what}", pv[i]);
                assert!((f64::from(px[i]) - wx).abs() <= 8.0 * ulp * x_terms, "param {} vs {wx}, {what}", px[i]);
            }
            // f64 runs the formula itself.
            let w = |v: &[f32]| v.iter().map(|&e| f64::from(e)).collect::<Vec<f64>>();
            let (mut ps, mut ms, mut vs) = (st(w(&x)), st(w(&m)), st(w(&v)));
            ps.adam_step(&st(w(&g)), &mut ms, &mut vs, &p).expect("adam f64");
            let want: Vec<(f64, f64, f64)> =
                (0..n).map(|i| adam_ref(x[i] as f64, g[i] as f64, m[i] as f64, v[i] as f64, &p)).collect();
            let col = |k: usize| HostData::F64(want.iter().map(|w| [w.0, w.1, w.2][k]).collect());
            assert_eq!(ps.as_host(), &col(0), "f64 param, n {n}, decoupled {decoupled}");
            assert_eq!(ms.as_host(), &col(1), "f64 exp_avg, n {n}");
            assert_eq!(vs.as_host(), &col(2), "f64 exp_avg_sq, n {n}");
        }
    }
}

#[test]
fn adam_step_in_f16_rounds_from_f64() {
    let p = AdamParams { lr: 1e-2, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0, decoupled: false, step: 1 };
    let h = |v: &[f64]| v.iter().map(|&x| f16::from_f64(x)).collect::<Vec<f16>>();
    let (x, g) = ([0.5, -1.25, 2.0], [0.1, -0.3, 0.0]);
    let (mut ps, mut ms, mut vs) = (st(h(&x)), st(h(&[0.0; 3])), st(h(&[0.0; 3])));
    let gs = h(&g);
    ps.adam_step(&st(gs.clone()), &mut ms, &mut vs, &p).expect("adam");
    let want: Vec<(f64, f64, f64)> = (0..3).map(|i| adam_ref(x[i], gs[i].to_f64(), 0.0, 0.0, &p)).collect();
    assert_eq!(ps.as_host(), &HostData::F16(want.iter().map(|w| f16::from_f64(w.0)).collect()));
    assert_eq!(ms.as_host(), &HostData::F16(want.iter().map(|w| f16::from_f64(w.1)).collect()));
}

#[test]
fn adam_step_refuses_mismatched_buffers() {
    let p = AdamParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false, step: 1 };
    let mut ps = st(vec![1.0f32; 4]);
    let (mut m, mut v) = (st(vec![0.0f32; 4]), st(vec![0.0f32; 4]));
    let err = ps.adam_step(&st(vec![0.0f64; 4]), &mut m, &mut v, &p).expect_err("f64 gradient");
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err:?}");
    let err = ps.adam_step(&st(vec![0.0f32; 3]), &mut m, &mut v, &p).expect_err("short gradient");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_eq!(ps.as_host(), &HostData::F32(vec![1.0; 4]), "a refused step changes nothing");
    let mut ints = st(vec![1i32; 4]);
    assert!(matches!(ints.adam_step(&st(vec![0i32; 4]), &mut m, &mut v, &p), Err(Error::UnsupportedDType { .. })));
}

/// Attention of one head written out from the definition in f64: S = scale·QKᵀ with hidden
/// scores dropped, P = softmax(S) per row, O = PV; backward dV = PᵀdO, dP = dO·Vᵀ,
/// dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = scale·dS·K, dK = scale·dSᵀ·Q.
#[allow(clippy::type_complexity)]
fn attention_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dout: &[f64],
    (ql, kl, d): (usize, usize, usize),
    visible: impl Fn(usize, usize) -> bool,
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut p = vec![0.0; ql * kl];
    for i in 0..ql {
        let s: Vec<Option<f64>> = (0..kl)
            .map(|j| visible(i, j).then(|| scale * (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum::<f64>()))
            .collect();
        let m = s.iter().flatten().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().flatten().map(|x| (x - m).exp()).sum();
        for j in 0..kl {
            p[i * kl + j] = s[j].map_or(0.0, |x| (x - m).exp() / z);
        }
    }
    let (mut o, mut dq, mut dk, mut dv) = (vec![0.0; ql * d], vec![0.0; ql * d], vec![0.0; kl * d], vec![0.0; kl * d]);
    for i in 0..ql {
        let dp: Vec<f64> = (0..kl).map(|j| (0..d).map(|c| dout[i * d + c] * v[j * d + c]).sum()).collect();
        let row: f64 = (0..kl).map(|j| dp[j] * p[i * kl + j]).sum();
        for j in 0..kl {
            let (pij, ds) = (p[i * kl + j], p[i * kl + j] * (dp[j] - row));
            for c in 0..d {
                o[i * d + c] += pij * v[j * d + c];
                dv[j * d + c] += pij * dout[i * d + c];
                dq[i * d + c] += scale * ds * k[j * d + c];
                dk[j * d + c] += scale * ds * q[i * d + c];
            }
        }
    }
    (o, dq, dk, dv)
}

#[test]
fn attention_matches_the_definition_and_does_not_depend_on_the_thread_count() {
    // f64 computes in f64; f32 in f32, within f32 rounding of the definition (evaluated in f64
    // on the same f32-rounded inputs).
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
        attention_in(dtype, tol);
    }
}

fn attention_in(dtype: DType, tol: f64) {
    let mut rng = Rng::new(31);
    let round =
        |v: Vec<f64>| if dtype == DType::F32 { v.into_iter().map(|x| f64::from(x as f32)).collect() } else { v };
    let st = |v: Vec<f64>| st(HostData::from_f64(&v, dtype));
    // Enough work to split the heads across threads; a key mask over batch 1's last 5 keys;
    // head_dim 13 leaves a tail after the dot product's lanes of four. Lengths past the query
    // block (128 rows) run several blocks; the causal ones see fewer keys per block, with more
    // queries than keys and fewer.
    for (causal, ql, kl) in
        [(true, 37, 37), (false, 29, 41), (true, 300, 300), (true, 150, 200), (true, 200, 140), (false, 130, 131)]
    {
        let (batch, heads, d) = (2, 3, 13);
        let bh = batch * heads;
        let (q, k, v, dout) = (
            round(rng.vec(bh * ql * d)),
            round(rng.vec(bh * kl * d)),
            round(rng.vec(bh * kl * d)),
            round(rng.vec(bh * ql * d)),
        );
        let mask: Vec<f64> = (0..batch * kl).map(|i| f64::from(i / kl == 1 && i % kl >= kl - 5)).collect();
        let p = AttentionParams::new(batch, heads, ql, kl, d, causal, 0.3);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                let (qs, ks, vs, ms) = (st(q.clone()), st(k.clone()), st(v.clone()), st(mask.clone()));
                let (o, lse) = qs.attention_forward(&ks, &vs, Some(&ms), None, &p).expect("forward");
                let (dq, dk, dv) = qs
                    .attention_backward(&ks, &vs, Some(&ms), None, &o, &lse, &st(dout.clone()), &p)
                    .expect("backward");
                [host(&o), host(&dq), host(&dk), host(&dv)]
            })
        };
        let one = run(1);
        assert_eq!(run(3), one, "{dtype} causal {causal}: 3 threads differ from 1");
        assert_eq!(one[0].dtype(), dtype);
        for h in 0..bh {
            let (qo, ko) = (h * ql * d, h * kl * d);
            let visible = |i: usize, j: usize| !(causal && j > i) && mask[(h / heads) * kl + j] == 0.0;
            let want = attention_ref(
                &q[qo..qo + ql * d],
                &k[ko..ko + kl * d],
                &v[ko..ko + kl * d],
                &dout[qo..qo + ql * d],
                (ql, kl, d),
                visible,
                0.3,
            );
            let got = |i: usize, off: usize, len: usize| one[i].to_f64_vec()[off..off + len].to_vec();
            assert_close(&got(0, qo, ql * d), &want.0, tol);
            assert_close(&got(1, qo, ql * d), &want.1, tol);
            assert_close(&got(2, ko, kl * d), &want.2, tol);
            assert_close(&got(3, ko, kl * d), &want.3, tol);
        }
    }
}

#[test]
fn norms_match_the_definition_and_do_not_depend_on_the_thread_count() {
    // f64 computes in f64; f32 in f32, within f32 rounding of the definition (evaluated in f64
    // on the same f32-rounded inputs).
    for (dtype, tol, sum_tol) in [(DType::F64, 1e-12, 1e-10), (DType::F32, 4e-6, 2e-5)] {
        norms_in(dtype, tol, sum_tol);
    }
}

fn norms_in(dtype: DType, tol: f64, sum_tol: f64) {
    use kiln_backend::NormParams;
    let mut rng = Rng::new(37);
    let round =
        |v: Vec<f64>| if dtype == DType::F32 { v.into_iter().map(|x| f64::from(x as f32)).collect() } else { v };
    let st = |v: Vec<f64>| st(HostData::from_f64(&v, dtype));
    // 131 rows of 257: above the size where rows split across threads; 3 rows of 5 stay on one.
    for (rows, n) in [(3, 5), (131, 257)] {
        for rms in [false, true] {
            let p = NormParams { rows, n, eps: 1e-5, rms };
            let (x, dy, w, b) =
                (round(rng.vec(rows * n)), round(rng.vec(rows * n)), round(rng.vec(n)), round(rng.vec(n)));
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
                pool.install(|| {
                    let (xs, ws, bs) = (st(x.clone()), st(w.clone()), st(b.clone()));
                    let (y, stats) = xs.norm_forward(Some(&ws), Some(&bs), &p).expect("forward");
                    let (dx, dw, db) = xs.norm_backward(&st(dy.clone()), &stats, Some(&ws), &p).expect("backward");
                    [host(&y), host(&stats), host(&dx), host(&dw), host(&db)]
                })
            };
            let one = run(1);
            assert_eq!(run(3), one, "{dtype} {rows}x{n} rms {rms}: 3 threads differ from 1");
            assert_eq!((one[0].dtype(), one[1].dtype()), (dtype, DType::F64));
            // The textbook form: x̂ = (x − μ)/σ, y = x̂·w + b; with g = dy·w,
            // dx = (n·g − Σg − x̂·Σ(g·x̂)) / (n·σ), dw = Σ_rows dy·x̂, db = Σ_rows dy.
            let (mut y, mut dx, mut dw, mut db) = (vec![], vec![], vec![0.0; n], vec![0.0; n]);
            for r in 0..rows {
                let row = &x[r * n..][..n];
                let mu = if rms { 0.0 } else { row.iter().sum::<f64>() / n as f64 };
                let sigma = (row.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / n as f64 + 1e-5).sqrt();
                let xh: Vec<f64> = row.iter().map(|v| (v - mu) / sigma).collect();
                let g: Vec<f64> = (0..n).map(|j| dy[r * n + j] * w[j]).collect();
                let sum_g = if rms { 0.0 } else { g.iter().sum::<f64>() };
                let sum_gx: f64 = g.iter().zip(&xh).map(|(a, b)| a * b).sum();
                for j in 0..n {
                    y.push(xh[j] * w[j] + b[j]);
                    dx.push((n as f64 * g[j] - sum_g - xh[j] * sum_gx) / (n as f64 * sigma));
                    dw[j] += dy[r * n + j] * xh[j];
                    db[j] += dy[r * n + j];
                }
            }
            assert_close(&one[0].to_f64_vec(), &y, tol);
            assert_close(&one[2].to_f64_vec(), &dx, tol);
            assert_close(&one[3].to_f64_vec(), &dw, sum_tol);
            assert_close(&one[4].to_f64_vec(), &db, sum_tol);
        }
    }
}
