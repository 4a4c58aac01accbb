//! Character-level text: the vendored Moby-Dick, encoding, splits and windows.

use std::sync::OnceLock;

use kiln_data::{DataError, Rng, TextDataset, UNKNOWN_ID_CHAR};

fn moby() -> &'static TextDataset {
    static MOBY: OnceLock<TextDataset> = OnceLock::new();
    MOBY.get_or_init(|| TextDataset::moby_dick().expect("vendored Moby-Dick loads"))
}

#[test]
fn moby_dick_loads_with_its_vocabulary() {
    let m = moby();
    assert_eq!(m.len(), 1_190_317, "chars (not bytes) of the text");
    assert_eq!(m.vocab_size(), 83);
    assert!(m.vocab().windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
    assert!(m.decode(&m.tokens()[..20]).starts_with("CHAPTER 1. Loomings."));
    assert!(m.vocab().contains(&'—'));
}

#[test]
fn encode_decode_round_trip() {
    let m = moby();
    let s = "Call me Ishmael—“whale”!";
    let ids = m.encode(s).expect("all chars known");
    assert_eq!(ids.len(), s.chars().count());
    assert_eq!(m.decode(&ids), s);
    let whole = m.decode(m.tokens());
    assert_eq!(m.encode(&whole).expect("own text"), m.tokens());
}

#[test]
fn unknown_characters_are_errors_and_unknown_ids_are_marked() {
    let t = TextDataset::from_text("abc");
    match t.encode("abzc") {
        Err(DataError::UnknownChar { ch, offset }) => assert_eq!((ch, offset), ('z', 2)),
        other => panic!("expected UnknownChar, got {other:?}"),
    }
    assert_eq!(t.decode(&[0, 7, 2]), format!("a{UNKNOWN_ID_CHAR}c"));
}

#[test]
fn split_is_contiguous_and_shares_the_vocabulary() {
    let m = moby();
    let (train, val) = m.split(0.9).expect("valid fraction");
    assert_eq!(train.len() + val.len(), m.len());
    assert_eq!(train.len(), (m.len() as f64 * 0.9) as usize);
    assert_eq!(train.vocab(), m.vocab());
    assert_eq!(val.vocab(), m.vocab());
    assert_eq!([train.tokens(), val.tokens()].concat(), m.tokens());
    for bad in [0.0, 1.0, -0.5, 2.0, f64::NAN] {
        assert!(m.split(bad).is_err(), "{bad}");
    }
    assert!(TextDataset::from_text("ab").split(0.1).is_err(), "empty train part");
}

#[test]
fn windows_targets_are_inputs_shifted_by_one() {
    let m = moby();
    let (b, t) = (8, 64);
    let (x, y) = m.random_windows(b, t, &mut Rng::new(1)).expect("text long enough");
    assert_eq!((x.len(), y.len()), (b * t, b * t));
    for row in 0..b {
        let (xr, yr) = (&x[row * t..(row + 1) * t], &y[row * t..(row + 1) * t]);
        assert_eq!(xr[1..], yr[..t - 1]);
        // The window really is a piece of the text.
        let start = m.tokens().windows(t + 1).position(|w| w[..t] == *xr && w[1..] == *yr);
        assert!(start.is_some(), "row {row} is not a window of the text");
    }
    // Seeded: the same rng seed gives the same windows, another seed others.
    let again = m.random_windows(b, t, &mut Rng::new(1)).expect("ok");
    assert_eq!((x.clone(), y.clone()), again);
    assert_ne!(x, m.random_windows(b, t, &mut Rng::new(2)).expect("ok").0);
}

#[test]
fn windows_reach_the_end_of_the_text_but_not_beyond() {
    let t = TextDataset::from_text("abcd");
    let mut rng = Rng::new(0);
    let mut starts_seen = [false; 2];
    for _ in 0..200 {
        let (x, y) = t.random_windows(1, 2, &mut rng).expect("4 chars fit 2+1 twice");
        starts_seen[x[0] as usize] = true;
        assert_eq!(y, x.iter().map(|v| v + 1).collect::<Vec<_>>());
    }
    assert_eq!(starts_seen, [true, true]);
    let (x, _) = t.random_windows(3, 3, &mut rng).expect("4 chars fit 3+1 once");
    assert_eq!(x, [0, 1, 2].repeat(3));
    assert!(t.random_windows(1, 4, &mut rng).is_err(), "no room for the last target");
    assert!(t.random_windows(0, 2, &mut rng).is_err());
    assert!(t.random_windows(2, 0, &mut rng).is_err());
    assert!(TextDataset::from_text("").random_windows(1, 1, &mut rng).is_err());
}

#[test]
fn checksum_guards_the_vendored_text() {
    let dir = std::env::temp_dir().join(format!("kiln-data-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join("moby-dick.txt"), "Call me Ishmael.").expect("write");
    let err = TextDataset::moby_dick_from(&dir).expect_err("wrong text");
    assert!(matches!(err, DataError::Checksum { .. }));
    assert!(err.to_string().contains("moby-dick.txt"), "{err}");
    // The same file loads as plain text.
    let t = TextDataset::from_file(dir.join("moby-dick.txt")).expect("plain text");
    assert_eq!(t.len(), 16);
    let _ = std::fs::remove_dir_all(&dir);
}
