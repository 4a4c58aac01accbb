use crate::transpose::Transpose;

use super::Rng;

/// Every element lands at its transposed place, for sizes around the 8×8 tiles (whole tiles,
/// ragged right and bottom edges, fewer than one tile) and a row stride wider than the row;
/// elements outside the matrix are never read into the copy, and the copy's tail is untouched.
#[test]
fn transpose_matches_the_index_formula() {
    let mut rng = Rng::new(11);
    for (rows, cols, pad) in
        [(1, 1, 0), (7, 9, 0), (8, 8, 0), (16, 24, 3), (17, 33, 1), (1023, 9, 5), (9, 1023, 0), (64, 256, 0)]
    {
        let ld = cols + pad;
        let src64 = rng.vec(rows * ld);
        let src32: Vec<f32> = src64.iter().map(|&x| x as f32).collect();
        let want = |src: &dyn Fn(usize) -> f64| -> Vec<f64> {
            (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| src(r * ld + c)).collect()
        };
        let mut out32 = vec![f32::NAN; rows * cols + 2];
        f32::transpose(&src32, ld, rows, cols, &mut out32);
        let got: Vec<f64> = out32[..rows * cols].iter().map(|&x| x as f64).collect();
        assert_eq!(got, want(&|i| src32[i] as f64), "f32 {rows}x{cols} ld {ld}");
        assert!(out32[rows * cols..].iter().all(|x| x.is_nan()), "f32 {rows}x{cols}: wrote past the matrix");
        let mut out64 = vec![0.0f64; rows * cols];
        f64::transpose(&src64, ld, rows, cols, &mut out64);
        assert_eq!(out64, want(&|i| src64[i]), "f64 {rows}x{cols} ld {ld}");
    }
}
