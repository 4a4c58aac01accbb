//! Locating vendored data, reading (possibly gzipped) files, checking hashes.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// Environment variable that overrides where the vendored `data/` directory is.
pub const DATA_DIR_ENV: &str = "KILN_DATA_DIR";

/// The directory holding the vendored datasets (`mnist/`, `moby-dick/`).
///
/// `$KILN_DATA_DIR` if set and non-empty, else the repository's `data/`
/// directory as seen from this crate's source at build time. The fallback is
/// what makes `cargo test` and the examples work from a checkout; a shipped
/// binary that needs the data must set the variable.
pub fn data_dir() -> PathBuf {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data")),
    }
}

/// The gzip magic bytes; anything else is treated as uncompressed.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a whole file and returns its bytes, gunzipped if they are gzip.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    gunzip_if_needed(raw, path)
}

/// Gunzips `bytes` if they start with the gzip magic, else returns them as-is.
/// `origin` only names the data in errors.
pub fn gunzip_if_needed(bytes: Vec<u8>, origin: &Path) -> Result<Vec<u8>> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    // MNIST compresses about 5:1; reserving up front avoids repeated regrowth
    // of a 47 MB buffer.
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(5));
    // MultiGzDecoder: `cat a.gz b.gz` is a valid gzip file and should decode whole.
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip { path: origin.to_path_buf(), source })?;
    Ok(out)
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('?'));
        hex.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('?'));
    }
    hex
}

/// Fails with [`DataError::Checksum`] unless `bytes` hash to `expected`.
pub fn verify_sha256(bytes: &[u8], expected: &str, path: &Path) -> Result<()> {
    let actual = sha256_hex(bytes);
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(DataError::Checksum { path: path.to_path_buf(), expected: expected.to_owned(), actual })
    }
}

/// `dir/name.gz` if it exists, else `dir/name` (an uncompressed copy is
/// accepted too, so users may gunzip the vendored files if they like).
pub(crate) fn find_file(dir: &Path, name: &str) -> PathBuf {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() { gz } else { dir.join(name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input_is_the_known_constant() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn gzip_round_trip_and_passthrough() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"hello").expect("write to Vec");
        let gz = enc.finish().expect("finish to Vec");
        let origin = Path::new("x");
        assert_eq!(gunzip_if_needed(gz, origin).expect("valid gzip"), b"hello");
        assert_eq!(gunzip_if_needed(b"plain".to_vec(), origin).expect("raw"), b"plain");
    }

    #[test]
    fn corrupt_gzip_names_the_origin() {
        let err =
            gunzip_if_needed(vec![0x1f, 0x8b, 8, 0, 1, 2, 3], Path::new("bad.gz")).expect_err("corrupt gzip must fail");
        assert!(matches!(err, DataError::Gzip { .. }));
        assert!(err.to_string().contains("bad.gz"), "{err}");
    }
}
