//! Every layer's forward against a hand computation on small inputs, a gradient check of its
//! parameters and input (f64, CPU), and small end-to-end training runs.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{assert_close, check_module, data, f64_params, gpu, leaf64, seeded, sgd_step};
use kiln_core::{DType, Device, Tensor};
use kiln_nn::loss::{Reduction, binary_cross_entropy_with_logits, cross_entropy_loss};
use kiln_nn::*;

fn cpu() -> Device {
    Device::cpu()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().expect("read back")
}

/// `y[r][o] = Σ_k x[r][k]·w[o][k] + b[o]` for `rows` rows.
fn host_linear(x: &[f64], rows: usize, w: &[f64], b: Option<&[f64]>, inp: usize, out: usize) -> Vec<f64> {
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut s = b.map_or(0.0, |b| b[o]);
            for k in 0..inp {
                s += x[r * inp + k] * w[o * inp + k];
            }
            y[r * out + o] = s;
        }
    }
    y
}

// ---------------------------------------------------------------- init

#[test]
fn init_formulas_and_reproducibility() {
    let _g = seeded(1);
    let d = cpu();
    let w = init::kaiming_uniform(&[64, 25], 25, 5f64.sqrt(), &d).unwrap();
    assert!(w.requires_grad());
    let v = vals(&w);
    assert!(v.iter().all(|x| x.abs() <= 0.2 + 1e-7), "kaiming(a=√5) bound is 1/√fan_in");
    assert!(v.iter().cloned().fold(0.0, f64::max) > 0.18, "draws fill the range");

    // kaiming_uniform(a = 0): bound √(6/fan_in); xavier_uniform: gain·√(6/(in+out)).
    let b = (6.0f64 / 10.0).sqrt();
    assert!(vals(&init::kaiming_uniform(&[1000], 10, 0.0, &d).unwrap()).iter().all(|x| x.abs() <= b + 1e-6));
    let b = 2.0 * (6.0f64 / 30.0).sqrt();
    let x = vals(&init::xavier_uniform(&[2000], 10, 20, 2.0, &d).unwrap());
    assert!(x.iter().all(|v| v.abs() <= b + 1e-6) && x.iter().any(|v| v.abs() > 0.95 * b));

    // Normal initialisers: sample std within a few percent of the formula.
    let std = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt()
    };
    let kn = vals(&init::kaiming_normal(&[20000], 50, 0.0, &d).unwrap());
    assert!((std(&kn) - (2.0f64 / 50.0).sqrt()).abs() < 0.01);
    let xn = vals(&init::xavier_normal(&[20000], 30, 70, 1.0, &d).unwrap());
    assert!((std(&xn) - (2.0f64 / 100.0).sqrt()).abs() < 0.005);
    let nm = vals(&init::normal(&[20000], 3.0, 0.5, &d).unwrap());
    assert!((nm.iter().sum::<f64>() / 20000.0 - 3.0).abs() < 0.02 && (std(&nm) - 0.5).abs() < 0.02);
    let u = vals(&init::uniform(&[1000], 2.0, 3.0, &d).unwrap());
    assert!(u.iter().all(|v| (2.0..3.0).contains(v)));
    assert_eq!(vals(&init::zeros(&[3], &d).unwrap()), vec![0.0; 3]);
    assert_eq!(vals(&init::ones(&[3], &d).unwrap()), vec![1.0; 3]);
    assert!(init::ones(&[3], &d).unwrap().requires_grad());
    assert!(init::kaiming_uniform(&[3], 0, 0.0, &d).is_err());
    assert!(init::normal(&[3], 0.0, -1.0, &d).is_err());

    // manual_seed makes a model's initial weights reproducible.
    kiln_core::manual_seed(42);
    let a = vals(&Linear::new(5, 4, true, &d).unwrap().weight);
    kiln_core::manual_seed(42);
    let b = vals(&Linear::new(5, 4, true, &d).unwrap().weight);
    assert_eq!(a, b);

    // The default dtype is per thread and restored.
    let l = f64_params(|| Linear::new(2, 2, true, &d));
    assert_eq!(l.weight.dtype(), DType::F64);
    assert_eq!(Linear::new(2, 2, true, &d).unwrap().weight.dtype(), DType::F32);
    assert!(init::set_default_dtype(DType::I32).is_err());
}

// ---------------------------------------------------------------- linear

#[test]
fn linear_forward_init_and_grad() {
    let _g = seeded(2);
    let d = cpu();
    let l = Linear::new(9, 4, true, &d).unwrap();
    assert_eq!(l.weight.shape(), &[4, 9]);
    assert!(vals(l.bias.as_ref().unwrap()).iter().all(|b| b.abs() <= 1.0 / 3.0));
    let names: Vec<_> = l.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight", "bias"]);
    assert_eq!(Linear::new(9, 4, false, &d).unwrap().named_parameters().len(), 1);

    let l = f64_params(|| Linear::new(3, 2, true, &d));
    let (x, xv) = data(1, &[2, 4, 3], DType::F64, &d);
    let y = l.forward(&x).unwrap();
    assert_eq!(y.shape(), &[2, 4, 2]);
    let want = host_linear(&xv, 8, &vals(&l.weight), Some(&vals(l.bias.as_ref().unwrap())), 3, 2);
    assert_close("linear", &vals(&y), &want, 1e-12);
    assert!(l.forward(&Tensor::zeros(&[2, 4], &d).unwrap().to_dtype(DType::F64).unwrap()).is_err());

    check_module("Linear", &l, &leaf64(2, &[2, 3, 3]));
    let nb = f64_params(|| Linear::new(3, 2, false, &d));
    check_module("Linear(no bias)", &nb, &leaf64(3, &[4, 3]));
}

// ---------------------------------------------------------------- convolutions

#[allow(clippy::too_many_arguments)]
fn host_conv2d(
    x: &[f64],
    [n, c, h, w]: [usize; 4],
    wt: &[f64],
    [o, cg, kh, kw]: [usize; 4],
    bias: Option<&[f64]>,
    opts: Conv2dOptions,
) -> (Vec<f64>, usize, usize) {
    let ((sh, sw), (ph, pw), (dh, dw)) = (opts.stride, opts.padding, opts.dilation);
    let oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    let ow = (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
    let opg = o / opts.groups;
    let mut out = vec![0.0; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let g = oc / opg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map_or(0.0, |b| b[oc]);
                    for ic in 0..cg {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let iy = (oy * sh + ki * dh) as isize - ph as isize;
                                let ix = (ox * sw + kj * dw) as isize - pw as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xc = g * cg + ic;
                                s += x[((b * c + xc) * h + iy as usize) * w + ix as usize]
                                    * wt[((oc * cg + ic) * kh + ki) * kw + kj];
                            }
                        }
                    }
                    out[((b * o + oc) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    (out, oh, ow)
}

#[test]
fn conv2d_forward_and_grad() {
    let _g = seeded(3);
    let d = cpu();
    let cases = [
        Conv2dOptions { stride: (2, 1), padding: (1, 2), dilation: (1, 1), groups: 2 },
        Conv2dOptions { stride: (1, 1), padding: (0, 1), dilation: (2, 1), groups: 1 },
    ];
    for (i, opts) in cases.into_iter().enumerate() {
        let conv = f64_params(|| Conv2d::new(4, 6, (3, 2), opts, true, &d));
        let cg = 4 / opts.groups;
        assert_eq!(conv.weight.shape(), &[6, cg, 3, 2]);
        let (x, xv) = data(10 + i as u64, &[2, 4, 7, 5], DType::F64, &d);
        let y = conv.forward(&x).unwrap();
        let (want, oh, ow) = host_conv2d(
            &xv,
            [2, 4, 7, 5],
            &vals(&conv.weight),
            [6, cg, 3, 2],
            Some(&vals(conv.bias.as_ref().unwrap())),
            opts,
        );
        assert_eq!(y.shape(), &[2, 6, oh, ow]);
        assert_close("conv2d", &vals(&y), &want, 1e-12);
        check_module("Conv2d", &conv, &leaf64(20 + i as u64, &[1, 4, 5, 4]));
    }
    // PyTorch init: U(±1/√(in/groups·kh·kw)).
    let conv = Conv2d::new(4, 8, (3, 3), Conv2dOptions { groups: 2, ..Default::default() }, true, &d).unwrap();
    let bound = 1.0 / 18f64.sqrt();
    assert!(vals(&conv.weight).iter().chain(vals(conv.bias.as_ref().unwrap()).iter()).all(|v| v.abs() <= bound + 1e-7));
    assert!(Conv2d::new(3, 4, (3, 3), Conv2dOptions { groups: 2, ..Default::default() }, true, &d).is_err());
    assert!(conv.forward(&Tensor::zeros(&[1, 3, 5, 5], &d).unwrap()).is_err());
}

#[test]
fn conv1d_forward_and_grad() {
    let _g = seeded(4);
    let d = cpu();
    let conv = f64_params(|| Conv1d::new(4, 2, 3, 2, 1, 2, 2, true, &d));
    assert_eq!(conv.weight.shape(), &[2, 2, 3]);
    let (x, xv) = data(30, &[2, 4, 9], DType::F64, &d);
    let y = conv.forward(&x).unwrap();
    // A 1-D conv is a 2-D conv over a height-1 image.
    let opts = Conv2dOptions { stride: (1, 2), padding: (0, 1), dilation: (1, 2), groups: 2 };
    let (want, _, ow) = host_conv2d(
        &xv,
        [2, 4, 1, 9],
        &vals(&conv.weight),
        [2, 2, 1, 3],
        Some(&vals(conv.bias.as_ref().unwrap())),
        opts,
    );
    assert_eq!(y.shape(), &[2, 2, ow]);
    assert_close("conv1d", &vals(&y), &want, 1e-12);
    check_module("Conv1d", &conv, &leaf64(31, &[1, 4, 7]));
}

#[test]
fn conv_transpose2d_forward_and_grad() {
    let _g = seeded(5);
    let d = cpu();
    let conv = f64_params(|| ConvTranspose2d::new(3, 2, (3, 2), (2, 3), (1, 0), (1, 2), true, &d));
    assert_eq!(conv.weight.shape(), &[3, 2, 3, 2]);
    let (n, cin, cout, h, w, kh, kw) = (2, 3, 2, 4, 3, 3, 2);
    let (s, p, op) = ((2, 3), (1, 0), (1, 2));
    let (x, xv) = data(40, &[n, cin, h, w], DType::F64, &d);
    let y = conv.forward(&x).unwrap();
    let oh = (h - 1) * s.0 + kh + op.0 - 2 * p.0;
    let ow = (w - 1) * s.1 + kw + op.1 - 2 * p.1;
    assert_eq!(y.shape(), &[n, cout, oh, ow]);
    // Each input pixel scatters weight·x into the output window it maps to.
    let (wt, b) = (vals(&conv.weight), vals(conv.bias.as_ref().unwrap()));
    let mut want = vec![0.0; n * cout * oh * ow];
    for bi in 0..n {
        for co in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    want[((bi * cout + co) * oh + oy) * ow + ox] = b[co];
                }
            }
        }
        for ci in 0..cin {
            for i in 0..h {
                for j in 0..w {
                    for co in 0..cout {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let oy = (i * s.0 + ki) as isize - p.0 as isize;
                                let ox = (j * s.1 + kj) as isize - p.1 as isize;
                                if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                    continue;
                                }
                                want[((bi * cout + co) * oh + oy as usize) * ow + ox as usize] +=
                                    xv[((bi * cin + ci) * h + i) * w + j] * wt[((ci * cout + co) * kh + ki) * kw + kj];
                            }
                        }
                    }
                }
            }
        }
    }
    assert_close("conv_transpose2d", &vals(&y), &want, 1e-12);
    check_module("ConvTranspose2d", &conv, &leaf64(41, &[1, 3, 3, 2]));
    let plain = f64_params(|| ConvTranspose2d::new(2, 3, (2, 2), (2, 2), (0, 0), (0, 0), false, &d));
    assert_eq!(plain.forward(&data(42, &[1, 2, 3, 3], DType::F64, &d).0).unwrap().shape(), &[1, 3, 6, 6]);
    check_module("ConvTranspose2d(no bias)", &plain, &leaf64(43, &[2, 2, 2, 3]));
    assert!(ConvTranspose2d::new(2, 3, (2, 2), (2, 2), (0, 0), (2, 0), false, &d).is_err());
    // Groups and dilation: weight [in, out/groups, kh, kw], PyTorch's fan-in bound.
    let o = ConvTranspose2dOptions { groups: 2, dilation: (2, 1), stride: (1, 2), ..Default::default() };
    let grouped = f64_params(|| ConvTranspose2d::with_options(4, 6, (2, 3), o, true, &d));
    assert_eq!(grouped.weight.shape(), &[4, 3, 2, 3]);
    let bound = 1.0 / (3.0f64 * 6.0).sqrt();
    assert!(vals(&grouped.weight).iter().all(|v| v.abs() <= bound), "U(±1/√fan_in) with fan_in = out/groups·kh·kw");
    check_module("ConvTranspose2d(groups, dilation)", &grouped, &leaf64(44, &[1, 4, 2, 3]));
    assert!(ConvTranspose2d::with_options(3, 6, (2, 2), o, true, &d).is_err(), "in_ch not a multiple of groups");
    let t1 = f64_params(|| {
        ConvTranspose1d::new(
            2,
            4,
            3,
            ConvTranspose1dOptions { stride: 2, output_padding: 1, ..Default::default() },
            true,
            &d,
        )
    });
    assert_eq!(t1.forward(&data(45, &[1, 2, 5], DType::F64, &d).0).unwrap().shape(), &[1, 4, 12]);
    check_module("ConvTranspose1d", &t1, &leaf64(46, &[2, 2, 3]));
}

#[test]
fn prelu_learns_its_slopes() {
    let d = cpu();
    let m = f64_params(|| PRelu::new(3, 0.25, &d));
    assert_eq!(m.named_parameters()[0].0, "weight");
    assert_eq!(vals(&m.weight), vec![0.25; 3]);
    check_module("PRelu", &m, &leaf64(47, &[2, 3, 4]));
    let shared = f64_params(|| PRelu::new(1, 0.1, &d));
    check_module("PRelu(1)", &shared, &leaf64(48, &[2, 3]));
    assert!(PRelu::new(0, 0.25, &d).is_err());
}

// ---------------------------------------------------------------- pooling

#[test]
fn pooling_forward_and_grad() {
    let d = cpu();
    let (n, c, h, w) = (2, 3, 6, 5);
    let (x, xv) = data(50, &[n, c, h, w], DType::F64, &d);
    let at = |b: usize, ch: usize, y: isize, xx: isize| -> Option<f64> {
        (y >= 0 && xx >= 0 && y < h as isize && xx < w as isize)
            .then(|| xv[((b * c + ch) * h + y as usize) * w + xx as usize])
    };
    let (k, s, p) = ((3, 2), (2, 1), (1, 1));
    let oh = (h + 2 * p.0 - k.0) / s.0 + 1;
    let ow = (w + 2 * p.1 - k.1) / s.1 + 1;
    let (mut mx, mut av) = (Vec::new(), Vec::new());
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut m, mut sum) = (f64::NEG_INFINITY, 0.0);
                    for i in 0..k.0 {
                        for j in 0..k.1 {
                            if let Some(v) = at(
                                b,
                                ch,
                                (oy * s.0 + i) as isize - p.0 as isize,
                                (ox * s.1 + j) as isize - p.1 as isize,
                            ) {
                                m = m.max(v);
                                sum += v;
                            }
                        }
                    }
                    mx.push(m);
                    av.push(sum / (k.0 * k.1) as f64);
                }
            }
        }
    }
    let maxp = MaxPool2d::new(k, s, p);
    let y = maxp.forward(&x).unwrap();
    assert_eq!(y.shape(), &[n, c, oh, ow]);
    assert_close("max_pool2d", &vals(&y), &mx, 1e-12);
    let avgp = AvgPool2d::new(k, s, p);
    assert_close("avg_pool2d", &vals(&avgp.forward(&x).unwrap()), &av, 1e-12);

    // Adaptive: window i spans ⌊i·in/out⌋ .. ⌈(i+1)·in/out⌉.
    let (aoh, aow) = (4, 3);
    let adp = AdaptiveAvgPool2d::new((aoh, aow));
    let mut want = Vec::new();
    for b in 0..n {
        for ch in 0..c {
            for i in 0..aoh {
                for j in 0..aow {
                    let (y0, y1) = (i * h / aoh, ((i + 1) * h).div_ceil(aoh));
                    let (x0, x1) = (j * w / aow, ((j + 1) * w).div_ceil(aow));
                    let mut sum = 0.0;
                    for yy in y0..y1 {
                        for xx in x0..x1 {
                            sum += at(b, ch, yy as isize, xx as isize).unwrap();
                        }
                    }
                    want.push(sum / ((y1 - y0) * (x1 - x0)) as f64);
                }
            }
        }
    }
    let ya = adp.forward(&x).unwrap();
    assert_eq!(ya.shape(), &[n, c, aoh, aow]);
    assert_close("adaptive_avg_pool2d", &vals(&ya), &want, 1e-12);

    for (name, m) in [("MaxPool2d", &maxp as &dyn Module), ("AvgPool2d", &avgp), ("AdaptiveAvgPool2d", &adp)] {
        check_module(name, m, &leaf64(51, &[1, 2, 6, 5]));
        assert!(m.named_parameters().is_empty());
    }
    assert!(MaxPool2d::new((0, 2), (1, 1), (0, 0)).forward(&x).is_err());
    assert!(MaxPool2d::new((2, 2), (2, 2), (0, 0)).forward(&Tensor::zeros(&[3, 4], &d).unwrap()).is_err());
}

#[test]
fn flatten_keeps_the_batch_dim() {
    let d = cpu();
    let (x, xv) = data(52, &[2, 3, 2, 2], DType::F64, &d);
    let y = Flatten::new().forward(&x).unwrap();
    assert_eq!(y.shape(), &[2, 12]);
    assert_eq!(vals(&y), xv);
    assert!(Flatten::new().forward(&Tensor::zeros(&[3], &d).unwrap()).is_err());
    check_module("Flatten", &Flatten, &leaf64(53, &[2, 2, 3]));
}

// ---------------------------------------------------------------- normalisation

/// Per-channel (dim 1) mean and biased variance of `[n, c, rest]` data, and the count.
fn channel_stats(x: &[f64], n: usize, c: usize, rest: usize) -> (Vec<f64>, Vec<f64>, usize) {
    let cnt = n * rest;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let items: Vec<f64> =
            (0..n).flat_map(|b| (0..rest).map(move |r| (b, r))).map(|(b, r)| x[(b * c + ch) * rest + r]).collect();
        mean[ch] = items.iter().sum::<f64>() / cnt as f64;
        var[ch] = items.iter().map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / cnt as f64;
    }
    (mean, var, cnt)
}

fn set(t: &Tensor, v: &[f64]) {
    t.set_data(&Tensor::from_vec(v.to_vec(), t.shape(), t.device()).unwrap()).unwrap();
}

#[test]
fn batch_norm_train_eval_running_stats_and_grad() {
    let d = cpu();
    for (dims, twod) in [(vec![4usize, 3], false), (vec![3, 3, 4], false), (vec![2, 3, 2, 3], true)] {
        let c = 3;
        let bn: Box<dyn Module> = if twod {
            Box::new(f64_params(|| BatchNorm2d::new(c, &d)))
        } else {
            Box::new(f64_params(|| BatchNorm1d::new(c, &d)))
        };
        let names: Vec<_> = bn.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight", "bias"]);
        let bufs = bn.named_buffers();
        assert_eq!(bufs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["running_mean", "running_var"]);
        let params = bn.named_parameters();
        let (w, b) = ([0.5, -1.0, 2.0], [0.1, 0.2, -0.3]);
        set(&params[0].1, &w);
        set(&params[1].1, &b);

        let (n, rest) = (dims[0], dims[2..].iter().product::<usize>());
        let (x, xv) = data(60, &dims, DType::F64, &d);
        let y = vals(&bn.forward(&x).unwrap());
        let (mean, var, cnt) = channel_stats(&xv, n, c, rest);
        let mut want = vec![0.0; xv.len()];
        for (i, v) in xv.iter().enumerate() {
            let ch = (i / rest) % c;
            want[i] = (v - mean[ch]) / (var[ch] + 1e-5).sqrt() * w[ch] + b[ch];
        }
        assert_close("batchnorm train", &y, &want, 1e-10);
        // One step: running = 0.9·running + 0.1·batch, with the unbiased variance.
        let rm: Vec<f64> = mean.iter().map(|m| 0.1 * m).collect();
        let rv: Vec<f64> = var.iter().map(|v| 0.9 + 0.1 * v * cnt as f64 / (cnt as f64 - 1.0)).collect();
        assert_close("running_mean", &vals(&bufs[0].1), &rm, 1e-12);
        assert_close("running_var", &vals(&bufs[1].1), &rv, 1e-12);
        assert!(!bufs[0].1.requires_grad());

        bn.eval();
        let y = vals(&bn.forward(&x).unwrap());
        let want: Vec<f64> = xv
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let ch = (i / rest) % c;
                (v - rm[ch]) / (rv[ch] + 1e-5).sqrt() * w[ch] + b[ch]
            })
            .collect();
        assert_close("batchnorm eval", &y, &want, 1e-10);
        assert_close("eval leaves running stats", &vals(&bufs[0].1), &rm, 1e-12);
        check_module("BatchNorm(eval)", bn.as_ref(), &leaf64(61, &dims));
        bn.train();
        check_module("BatchNorm(train)", bn.as_ref(), &leaf64(62, &dims));
    }
    let bn = BatchNorm1d::new(3, &d).unwrap();
    assert!(bn.forward(&Tensor::zeros(&[1, 3], &d).unwrap()).is_err(), "one value per channel");
    assert!(bn.forward(&Tensor::zeros(&[4, 2], &d).unwrap()).is_err());
    assert!(BatchNorm2d::new(3, &d).unwrap().forward(&Tensor::zeros(&[4, 3], &d).unwrap()).is_err());
}

#[test]
fn layer_rms_and_group_norm_forward_and_grad() {
    let d = cpu();
    // LayerNorm over the last two dims.
    let ln = f64_params(|| LayerNorm::new(&[2, 3], &d));
    let (w, b) = (common::Lcg::new(70).vec(6), common::Lcg::new(71).vec(6));
    set(&ln.weight, &w);
    set(&ln.bias, &b);
    let (x, xv) = data(72, &[4, 2, 3], DType::F64, &d);
    let mut want = Vec::new();
    for row in xv.chunks(6) {
        let m = row.iter().sum::<f64>() / 6.0;
        let v = row.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 6.0;
        want.extend(row.iter().enumerate().map(|(i, x)| (x - m) / (v + 1e-5).sqrt() * w[i] + b[i]));
    }
    assert_close("layer_norm", &vals(&ln.forward(&x).unwrap()), &want, 1e-10);
    check_module("LayerNorm", &ln, &leaf64(73, &[3, 2, 3]));
    assert!(ln.forward(&Tensor::zeros(&[4, 3, 2], &d).unwrap()).is_err());

    // RmsNorm with an explicit eps and with the dtype's machine epsilon.
    for eps in [Some(1e-3), None] {
        let rn = f64_params(|| RmsNorm::new(4, eps, &d));
        let w = common::Lcg::new(74).vec(4);
        set(&rn.weight, &w);
        let (x, xv) = data(75, &[3, 4], DType::F64, &d);
        let e = eps.unwrap_or(f64::EPSILON);
        let mut want = Vec::new();
        for row in xv.chunks(4) {
            let ms = row.iter().map(|x| x * x).sum::<f64>() / 4.0;
            want.extend(row.iter().enumerate().map(|(i, x)| x / (ms + e).sqrt() * w[i]));
        }
        assert_close("rms_norm", &vals(&rn.forward(&x).unwrap()), &want, 1e-10);
        check_module("RmsNorm", &rn, &leaf64(76, &[2, 4]));
    }

    // GroupNorm: 6 channels in 3 groups over [n, c, h, w].
    let gn = f64_params(|| GroupNorm::new(3, 6, &d));
    let (w, b) = (common::Lcg::new(77).vec(6), common::Lcg::new(78).vec(6));
    set(&gn.weight, &w);
    set(&gn.bias, &b);
    let (x, xv) = data(79, &[2, 6, 2, 2], DType::F64, &d);
    let mut want = vec![0.0; xv.len()];
    for n in 0..2 {
        for g in 0..3 {
            let idx: Vec<usize> = (0..2).flat_map(|cc| (0..4).map(move |r| ((n * 6 + g * 2 + cc) * 4) + r)).collect();
            let m = idx.iter().map(|&i| xv[i]).sum::<f64>() / 8.0;
            let v = idx.iter().map(|&i| (xv[i] - m).powi(2)).sum::<f64>() / 8.0;
            for &i in &idx {
                let ch = (i / 4) % 6;
                want[i] = (xv[i] - m) / (v + 1e-5).sqrt() * w[ch] + b[ch];
            }
        }
    }
    assert_close("group_norm", &vals(&gn.forward(&x).unwrap()), &want, 1e-10);
    check_module("GroupNorm", &gn, &leaf64(80, &[2, 6, 2, 1]));
    assert!(GroupNorm::new(4, 6, &d).is_err());
}

// ---------------------------------------------------------------- embedding, dropout, activations

#[test]
fn embedding_lookup_and_grad() {
    let _g = seeded(6);
    let d = cpu();
    let emb = f64_params(|| Embedding::new(5, 3, &d));
    let table = vals(&emb.weight);
    let ids = Tensor::from_vec(vec![4u32, 0, 4, 2, 1, 3], &[2, 3], &d).unwrap();
    let y = emb.forward(&ids).unwrap();
    assert_eq!(y.shape(), &[2, 3, 3]);
    let want: Vec<f64> = [4, 0, 4, 2, 1, 3].iter().flat_map(|&i| table[i * 3..i * 3 + 3].to_vec()).collect();
    assert_eq!(vals(&y), want);
    let ids_i32 = Tensor::from_vec(vec![1i32, 1], &[2], &d).unwrap();
    assert_eq!(emb.forward(&ids_i32).unwrap().shape(), &[2, 3]);
    assert!(emb.forward(&Tensor::from_vec(vec![5u32], &[1], &d).unwrap()).is_err(), "out of range");
    assert!(emb.forward(&Tensor::zeros(&[2], &d).unwrap()).is_err(), "float ids");
    check_module("Embedding", &emb, &ids);
    // Repeated ids accumulate their gradients.
    let g = {
        emb.weight.zero_grad();
        emb.forward(&ids).unwrap().sum_all().unwrap().backward().unwrap();
        vals(&emb.weight.grad().unwrap())
    };
    assert_eq!(g, vec![1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 2., 2., 2.]);
    // N(0, 1) init.
    let big = Embedding::new(100, 100, &d).unwrap();
    let v = vals(&big.weight);
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    assert!(m.abs() < 0.03 && (s - 1.0).abs() < 0.03);
}

#[test]
fn dropout_statistics_and_modes() {
    let _g = seeded(7);
    let d = cpu();
    let p = 0.3;
    let drop = Dropout::new(p);
    let x = Tensor::ones(&[100, 200], &d).unwrap();
    let y = vals(&drop.forward(&x).unwrap());
    let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
    assert!((zeros - p).abs() < 0.01, "zero fraction {zeros}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / (1.0 - p)).abs() < 1e-6));
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    assert!((mean - 1.0).abs() < 0.02, "expectation {mean}");
    // Seeded: the same seed gives the same mask.
    kiln_core::manual_seed(11);
    let a = vals(&drop.forward(&x).unwrap());
    kiln_core::manual_seed(11);
    assert_eq!(a, vals(&drop.forward(&x).unwrap()));

    drop.eval();
    let (xr, xv) = data(90, &[4, 5], DType::F32, &d);
    assert_eq!(vals(&drop.forward(&xr).unwrap()), xv, "identity in eval");
    drop.train();
    assert_eq!(vals(&Dropout::new(0.0).forward(&xr).unwrap()), xv);
    assert!(vals(&Dropout::new(1.0).forward(&xr).unwrap()).iter().all(|&v| v == 0.0));
    assert!(Dropout::new(1.5).forward(&xr).is_err());

    // Gradient: the mask, scaled; fixed by reseeding before each evaluation.
    let x64 = leaf64(91, &[3, 4]);
    let r = data(92, &[3, 4], DType::F64, &d).0;
    let f = || {
        kiln_core::manual_seed(5);
        (&drop.forward(&x64)? * &r)?.sum_all()
    };
    common::gradcheck("Dropout", &f, &[("input".into(), x64.clone())]);
}

/// erf to ~1e-13 (series below 3, continued fraction above): independent of Kiln's.
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        let (mut term, mut sum, mut k) = (a, a, 0.0);
        while term.abs() > 1e-17 {
            k += 1.0;
            term *= -a * a / k;
            sum += term / (2.0 * k + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (a + f);
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
    };
    r.copysign(x)
}

#[test]
fn activations_forward_and_grad() {
    let d = cpu();
    let (x, xv) = data(100, &[3, 5], DType::F64, &d);
    let x = x.mul_scalar(3.0).unwrap();
    let xv: Vec<f64> = xv.iter().map(|v| v * 3.0).collect();
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let c = (2.0 / std::f64::consts::PI).sqrt();
    type Case = (&'static str, Box<dyn Module>, Box<dyn Fn(f64) -> f64>);
    let cases: Vec<Case> = vec![
        ("relu", Box::new(Relu), Box::new(|v: f64| v.max(0.0))),
        ("gelu", Box::new(Gelu), Box::new(|v: f64| 0.5 * v * (1.0 + erf(v / 2f64.sqrt())))),
        (
            "gelu_tanh",
            Box::new(GeluTanh),
            Box::new(move |v: f64| 0.5 * v * (1.0 + (c * (v + 0.044715 * v.powi(3))).tanh())),
        ),
        ("silu", Box::new(Silu), Box::new(move |v: f64| v * sig(v))),
        ("tanh", Box::new(Tanh), Box::new(|v: f64| v.tanh())),
        ("sigmoid", Box::new(Sigmoid), Box::new(sig)),
        ("leaky_relu", Box::new(LeakyRelu(0.2)), Box::new(|v: f64| if v > 0.0 { v } else { 0.2 * v })),
    ];
    for (name, m, f) in cases {
        let want: Vec<f64> = xv.iter().map(|&v| f(v)).collect();
        assert_close(name, &vals(&m.forward(&x).unwrap()), &want, 1e-10);
        check_module(name, m.as_ref(), &leaf64(101, &[2, 5]));
        assert!(m.named_parameters().is_empty());
    }
    assert_eq!(LeakyRelu::default().0, 0.01);
}

// ---------------------------------------------------------------- attention and transformer

/// Host multi-head attention over `[b, t, dm]` with the module's weights.
fn host_mha(m: &MultiHeadAttention, xv: &[f64], b: usize, t: usize, causal: bool, pad: Option<&[bool]>) -> Vec<f64> {
    let dm = m.d_model();
    let (h, dh) = (m.heads, dm / m.heads);
    let proj =
        |l: &Linear, x: &[f64]| host_linear(x, b * t, &vals(&l.weight), l.bias.as_ref().map(vals).as_deref(), dm, dm);
    let (q, k, v) = (proj(&m.q_proj, xv), proj(&m.k_proj, xv), proj(&m.v_proj, xv));
    let mut out = vec![0.0; b * t * dm];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..t {
                let allowed: Vec<bool> =
                    (0..t).map(|j| !(pad.is_some_and(|p| p[bi * t + j]) || causal && j > i)).collect();
                let scores: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..dh)
                            .map(|e| q[(bi * t + i) * dm + hi * dh + e] * k[(bi * t + j) * dm + hi * dh + e])
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let mx = (0..t).filter(|&j| allowed[j]).map(|j| scores[j]).fold(f64::NEG_INFINITY, f64::max);
                let ex: Vec<f64> = (0..t).map(|j| if allowed[j] { (scores[j] - mx).exp() } else { 0.0 }).collect();
                let z: f64 = ex.iter().sum();
                for e in 0..dh {
                    let s: f64 = if z > 0.0 {
                        (0..t).map(|j| ex[j] / z * v[(bi * t + j) * dm + hi * dh + e]).sum()
                    } else {
                        0.0
                    };
                    out[(bi * t + i) * dm + hi * dh + e] = s;
                }
            }
        }
    }
    proj(&m.out_proj, &out)
}

#[test]
fn attention_forward_masks_and_grad() {
    let _g = seeded(8);
    let d = cpu();
    let (b, t, dm, heads) = (2, 4, 6, 2);
    let m = f64_params(|| MultiHeadAttention::new(dm, heads, true, &d));
    let names: Vec<_> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "q_proj.weight",
            "q_proj.bias",
            "k_proj.weight",
            "k_proj.bias",
            "v_proj.weight",
            "v_proj.bias",
            "out_proj.weight",
            "out_proj.bias"
        ]
    );
    let (x, xv) = data(110, &[b, t, dm], DType::F64, &d);
    // The second sequence's last two positions are padding; in the first, every key is.
    let pad = [true, true, true, true, false, false, true, true];
    let pad_t = Tensor::from_vec(pad.to_vec(), &[b, t], &d).unwrap();
    for (causal, mask) in [(false, None), (true, None), (false, Some(&pad[..])), (true, Some(&pad[..]))] {
        let y = m.forward_masked(&x, causal, mask.map(|_| &pad_t)).unwrap();
        assert_eq!(y.shape(), &[b, t, dm]);
        let want = host_mha(&m, &xv, b, t, causal, mask);
        assert_close(&format!("mha causal={causal} mask={}", mask.is_some()), &vals(&y), &want, 1e-10);
        assert!(vals(&y).iter().all(|v| v.is_finite()));
    }
    assert_close("forward = unmasked", &vals(&m.forward(&x).unwrap()), &host_mha(&m, &xv, b, t, false, None), 1e-10);

    check_module("MultiHeadAttention", &m, &leaf64(111, &[1, 3, dm]));
    let xg = leaf64(112, &[b, t, dm]);
    let r = data(113, &[b, t, dm], DType::F64, &d).0;
    let f = || (&m.forward_masked(&xg, true, Some(&pad_t))? * &r)?.sum_all();
    let mut inputs = m.named_parameters();
    inputs.push(("input".into(), xg.clone()));
    common::gradcheck("MultiHeadAttention(causal, padded)", &f, &inputs);

    assert!(MultiHeadAttention::new(6, 4, true, &d).is_err());
    assert!(m.forward(&Tensor::zeros(&[2, 4, 5], &d).unwrap()).is_err());
    assert!(m.forward_masked(&x, false, Some(&Tensor::from_vec(vec![false; 4], &[1, 4], &d).unwrap())).is_err());
}

/// `dropout` drops attention probabilities while training only: eval is the layer without
/// dropout, training with one seed is reproducible and differs from eval. TransformerBlock
/// passes its dropout to its attention (as PyTorch's GPT-style blocks do).
#[test]
fn attention_dropout_follows_train_and_eval() {
    let _g = seeded(14);
    let d = cpu();
    let mut m = MultiHeadAttention::new(6, 2, true, &d).unwrap().with_dropout(0.5);
    let x = data(130, &[2, 5, 6], DType::F32, &d).0;
    m.eval();
    let evaluated = vals(&m.forward_masked(&x, true, None).unwrap());
    m.train();
    kiln_core::manual_seed(1);
    let a = vals(&m.forward_masked(&x, true, None).unwrap());
    kiln_core::manual_seed(1);
    let b = vals(&m.forward_masked(&x, true, None).unwrap());
    assert_eq!(a, b, "the same seed drops the same probabilities");
    assert_ne!(a, evaluated);
    m.dropout = 0.0;
    assert_eq!(vals(&m.forward_masked(&x, true, None).unwrap()), evaluated, "eval = no dropout");
    m.dropout = 1.5;
    assert!(m.forward(&x).is_err(), "a dropout that is not a probability is an error");
    assert_eq!(TransformerBlock::new(4, 2, 2, 0.3, &d).unwrap().attn.dropout, 0.3);
}

#[test]
fn transformer_block_composition_names_and_grad() {
    let _g = seeded(9);
    let d = cpu();
    let blk = f64_params(|| TransformerBlock::new(4, 2, 2, 0.0, &d));
    let names: Vec<_> = blk.named_parameters().into_iter().map(|(n, _)| n).collect();
    let expect = [
        "ln1.weight",
        "ln1.bias",
        "attn.q_proj.weight",
        "attn.q_proj.bias",
        "attn.k_proj.weight",
        "attn.k_proj.bias",
        "attn.v_proj.weight",
        "attn.v_proj.bias",
        "attn.out_proj.weight",
        "attn.out_proj.bias",
        "ln2.weight",
        "ln2.bias",
        "mlp.0.weight",
        "mlp.0.bias",
        "mlp.2.weight",
        "mlp.2.bias",
    ];
    assert_eq!(names, expect);
    assert_eq!(blk.named_parameters()[12].1.shape(), &[8, 4]);
    // Give the norms non-trivial affine parameters so the check covers them.
    for (n, p) in blk.named_parameters() {
        if n.starts_with("ln") {
            set(&p, &common::Lcg::new(n.len() as u64).vec(4));
        }
    }
    let (x, xv) = data(120, &[2, 3, 4], DType::F64, &d);
    let y = blk.forward_masked(&x, true, None).unwrap();
    // x + attn(ln1(x)), then + Linear(GELU(Linear(ln2(h)))) by hand from the parts' weights.
    let ln = |l: &LayerNorm, v: &[f64]| -> Vec<f64> {
        let (w, b) = (vals(&l.weight), vals(&l.bias));
        v.chunks(4)
            .flat_map(|row| {
                let m = row.iter().sum::<f64>() / 4.0;
                let var = row.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 4.0;
                row.iter().enumerate().map(|(i, x)| (x - m) / (var + 1e-5).sqrt() * w[i] + b[i]).collect::<Vec<_>>()
            })
            .collect()
    };
    let a = host_mha(&blk.attn, &ln(&blk.ln1, &xv), 2, 3, true, None);
    let h: Vec<f64> = xv.iter().zip(&a).map(|(x, a)| x + a).collect();
    let p = blk.named_parameters();
    let (w1, b1, w2, b2) = (vals(&p[12].1), vals(&p[13].1), vals(&p[14].1), vals(&p[15].1));
    let hidden: Vec<f64> = host_linear(&ln(&blk.ln2, &h), 6, &w1, Some(&b1), 4, 8)
        .iter()
        .map(|&v| 0.5 * v * (1.0 + erf(v / 2f64.sqrt())))
        .collect();
    let mlp = host_linear(&hidden, 6, &w2, Some(&b2), 8, 4);
    let want: Vec<f64> = h.iter().zip(&mlp).map(|(h, m)| h + m).collect();
    assert_close("transformer block", &vals(&y), &want, 1e-10);

    let xg = leaf64(121, &[1, 3, 4]);
    let r = data(122, &[1, 3, 4], DType::F64, &d).0;
    let f = || (&blk.forward_masked(&xg, true, None)? * &r)?.sum_all();
    let mut inputs = blk.named_parameters();
    inputs.push(("input".into(), xg.clone()));
    common::gradcheck("TransformerBlock", &f, &inputs);

    // Dropout inside the block follows train / eval.
    let drop_blk = TransformerBlock::new(4, 2, 2, 0.5, &d).unwrap();
    let x32 = data(123, &[1, 3, 4], DType::F32, &d).0;
    drop_blk.eval();
    assert_eq!(vals(&drop_blk.forward(&x32).unwrap()), vals(&drop_blk.forward(&x32).unwrap()));
    drop_blk.train();
    assert_ne!(vals(&drop_blk.forward(&x32).unwrap()), vals(&drop_blk.forward(&x32).unwrap()));
}

#[test]
fn sequential_names_chaining_and_training_mode() {
    let _g = seeded(10);
    let d = cpu();
    let seq = Sequential::new()
        .add(Linear::new(3, 4, true, &d).unwrap())
        .add(Relu)
        .add(BatchNorm1d::new(4, &d).unwrap())
        .add(Dropout::new(0.5))
        .add(Linear::new(4, 2, false, &d).unwrap());
    let names: Vec<_> = seq.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight"]);
    let bufs: Vec<_> = seq.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(bufs, ["2.running_mean", "2.running_var"]);
    assert_eq!(seq.len(), 5);
    assert_eq!(seq.num_parameters(), 12 + 4 + 4 + 4 + 8);

    let x = data(130, &[6, 3], DType::F32, &d).0;
    seq.eval();
    let a = vals(&seq.forward(&x).unwrap());
    let mut h = x.clone();
    for i in 0..seq.len() {
        h = seq.get(i).unwrap().forward(&h).unwrap();
    }
    assert_eq!(a, vals(&h), "forward chains the children");
    assert_eq!(a, vals(&seq.forward(&x).unwrap()), "eval is deterministic");
    seq.train();
    assert_ne!(vals(&seq.forward(&x).unwrap()), vals(&seq.forward(&x).unwrap()), "dropout back on");
    assert_eq!(vals(&Sequential::new().forward(&x).unwrap()), vals(&x));

    let s64 = f64_params(|| {
        Ok(Sequential::new().add(Linear::new(3, 4, true, &d)?).add(Tanh).add(Linear::new(4, 2, true, &d)?))
    });
    check_module("Sequential", &s64, &leaf64(131, &[5, 3]));
}

// ---------------------------------------------------------------- GPU against CPU

/// Copies every parameter and buffer of `src` into `dst` (same structure, any device).
fn copy_state(src: &dyn Module, dst: &dyn Module) {
    for ((_, s), (_, t)) in src
        .named_parameters()
        .into_iter()
        .chain(src.named_buffers())
        .zip(dst.named_parameters().into_iter().chain(dst.named_buffers()))
    {
        t.set_data(&s.to(t.device()).unwrap()).unwrap();
    }
}

#[test]
fn layers_on_gpu_match_cpu() {
    let Some(g) = gpu() else { return };
    let _s = seeded(12);
    let c = cpu();
    type Build = Box<dyn Fn(&Device) -> kiln_core::Result<Box<dyn Module>>>;
    let cases: Vec<(&str, Vec<usize>, Build)> = vec![
        ("linear", vec![3, 5], Box::new(|d| Ok(Box::new(Linear::new(5, 4, true, d)?)))),
        (
            "conv2d",
            vec![2, 4, 6, 5],
            Box::new(|d| {
                Ok(Box::new(Conv2d::new(
                    4,
                    6,
                    (3, 3),
                    Conv2dOptions { stride: (2, 1), padding: (1, 1), dilation: (1, 1), groups: 2 },
                    true,
                    d,
                )?))
            }),
        ),
        ("conv1d", vec![2, 3, 9], Box::new(|d| Ok(Box::new(Conv1d::new(3, 2, 3, 1, 1, 1, 1, true, d)?)))),
        (
            "conv_transpose2d",
            vec![2, 3, 4, 3],
            Box::new(|d| Ok(Box::new(ConvTranspose2d::new(3, 2, (3, 3), (2, 2), (1, 1), (1, 0), true, d)?))),
        ),
        ("max_pool2d", vec![2, 3, 6, 6], Box::new(|_| Ok(Box::new(MaxPool2d::new((2, 2), (2, 2), (0, 0)))))),
        ("avg_pool2d", vec![2, 3, 6, 6], Box::new(|_| Ok(Box::new(AvgPool2d::new((3, 3), (2, 2), (1, 1)))))),
        ("adaptive_avg_pool2d", vec![2, 3, 7, 5], Box::new(|_| Ok(Box::new(AdaptiveAvgPool2d::new((3, 2)))))),
        ("batch_norm2d", vec![3, 4, 3, 3], Box::new(|d| Ok(Box::new(BatchNorm2d::new(4, d)?)))),
        ("layer_norm", vec![2, 3, 8], Box::new(|d| Ok(Box::new(LayerNorm::new(&[8], d)?)))),
        ("rms_norm", vec![2, 3, 8], Box::new(|d| Ok(Box::new(RmsNorm::new(8, None, d)?)))),
        ("group_norm", vec![2, 6, 3, 2], Box::new(|d| Ok(Box::new(GroupNorm::new(2, 6, d)?)))),
        ("mha", vec![2, 5, 8], Box::new(|d| Ok(Box::new(MultiHeadAttention::new(8, 2, true, d)?)))),
        ("transformer", vec![2, 5, 8], Box::new(|d| Ok(Box::new(TransformerBlock::new(8, 2, 2, 0.0, d)?)))),
        ("gelu", vec![3, 7], Box::new(|_| Ok(Box::new(Gelu)))),
        ("silu", vec![3, 7], Box::new(|_| Ok(Box::new(Silu)))),
        (
            "conv_transpose2d groups dilation",
            vec![2, 4, 3, 4],
            Box::new(|d| {
                let o = ConvTranspose2dOptions {
                    stride: (2, 1),
                    padding: (1, 0),
                    output_padding: (1, 0),
                    dilation: (2, 2),
                    groups: 2,
                };
                Ok(Box::new(ConvTranspose2d::with_options(4, 6, (3, 2), o, true, d)?))
            }),
        ),
        (
            "conv_transpose1d",
            vec![2, 4, 7],
            Box::new(|d| {
                let o = ConvTranspose1dOptions { stride: 3, padding: 1, output_padding: 2, dilation: 2, groups: 2 };
                Ok(Box::new(ConvTranspose1d::new(4, 2, 3, o, true, d)?))
            }),
        ),
        (
            "max_pool2d ceil",
            vec![2, 3, 8, 7],
            Box::new(|_| {
                Ok(Box::new(MaxPool2d::from_options(MaxPool2dOptions {
                    padding: (1, 1),
                    dilation: (1, 2),
                    ceil_mode: true,
                    ..MaxPool2dOptions::new((2, 3))
                })))
            }),
        ),
        (
            "avg_pool2d ceil",
            vec![2, 3, 8, 7],
            Box::new(|_| {
                let o = AvgPool2dOptions {
                    padding: (1, 1),
                    ceil_mode: true,
                    count_include_pad: false,
                    ..AvgPool2dOptions::new((3, 3))
                };
                Ok(Box::new(AvgPool2d::from_options(o)))
            }),
        ),
        (
            "max_pool1d",
            vec![2, 3, 11],
            Box::new(|_| {
                Ok(Box::new(MaxPool1d::new(MaxPool1dOptions { ceil_mode: true, ..MaxPool1dOptions::new(3) })))
            }),
        ),
        (
            "avg_pool1d",
            vec![2, 3, 11],
            Box::new(|_| Ok(Box::new(AvgPool1d::new(AvgPool1dOptions { padding: 1, ..AvgPool1dOptions::new(3) })))),
        ),
        ("adaptive_max_pool2d", vec![2, 3, 7, 5], Box::new(|_| Ok(Box::new(AdaptiveMaxPool2d::new((3, 4)))))),
        ("adaptive_max_pool1d", vec![2, 3, 7], Box::new(|_| Ok(Box::new(AdaptiveMaxPool1d::new(4))))),
        ("prelu", vec![2, 3, 5], Box::new(|d| Ok(Box::new(PRelu::new(3, 0.25, d)?)))),
        ("hardswish", vec![3, 7], Box::new(|_| Ok(Box::new(Hardswish)))),
        ("softplus", vec![3, 7], Box::new(|_| Ok(Box::new(Softplus { beta: 2.0, threshold: 1.0 })))),
        ("celu", vec![3, 7], Box::new(|_| Ok(Box::new(Celu { alpha: 0.5 })))),
        ("glu", vec![3, 8], Box::new(|_| Ok(Box::new(Glu::default())))),
    ];
    let mut failures = Vec::new();
    for (name, shape, build) in cases {
        let run = || -> kiln_core::Result<()> {
            let (mc, mg) = (build(&c)?, build(&g)?);
            copy_state(mc.as_ref(), mg.as_ref());
            let x = data(140, &shape, DType::F32, &c).0;
            let (xc, xg) = (x.with_grad(), x.to(&g)?.with_grad());
            let (yc, yg) = (mc.forward(&xc)?, mg.forward(&xg)?);
            assert_close(name, &vals(&yg), &vals(&yc), 1e-4);
            // Gradients too, through a weighted sum.
            let r = data(141, yc.shape(), DType::F32, &c).0;
            (&yc * &r)?.sum_all()?.backward()?;
            (&yg * &r.to(&g)?)?.sum_all()?.backward()?;
            assert_close(&format!("{name}: input grad"), &vals(&xg.grad().unwrap()), &vals(&xc.grad().unwrap()), 1e-3);
            for ((n, pc), (_, pg)) in mc.named_parameters().into_iter().zip(mg.named_parameters()) {
                assert_close(&format!("{name}.{n}.grad"), &vals(&pg.grad().unwrap()), &vals(&pc.grad().unwrap()), 1e-3);
            }
            Ok(())
        };
        if let Err(e) = run() {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "GPU errors:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------- training

fn xor_run(d: &Device) -> f64 {
    let mlp =
        Sequential::new().add(Linear::new(2, 16, true, d).unwrap()).add(Tanh).add(Linear::new(16, 1, true, d).unwrap());
    let x = Tensor::from_vec(vec![0f32, 0., 0., 1., 1., 0., 1., 1.], &[4, 2], d).unwrap();
    let y = Tensor::from_vec(vec![0f32, 1., 1., 0.], &[4, 1], d).unwrap();
    let params = mlp.parameters();
    let mut loss = f64::INFINITY;
    for _ in 0..300 {
        let l = binary_cross_entropy_with_logits(&mlp.forward(&x).unwrap(), &y, Reduction::Mean).unwrap();
        l.backward().unwrap();
        sgd_step(&params, 2.0);
        loss = l.item().unwrap();
    }
    let pred = vals(&mlp.forward(&x).unwrap().sigmoid().unwrap());
    assert!(pred[0] < 0.1 && pred[1] > 0.9 && pred[2] > 0.9 && pred[3] < 0.1, "XOR predictions {pred:?}");
    loss
}

#[test]
fn mlp_learns_xor_on_cpu() {
    let _g = seeded(13);
    let loss = xor_run(&cpu());
    assert!(loss < 0.01, "final loss {loss}");
}

#[test]
fn mlp_learns_xor_on_gpu() {
    let Some(g) = gpu() else { return };
    let _s = seeded(13);
    let loss = xor_run(&g);
    assert!(loss < 0.01, "final loss {loss}");
}

#[test]
fn tiny_cnn_overfits_one_batch() {
    let _g = seeded(14);
    let d = cpu();
    let net = Sequential::new()
        .add(Conv2d::new(1, 4, (3, 3), Conv2dOptions { padding: (1, 1), ..Default::default() }, true, &d).unwrap())
        .add(BatchNorm2d::new(4, &d).unwrap())
        .add(Relu)
        .add(MaxPool2d::new((2, 2), (2, 2), (0, 0)))
        .add(Flatten::new())
        .add(Linear::new(4 * 4 * 4, 3, true, &d).unwrap());
    let x = data(150, &[6, 1, 8, 8], DType::F32, &d).0;
    let y = Tensor::from_vec(vec![0u32, 1, 2, 2, 1, 0], &[6], &d).unwrap();
    let params = net.parameters();
    let first = cross_entropy_loss(&net.forward(&x).unwrap(), &y).unwrap().item().unwrap();
    let mut loss = first;
    for _ in 0..150 {
        let l = cross_entropy_loss(&net.forward(&x).unwrap(), &y).unwrap();
        l.backward().unwrap();
        sgd_step(&params, 0.1);
        loss = l.item().unwrap();
    }
    assert!(loss < 0.05, "loss {first} → {loss}");
    net.eval();
    let pred = net.forward(&x).unwrap().argmax(1, false).unwrap().to_vec::<u32>().unwrap();
    assert_eq!(pred, vec![0, 1, 2, 2, 1, 0]);
}

#[test]
fn tiny_transformer_overfits_a_sequence() {
    let _g = seeded(15);
    let d = cpu();
    let (vocab, dm) = (7, 16);
    let emb = Embedding::new(vocab, dm, &d).unwrap();
    let pos = init::normal(&[6, dm], 0.0, 0.5, &d).unwrap();
    let blk = TransformerBlock::new(dm, 2, 2, 0.0, &d).unwrap();
    let head = Linear::new(dm, vocab, true, &d).unwrap();
    let seq = [3u32, 1, 4, 1, 5, 2, 6];
    let x = Tensor::from_vec(seq[..6].to_vec(), &[1, 6], &d).unwrap();
    let y = Tensor::from_vec(seq[1..].to_vec(), &[6], &d).unwrap();
    let mut params = emb.parameters();
    params.push(pos.clone());
    params.extend(blk.parameters());
    params.extend(head.parameters());
    let step = || {
        let h = (&emb.forward(&x)? + &pos)?;
        let logits = head.forward(&blk.forward_masked(&h, true, None)?)?;
        cross_entropy_loss(&logits.reshape(&[6, vocab])?, &y)
    };
    let first = step().unwrap().item().unwrap();
    let mut loss = first;
    for _ in 0..200 {
        let l = step().unwrap();
        l.backward().unwrap();
        sgd_step(&params, 0.1);
        loss = l.item().unwrap();
    }
    assert!(loss < 0.05, "loss {first} → {loss}");
}
