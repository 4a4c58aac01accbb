use half::f16;
use kiln_backend::{BackendStorage, DType, HostData, Layout, UnaryOp};

use super::{assert_close, assert_rel, assert_unsupported, c, f64s, host, st};

fn run(op: UnaryOp, x: &[f64]) -> Vec<f64> {
    f64s(&st(x.to_vec()).unary(&c(&[x.len()]), op).unwrap_or_else(|e| panic!("{}: {e}", op.name())))
}

#[test]
fn float_ops_at_known_points() {
    use UnaryOp::*;
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let cases: Vec<(UnaryOp, Vec<f64>, Vec<f64>)> = vec![
        (Neg, vec![1.5, -0.0, inf], vec![-1.5, 0.0, -inf]),
        (Abs, vec![-2.0, 3.0, -inf], vec![2.0, 3.0, inf]),
        (Sign, vec![-3.0, 0.0, 2.0, nan], vec![-1.0, 0.0, 1.0, nan]),
        (Exp, vec![0.0, 1.0, -inf], vec![1.0, std::f64::consts::E, 0.0]),
        (Exp2, vec![3.0, -1.0], vec![8.0, 0.5]),
        (Log, vec![1.0, 0.0, -1.0], vec![0.0, -inf, nan]),
        (Log2, vec![8.0, 0.5], vec![3.0, -1.0]),
        (Log1p, vec![1e-20, -1.0], vec![1e-20, -inf]),
        (Expm1, vec![1e-20, 0.0], vec![1e-20, 0.0]),
        (Sqrt, vec![9.0, -1.0], vec![3.0, nan]),
        (Rsqrt, vec![4.0, 0.0], vec![0.5, inf]),
        (Recip, vec![4.0, 0.0, -0.0], vec![0.25, inf, -inf]),
        (Square, vec![-3.0, 1e200], vec![9.0, inf]),
        (Sin, vec![0.0, std::f64::consts::FRAC_PI_2], vec![0.0, 1.0]),
        (Cos, vec![0.0, std::f64::consts::PI], vec![1.0, -1.0]),
        (Tanh, vec![0.0, 1000.0, -1000.0], vec![0.0, 1.0, -1.0]),
        // 1/(1+e^-2) by hand: e^-2 = 0.1353352832366127.
        (Sigmoid, vec![0.0, 1000.0, -1000.0, 2.0, nan], vec![0.5, 1.0, 0.0, 1.0 / 1.1353352832366127, nan]),
        (Relu, vec![-1.0, 2.0, nan, -inf], vec![0.0, 2.0, nan, 0.0]),
        (LeakyRelu(0.1), vec![-2.0, 3.0], vec![-0.2, 3.0]),
        (Elu(1.0), vec![-1.0, 2.0], vec![-0.6321205588285577, 2.0]),
        (Elu(2.0), vec![-inf], vec![-2.0]),
        // x·Φ(x) with Φ(1) = 0.8413447460685429, Φ(−6) = 9.865876450377014e-10.
        (
            GeluErf,
            vec![0.0, 1.0, -1.0, -6.0, 10.0],
            vec![0.0, 0.8413447460685429, -0.15865525393145707, -6.0 * 9.865876450377014e-10, 10.0],
        ),
        // Φ(x) + x·φ(x), from Python's math.erfc and math.exp; ±2.5 are past erf's |z| < 2 split.
        (
            GeluErfGrad,
            vec![0.0, 1.0, -1.0, -6.0, 10.0, -2.5, 2.5],
            vec![
                0.5,
                1.0833154705876864,
                -0.08331547058768629,
                -3.5468709453902015e-08,
                1.0,
                -0.037611085908145214,
                1.037611085908145,
            ],
        ),
        (Silu, vec![0.0, 1000.0, -1000.0], vec![0.0, 1000.0, 0.0]),
        (
            Softplus,
            vec![0.0, 30.0, -30.0, 20.0, 20.5],
            vec![std::f64::consts::LN_2, 30.0, 9.357622968839737e-14, 20.000000002061153, 20.5],
        ),
        (Mish, vec![1.0, 0.0, 100.0], vec![0.8650983882673103, 0.0, 100.0]),
        (Floor, vec![-1.5, 1.5], vec![-2.0, 1.0]),
        (Ceil, vec![-1.5, 1.5], vec![-1.0, 2.0]),
        (
            Round,
            vec![0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999999999999994, 2.6],
            vec![0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 0.0, 3.0],
        ),
        (Clamp(-0.5, 0.5), vec![-1.0, 0.2, 1.0, nan], vec![-0.5, 0.2, 0.5, nan]),
        // torch.clamp with min > max returns max.
        (Clamp(1.0, 0.0), vec![0.5, -3.0, 7.0], vec![0.0, 0.0, 0.0]),
        (Powf(2.5), vec![4.0, 0.0, -1.0], vec![32.0, 0.0, nan]),
    ];
    for (op, x, want) in cases {
        assert_rel(&run(op, &x), &want, 1e-14);
    }
}

#[test]
fn gelu_tanh_matches_its_formula() {
    let x = [-3.0, -0.5, 0.0, 1.0, 2.5];
    let want: Vec<f64> = x
        .iter()
        .map(|&x: &f64| {
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
            0.5 * x * (1.0 + inner.tanh())
        })
        .collect();
    assert_close(&run(UnaryOp::GeluTanh, &x), &want, 1e-15);
}

#[test]
fn bool_valued_float_ops() {
    let x = st(vec![1.0f32, f32::NAN, f32::INFINITY, -f32::INFINITY]);
    let l = c(&[4]);
    assert_eq!(host(&x.unary(&l, UnaryOp::IsNan).expect("isnan")), HostData::Bool(vec![false, true, false, false]));
    assert_eq!(host(&x.unary(&l, UnaryOp::IsInf).expect("isinf")), HostData::Bool(vec![false, false, true, true]));
    assert_unsupported(x.unary(&l, UnaryOp::Not), DType::F32);
}

#[test]
fn f32_and_f16_round_the_f64_result_once() {
    let xs = [0.1f64, 1.7, -2.3, 5.5];
    let x32 = st(xs.iter().map(|&x| x as f32).collect::<Vec<_>>());
    let want32: Vec<f64> = xs.iter().map(|&x| ((x as f32) as f64).exp() as f32 as f64).collect();
    assert_eq!(f64s(&x32.unary(&c(&[4]), UnaryOp::Exp).expect("exp")), want32);

    let h: Vec<f16> = xs.iter().map(|&x| f16::from_f64(x)).collect();
    let want16: Vec<f64> = h.iter().map(|x| f16::from_f64(x.to_f64().exp()).to_f64()).collect();
    let out = st(h).unary(&c(&[4]), UnaryOp::Exp).expect("exp f16");
    assert_eq!(out.dtype(), DType::F16);
    assert_eq!(f64s(&out), want16);
}

#[test]
fn every_op_runs_on_every_float_dtype() {
    for op in UnaryOp::ALL {
        for data in [
            HostData::F32(vec![-1.5, 0.25, 3.0]),
            HostData::F16(vec![f16::from_f32(-1.5), f16::from_f32(0.25), f16::from_f32(3.0)]),
            HostData::F64(vec![-1.5, 0.25, 3.0]),
        ] {
            let dtype = data.dtype();
            let r = st(data).unary(&c(&[3]), op);
            if op == UnaryOp::Not {
                assert_unsupported(r, dtype);
            } else {
                let out = r.unwrap_or_else(|e| panic!("{}: {e}", op.name()));
                let want = if op.returns_bool() { DType::Bool } else { dtype };
                assert_eq!(out.dtype(), want, "{}", op.name());
                assert_eq!(out.len(), 3);
            }
        }
    }
}

#[test]
fn strided_input_is_read_in_logical_order() {
    // [[1, 2, 3], [4, 5, 6]] transposed is [[1, 4], [2, 5], [3, 6]].
    let x = st(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let t = c(&[2, 3]).permute(&[1, 0]);
    assert_eq!(f64s(&x.unary(&t, UnaryOp::Neg).expect("neg")), vec![-1.0, -4.0, -2.0, -5.0, -3.0, -6.0]);
    // Broadcast: one row read three times, with an offset.
    let b = Layout::new(vec![3, 2], vec![0, 1], 4);
    assert_eq!(f64s(&x.unary(&b, UnaryOp::Square).expect("square")), vec![25.0, 36.0, 25.0, 36.0, 25.0, 36.0]);
}

#[test]
fn empty_tensor_gives_empty_output() {
    let x = st(Vec::<f32>::new());
    let out = x.unary(&c(&[0, 3]), UnaryOp::Exp).expect("exp");
    assert_eq!(host(&out), HostData::F32(vec![]));
}

#[test]
fn integer_ops_wrap_and_clamp() {
    use UnaryOp::*;
    let v = vec![1i32, -2, i32::MIN, 0, 65536];
    let x = st(v);
    let l = c(&[5]);
    let run = |op| host(&x.unary(&l, op).expect("int op"));
    assert_eq!(run(Neg), HostData::I32(vec![-1, 2, i32::MIN, 0, -65536]));
    assert_eq!(run(Abs), HostData::I32(vec![1, 2, i32::MIN, 0, 65536]));
    assert_eq!(run(Sign), HostData::I32(vec![1, -1, -1, 0, 1]));
    // 65536² = 2³² wraps to 0; i32::MIN² = 2⁶² wraps to 0 too.
    assert_eq!(run(Square), HostData::I32(vec![1, 4, 0, 0, 0]));
    assert_eq!(run(Relu), HostData::I32(vec![1, 0, 0, 0, 65536]));
    // Bounds truncate toward zero: [-1.5, 2.7] acts as [-1, 2].
    assert_eq!(run(Clamp(-1.5, 2.7)), HostData::I32(vec![1, -1, -1, 0, 2]));
    assert_eq!(run(IsNan), HostData::Bool(vec![false; 5]));
    assert_unsupported(x.unary(&l, Exp), DType::I32);
    assert_unsupported(x.unary(&l, Not), DType::I32);
    assert_unsupported(x.unary(&l, Round), DType::I32);

    let u = st(vec![0u32, 7, u32::MAX]);
    let l3 = c(&[3]);
    assert_eq!(host(&u.unary(&l3, Sign).expect("sign")), HostData::U32(vec![0, 1, 1]));
    assert_eq!(host(&u.unary(&l3, Abs).expect("abs")), HostData::U32(vec![0, 7, u32::MAX]));
    assert_eq!(host(&u.unary(&l3, Clamp(-5.0, 6.0)).expect("clamp")), HostData::U32(vec![0, 6, 6]));
    assert_eq!(host(&u.unary(&l3, Square).expect("square")), HostData::U32(vec![0, 49, 1]));
    assert_unsupported(u.unary(&l3, Neg), DType::U32);
}

#[test]
fn bool_takes_not_only() {
    let b = st(vec![true, false]);
    let l = c(&[2]);
    assert_eq!(host(&b.unary(&l, UnaryOp::Not).expect("not")), HostData::Bool(vec![false, true]));
    assert_unsupported(b.unary(&l, UnaryOp::Relu), DType::Bool);
    assert_unsupported(b.unary(&l, UnaryOp::Neg), DType::Bool);
}

#[test]
fn out_of_bounds_layout_is_an_error_not_a_panic() {
    let x = st(vec![1.0f32, 2.0, 3.0]);
    let r = x.unary(&c(&[4]), UnaryOp::Neg);
    assert!(matches!(r, Err(kiln_backend::Error::InvalidArgument { .. })), "{r:?}");
    let r = x.unary(&Layout::new(vec![2], vec![2], 1), UnaryOp::Neg);
    assert!(matches!(r, Err(kiln_backend::Error::InvalidArgument { .. })), "{r:?}");
    let r = x.unary(&Layout::new(vec![usize::MAX, 2], vec![0, 0], 0), UnaryOp::Neg);
    assert!(r.is_err());
}
