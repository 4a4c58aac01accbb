use half::f16;
use kiln_backend::{BackendStorage, BinaryOp, DType, Error, HostData, Layout};

use super::{assert_rel, assert_unsupported, c, f64s, host, st};

fn bin(a: impl Into<HostData>, b: impl Into<HostData>, op: BinaryOp) -> HostData {
    let (a, b) = (a.into(), b.into());
    let l = c(&[a.len()]);
    host(&st(a).binary(&l, &st(b), &l, op).unwrap_or_else(|e| panic!("{}: {e}", op.name())))
}

#[test]
fn i32_division_floors_and_remainder_takes_divisor_sign() {
    // Python: 7//2=3, -7//2=-4, 7//-2=-4, -7//-2=3, 6//3=2, -6//3=-2; x//0 := 0; MIN//-1 wraps.
    let a = vec![7, -7, 7, -7, 6, -6, 5, i32::MIN, 0, -1];
    let b = vec![2, 2, -2, -2, 3, 3, 0, -1, 5, 3];
    assert_eq!(bin(a.clone(), b.clone(), BinaryOp::Div), HostData::I32(vec![3, -4, -4, 3, 2, -2, 0, i32::MIN, 0, -1]));
    // Python: 7%2=1, -7%2=1, 7%-2=-1, -7%-2=-1, 6%3=0, -6%3=0; x%0 := 0; MIN%-1=0; -1%3=2.
    assert_eq!(bin(a, b, BinaryOp::Rem), HostData::I32(vec![1, 1, -1, -1, 0, 0, 0, 0, 0, 2]));
}

#[test]
fn i32_division_identity_holds_on_random_pairs() {
    // a == b·(a // b) + a % b and 0 ≤ |a % b| < |b| with sign of b, for nonzero b.
    let mut rng = super::Rng::new(3);
    let a: Vec<i32> = (0..500).map(|_| rng.next_u64() as i32 >> (rng.below(30) as u32)).collect();
    let b: Vec<i32> = (0..500).map(|_| (rng.next_u64() as i32 >> (rng.below(31) as u32)) | 1).collect();
    let (HostData::I32(q), HostData::I32(r)) =
        (bin(a.clone(), b.clone(), BinaryOp::Div), bin(a.clone(), b.clone(), BinaryOp::Rem))
    else {
        panic!("wrong dtype")
    };
    for i in 0..500 {
        let (a, b, q, r) = (a[i] as i64, b[i] as i64, q[i] as i64, r[i] as i64);
        if a == i32::MIN as i64 && b == -1 {
            continue;
        }
        assert_eq!(b * q + r, a, "{a} {b}");
        assert!(r.abs() < b.abs() && (r == 0 || (r < 0) == (b < 0)), "{a} % {b} = {r}");
    }
}

#[test]
fn integer_arithmetic_wraps() {
    assert_eq!(
        bin(vec![i32::MAX, i32::MIN, 65536], vec![1, 1, 65536], BinaryOp::Add),
        HostData::I32(vec![i32::MIN, i32::MIN + 1, 131072])
    );
    assert_eq!(bin(vec![i32::MIN], vec![1], BinaryOp::Sub), HostData::I32(vec![i32::MAX]));
    assert_eq!(bin(vec![65536, -3], vec![65536, 4], BinaryOp::Mul), HostData::I32(vec![0, -12]));
    assert_eq!(bin(vec![0u32, 3], vec![1u32, 5], BinaryOp::Sub), HostData::U32(vec![u32::MAX, u32::MAX - 1]));
    assert_eq!(bin(vec![7u32, 7, 7], vec![2u32, 0, 7], BinaryOp::Div), HostData::U32(vec![3, 0, 1]));
    assert_eq!(bin(vec![7u32, 7], vec![2u32, 0], BinaryOp::Rem), HostData::U32(vec![1, 0]));
    assert_eq!(bin(vec![3i32, -3], vec![-5, 2], BinaryOp::Maximum), HostData::I32(vec![3, 2]));
    assert_eq!(bin(vec![3i32, -3], vec![-5, 2], BinaryOp::Minimum), HostData::I32(vec![-5, -3]));
}

#[test]
fn integer_pow() {
    let base = vec![2, 3, 2, 1, -1, -1, 0, 2, 0, -2, 5];
    let exp = vec![10, 0, -1, -5, -3, -2, -1, 31, 0, 3, 1];
    // 2^31 wraps to i32::MIN; negative exponents truncate the real result (0 unless |base| = 1).
    assert_eq!(bin(base, exp, BinaryOp::Pow), HostData::I32(vec![1024, 1, 0, 1, -1, 1, 0, i32::MIN, 1, -8, 5]));
    assert_eq!(bin(vec![2u32, 3], vec![32u32, 3], BinaryOp::Pow), HostData::U32(vec![0, 27]));
}

#[test]
fn float_ieee_and_torch_semantics() {
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let run = |a: Vec<f64>, b: Vec<f64>, op| {
        f64s(&st(a.clone()).binary(&c(&[a.len()]), &st(b), &c(&[a.len()]), op).expect("op"))
    };
    assert_rel(&run(vec![1.0, -1.0, 0.0], vec![0.0, 0.0, 0.0], BinaryOp::Div), &[inf, -inf, nan], 0.0);
    assert_rel(&run(vec![1.0, nan, 3.0], vec![nan, 2.0, 2.0], BinaryOp::Maximum), &[nan, nan, 3.0], 0.0);
    assert_rel(&run(vec![1.0, nan, 3.0], vec![nan, 2.0, 2.0], BinaryOp::Minimum), &[nan, nan, 2.0], 0.0);
    // torch.remainder: -7.5 % 2 = 0.5, 7.5 % -2 = -0.5, 5 % 3 = 2, x % 0 = NaN, -5 % inf = inf.
    assert_rel(
        &run(vec![-7.5, 7.5, 5.0, 1.0, -5.0, 5.0], vec![2.0, -2.0, 3.0, 0.0, inf, inf], BinaryOp::Rem),
        &[0.5, -0.5, 2.0, nan, inf, 5.0],
        0.0,
    );
    assert_rel(&run(vec![2.0, 4.0, -8.0], vec![0.5, -1.0, 1.0 / 3.0], BinaryOp::Pow), &[2f64.sqrt(), 0.25, nan], 1e-15);
}

#[test]
fn comparisons_return_bool_and_nan_is_unordered() {
    let a = vec![1.0f32, f32::NAN, 2.0];
    let b = vec![1.0f32, f32::NAN, 3.0];
    assert_eq!(bin(a.clone(), b.clone(), BinaryOp::Eq), HostData::Bool(vec![true, false, false]));
    assert_eq!(bin(a.clone(), b.clone(), BinaryOp::Ne), HostData::Bool(vec![false, true, true]));
    assert_eq!(bin(a.clone(), b.clone(), BinaryOp::Lt), HostData::Bool(vec![false, false, true]));
    assert_eq!(bin(a.clone(), b.clone(), BinaryOp::Le), HostData::Bool(vec![true, false, true]));
    assert_eq!(bin(a.clone(), b.clone(), BinaryOp::Gt), HostData::Bool(vec![false, false, false]));
    assert_eq!(bin(a, b, BinaryOp::Ge), HostData::Bool(vec![true, false, false]));
    assert_eq!(bin(vec![-1i32, 5], vec![2i32, 5], BinaryOp::Lt), HostData::Bool(vec![true, false]));
    assert_eq!(bin(vec![u32::MAX], vec![0u32], BinaryOp::Gt), HostData::Bool(vec![true]));
}

#[test]
fn bool_takes_logic_and_comparisons_only() {
    let a = vec![true, true, false, false];
    let b = vec![true, false, true, false];
    assert_eq!(bin(a.clone(), b.clone(), BinaryOp::And), HostData::Bool(vec![true, false, false, false]));
    assert_eq!(bin(a.clone(), b.clone(), BinaryOp::Or), HostData::Bool(vec![true, true, true, false]));
    assert_eq!(bin(a.clone(), b.clone(), BinaryOp::Eq), HostData::Bool(vec![true, false, false, true]));
    assert_eq!(bin(a.clone(), b.clone(), BinaryOp::Lt), HostData::Bool(vec![false, false, true, false]));
    let l = c(&[4]);
    for op in [BinaryOp::Add, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow, BinaryOp::Maximum] {
        assert_unsupported(st(a.clone()).binary(&l, &st(b.clone()), &l, op), DType::Bool);
    }
    let f = st(vec![1.0f32; 4]);
    assert_unsupported(f.binary(&l, &f, &l, BinaryOp::And), DType::F32);
    let i = st(vec![1i32; 4]);
    assert_unsupported(i.binary(&l, &i, &l, BinaryOp::Or), DType::I32);
}

#[test]
fn mismatches_are_errors() {
    let l = c(&[2]);
    let r = st(vec![1.0f32, 2.0]).binary(&l, &st(vec![1.0f64, 2.0]), &l, BinaryOp::Add);
    assert!(matches!(r, Err(Error::DTypeMismatch { .. })), "{r:?}");
    let r = st(vec![1.0f32, 2.0]).binary(&l, &st(vec![1.0f32, 2.0, 3.0]), &c(&[3]), BinaryOp::Add);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
}

#[test]
fn strided_and_broadcast_operands() {
    // lhs: [[0,1,2],[3,4,5]] read transposed as [3,2]; rhs: a [2]-row broadcast over 3 rows at offset 1.
    let lhs = st(vec![0.0f64, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let ll = c(&[2, 3]).permute(&[1, 0]);
    let rhs = st(vec![99.0f64, 10.0, 20.0]);
    let rl = Layout::new(vec![3, 2], vec![0, 1], 1);
    let out = lhs.binary(&ll, &rhs, &rl, BinaryOp::Sub).expect("sub");
    // lhs logical rows: [0,3], [1,4], [2,5].
    assert_eq!(f64s(&out), vec![-10.0, -17.0, -9.0, -16.0, -8.0, -15.0]);
}

#[test]
fn large_inputs_take_the_parallel_path_with_the_same_result() {
    let n = 100_003;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 7) as f32 + 1.0).collect();
    let HostData::F32(out) = bin(a.clone(), b.clone(), BinaryOp::Mul) else { panic!("dtype") };
    for i in (0..n).step_by(997) {
        assert_eq!(out[i], a[i] * b[i]);
    }
}

#[test]
fn f16_arithmetic_rounds_once_to_nearest_even() {
    let one = f16::from_f32(1.0);
    // 2⁻¹¹ is half an ulp at 1: the tie goes to even (1.0); 3·2⁻¹¹ is 1.5 ulp: tie to 1 + 2⁻⁹.
    let a = vec![one, one];
    let b = vec![f16::from_f64(2f64.powi(-11)), f16::from_f64(3.0 * 2f64.powi(-11))];
    assert_eq!(bin(a, b, BinaryOp::Add), HostData::F16(vec![one, f16::from_f64(1.0 + 2f64.powi(-9))]));
}

#[test]
fn where_picks_per_element_with_broadcast_condition() {
    let cond = st(vec![true, false, true]);
    let cl = Layout::new(vec![2, 3], vec![0, 1], 0);
    let t = st(vec![1i32, 2, 3, 4, 5, 6]);
    let f = st(vec![-1i32]);
    let fl = Layout::new(vec![2, 3], vec![0, 0], 0);
    let out = cond.where_cond(&cl, &t, &c(&[2, 3]), &f, &fl).expect("where");
    assert_eq!(host(&out), HostData::I32(vec![1, -1, 3, 4, -1, 6]));

    let r = st(vec![1.0f32; 6]).where_cond(&c(&[2, 3]), &t, &c(&[2, 3]), &t, &c(&[2, 3]));
    assert!(matches!(r, Err(Error::DTypeMismatch { .. })), "{r:?}");
    let r = cond.where_cond(&cl, &t, &c(&[2, 3]), &st(vec![0.0f32; 6]), &c(&[2, 3]));
    assert!(matches!(r, Err(Error::DTypeMismatch { .. })), "{r:?}");
}
