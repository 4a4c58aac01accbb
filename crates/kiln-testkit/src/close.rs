//! Comparing computed values with expected ones.

use kiln_backend::DType;

/// Asserts `|got − want| ≤ rtol·|want| + atol` element by element, NaN matching NaN and an
/// infinity matching only itself (an expected inf is never "close" to a finite value); the
/// message names `what`, the element and both values.
///
/// The older variants map onto it: "tol · max(1, |want|)" is at most `assert_close(.., tol, tol)`
/// (rtol = atol = tol), and a pure relative check is `atol = 0`.
#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if g.is_nan() || w.is_nan() {
            g.is_nan() && w.is_nan()
        } else if g.is_infinite() || w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= rtol * w.abs() + atol
        };
        assert!(ok, "{what}: element {i}: got {g:e}, want {w:e} (rtol {rtol:e}, atol {atol:e})");
    }
}

/// [`assert_close`] over several rows (optimizer steps, parameters), naming the row.
#[track_caller]
pub fn assert_close_rows(what: &str, got: &[Vec<f64>], want: &[Vec<f64>], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: {} rows, expected {}", got.len(), want.len());
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        assert_close(&format!("{what}: row {r}"), g, w, rtol, atol);
    }
}

/// `(rtol, atol)` for comparing a kernel's result in `dtype` with an f64 reference: exact for
/// integers and bool, a few ulps of the storage type for floats.
pub fn dtype_tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (2e-3, 2e-3),
        DType::F32 => (2e-5, 2e-6),
        DType::F64 => (1e-12, 1e-14),
        DType::I32 | DType::U32 | DType::Bool => (0.0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_catches_what_it_should() {
        assert_close(
            "ok",
            &[1.0, f64::NAN, f64::INFINITY, 0.0],
            &[1.0 + 1e-9, f64::NAN, f64::INFINITY, 1e-9],
            1e-6,
            1e-6,
        );
        for (g, w) in
            [(1e300, f64::INFINITY), (f64::NAN, 0.0), (0.0, f64::NAN), (1.1, 1.0), (f64::NEG_INFINITY, f64::INFINITY)]
        {
            let r = std::panic::catch_unwind(|| assert_close("bad", &[g], &[w], 1e-3, 1e-3));
            assert!(r.is_err(), "{g} vs {w} passed");
        }
    }
}
