//! The IDX file format (as used by MNIST), unsigned-byte arrays only.
//!
//! Layout: a big-endian u32 magic `0x0000_08NN` (`08` = unsigned byte, `NN` =
//! number of dimensions), then `NN` big-endian u32 dimension sizes, then the
//! data in row-major order.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::files::{gunzip_if_needed, read_maybe_gz};

/// Magic of a 1-D unsigned-byte IDX array (MNIST labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// Magic of a 3-D unsigned-byte IDX array (MNIST images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;

/// The IDX type code for unsigned bytes, the only element type read here.
const TYPE_U8: u32 = 0x08;
/// More dimensions than this is surely a corrupt header, not a real file.
const MAX_DIMS: u32 = 4;

/// A parsed IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The magic number as found in the file.
    pub magic: u32,
    /// Dimension sizes, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// The elements, row-major; `data.len()` equals the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads an IDX file, gzipped or raw (detected from the first bytes).
///
/// Accepts any unsigned-byte IDX array of 1 to 4 dimensions; the caller checks
/// that the shape is the one it wants.
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let bytes = read_maybe_gz(path)?;
    parse_idx_named(&bytes, path)
}

/// Parses IDX bytes already in memory, gzipped or raw.
///
/// ```
/// let bytes = [0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9];
/// let idx = kiln_data::parse_idx(&bytes)?;
/// assert_eq!(idx.dims, [3]);
/// assert_eq!(idx.data, [7, 8, 9]);
/// # Ok::<(), kiln_data::DataError>(())
/// ```
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray> {
    let origin = Path::new("<memory>");
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let raw = gunzip_if_needed(bytes.to_vec(), origin)?;
        parse_idx_named(&raw, origin)
    } else {
        parse_idx_named(bytes, origin)
    }
}

/// Parses raw (already decompressed) IDX bytes; `path` only names them in errors.
pub(crate) fn parse_idx_named(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let truncated =
        |expected_len: usize| DataError::Truncated { path: path.to_path_buf(), expected_len, actual_len: bytes.len() };

    let magic = read_u32_be(bytes, 0).ok_or_else(|| truncated(4))?;
    let ndims = magic & 0xff;
    if magic >> 8 != TYPE_U8 || ndims == 0 || ndims > MAX_DIMS {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: magic,
            expected: "0x000008NN (unsigned-byte IDX with 1 to 4 dimensions)",
        });
    }

    // ndims <= 4, so these usize conversions and products cannot overflow.
    let header_len = 4 + 4 * ndims as usize;
    let mut dims = Vec::with_capacity(ndims as usize);
    for d in 0..ndims as usize {
        let dim = read_u32_be(bytes, 4 + 4 * d).ok_or_else(|| truncated(header_len))?;
        dims.push(dim as usize);
    }

    let expected_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|elements| elements.checked_add(header_len))
        .ok_or_else(|| DataError::Malformed {
            path: path.to_path_buf(),
            reason: format!("dimensions {dims:?} overflow usize"),
        })?;

    if bytes.len() < expected_len {
        return Err(truncated(expected_len));
    }
    if bytes.len() > expected_len {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "{} trailing bytes after the {expected_len} that dimensions {dims:?} imply",
                bytes.len() - expected_len
            ),
        });
    }

    Ok(IdxArray { magic, dims, data: bytes[header_len..].to_vec() })
}

fn read_u32_be(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}
