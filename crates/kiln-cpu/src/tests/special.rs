use crate::special::{erf, erfc};

use super::assert_rel;

#[test]
fn erf_and_erfc_at_tabulated_points() {
    // Reference values: Abramowitz & Stegun / any CAS, to 16 digits.
    let xs = [0.5, 1.0, 2.0, 3.0, 1e-10, -1.0, 0.0];
    let want = [
        0.5204998778130465,
        0.8427007929497149,
        0.9953222650189527,
        0.9999779095030014,
        1.1283791670955126e-10,
        -0.8427007929497149,
        0.0,
    ];
    assert_rel(&xs.map(erf), &want, 1e-15);
    let xs = [3.0, 5.0, 10.0, -1.0, 1.5, 2.5, 0.0];
    let want = [
        2.2090496998585438e-5,
        1.5374597944280351e-12,
        2.088487583762545e-45,
        1.8427007929497148,
        0.033894853524689274,
        0.0004069520174449589,
        1.0,
    ];
    assert_rel(&xs.map(erfc), &want, 1e-14);
}

#[test]
fn erf_limits_and_nan() {
    assert_eq!(erf(f64::INFINITY), 1.0);
    assert_eq!(erf(f64::NEG_INFINITY), -1.0);
    assert_eq!(erfc(f64::INFINITY), 0.0);
    assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
    assert_eq!(erfc(40.0), 0.0);
    assert!(erf(f64::NAN).is_nan() && erfc(f64::NAN).is_nan());
    assert!(erf(-0.0).is_sign_negative());
}

#[test]
fn erf_is_continuous_across_the_method_switch_at_two() {
    // Across x = 2 (series below, continued fraction above) the step must match the derivative
    // 2/√π·e^{−x²}, to within rounding.
    let h = 1e-9;
    let slope = 2.0 / std::f64::consts::PI.sqrt() * (-4.0f64).exp();
    assert!(((erf(2.0) - erf(2.0 - h)) - slope * h).abs() < 5e-16);
    let erfc2 = 0.004677734981047266;
    assert!(((erfc(2.0 - h) - erfc(2.0)) / erfc2 - slope * h / erfc2).abs() < 1e-13);
}

#[test]
fn erf_below_two_agrees_with_its_defining_series() {
    // The Taylor table against the series it is built from, densely over [0, 2) and at tiny
    // arguments (relative accuracy near 0); both are within ~1e-15 of the true value.
    let xs = (0..200_000).map(|i| 2.0 * (i as f64 + 0.5) / 200_000.0).chain([1e-300, 1e-10, 1e-3, 0.03125, 1.96875]);
    for x in xs {
        let (got, want) = (erf(x), crate::special::erf_series(x));
        assert!(((got - want) / want).abs() < 2e-15, "erf({x}) = {got:e}, series {want:e}");
        assert_eq!(erf(-x), -got, "erf is odd");
    }
}
