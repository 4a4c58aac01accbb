//! IDX parsing: well-formed arrays, and every way a file can be broken.

use std::io::Write;
use std::path::PathBuf;

use kiln_data::{DataError, IDX_IMAGES_MAGIC, parse_idx, read_idx};

/// A raw IDX image file of `n` images of `rows × cols`, pixel values counting up.
fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut bytes = IDX_IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [n, rows, cols] {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend((0..n * rows * cols).map(|i| i as u8));
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("write to Vec");
    enc.finish().expect("finish to Vec")
}

/// A fresh per-test scratch directory (no tempfile crate, to stay dependency-light).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-data-idx-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[test]
fn parses_raw_and_gzipped_images() {
    let raw = idx_images(2, 3, 4);
    for bytes in [raw.clone(), gzip(&raw)] {
        let idx = parse_idx(&bytes).expect("valid IDX");
        assert_eq!(idx.magic, IDX_IMAGES_MAGIC);
        assert_eq!(idx.dims, [2, 3, 4]);
        assert_eq!(idx.data, (0..24).collect::<Vec<u8>>());
    }
}

#[test]
fn parses_labels() {
    let idx = parse_idx(&[0, 0, 8, 1, 0, 0, 0, 2, 5, 9]).expect("valid labels");
    assert_eq!(idx.dims, [2]);
    assert_eq!(idx.data, [5, 9]);
}

#[test]
fn short_data_is_truncated() {
    let mut raw = idx_images(2, 3, 4);
    raw.truncate(raw.len() - 5);
    match parse_idx(&raw) {
        Err(DataError::Truncated { expected_len, actual_len, .. }) => {
            assert_eq!((expected_len, actual_len), (16 + 24, 16 + 19));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn short_header_is_truncated() {
    for len in [0, 3, 4, 9, 15] {
        let raw = &idx_images(2, 3, 4)[..len];
        assert!(matches!(parse_idx(raw), Err(DataError::Truncated { .. })), "header of {len} bytes");
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut raw = idx_images(1, 2, 2);
    raw.push(0);
    assert!(matches!(parse_idx(&raw), Err(DataError::Malformed { .. })));
}

#[test]
fn wrong_magic_is_bad_magic() {
    // Not unsigned bytes (0x0d = float), zero dims, too many dims, junk.
    for magic in [0x0000_0d03u32, 0x0000_0800, 0x0000_0809, 0x1234_5678] {
        let mut raw = idx_images(1, 2, 2);
        raw[..4].copy_from_slice(&magic.to_be_bytes());
        match parse_idx(&raw) {
            Err(DataError::BadMagic { found, .. }) => assert_eq!(found, magic),
            other => panic!("magic {magic:#x}: expected BadMagic, got {other:?}"),
        }
    }
}

#[test]
fn huge_dimensions_do_not_overflow_or_allocate() {
    let mut raw = 0x0000_0804u32.to_be_bytes().to_vec();
    for _ in 0..4 {
        raw.extend(u32::MAX.to_be_bytes());
    }
    assert!(matches!(parse_idx(&raw), Err(DataError::Malformed { .. } | DataError::Truncated { .. })));
}

#[test]
fn read_idx_names_the_file_in_errors() {
    let dir = scratch("names");
    let path = dir.join("broken-idx3-ubyte.gz");
    let mut raw = idx_images(3, 2, 2);
    raw.truncate(raw.len() - 1);
    std::fs::write(&path, gzip(&raw)).expect("write scratch file");
    let err = read_idx(&path).expect_err("truncated");
    assert!(matches!(err, DataError::Truncated { .. }));
    assert!(err.to_string().contains("broken-idx3-ubyte.gz"), "{err}");

    // A gzip stream cut short is a Gzip error, also naming the file.
    let gz = gzip(&idx_images(3, 2, 2));
    std::fs::write(&path, &gz[..gz.len() / 2]).expect("write scratch file");
    let err = read_idx(&path).expect_err("cut gzip");
    assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
    assert!(err.to_string().contains("broken-idx3-ubyte.gz"), "{err}");

    let missing = dir.join("missing");
    let err = read_idx(&missing).expect_err("missing file");
    assert!(matches!(err, DataError::Io { .. }));
    assert!(err.to_string().contains("missing"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_real_file_is_truncated() {
    let path = kiln_data::data_dir().join("mnist/t10k-labels-idx1-ubyte.gz");
    let idx = read_idx(&path).expect("vendored labels");
    let mut raw = 0x0000_0801u32.to_be_bytes().to_vec();
    raw.extend((idx.dims[0] as u32).to_be_bytes());
    raw.extend(&idx.data[..idx.data.len() - 100]);
    match parse_idx(&raw) {
        Err(DataError::Truncated { expected_len, actual_len, .. }) => {
            assert_eq!(expected_len - actual_len, 100);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}
