//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading or batching data.
///
/// Variants that come from a file carry its path, so a message always says
/// which file was at fault. Data parsed from memory is named `<memory>`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read file: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The file starts like gzip but does not decompress.
    #[error("{path}: corrupt gzip stream: {source}")]
    Gzip {
        /// The file that failed.
        path: PathBuf,
        /// What the decoder reported.
        #[source]
        source: std::io::Error,
    },

    /// The file's magic number is not the one this reader expects.
    #[error("{path}: bad magic number 0x{found:08x}, expected {expected}")]
    BadMagic {
        /// The file that failed.
        path: PathBuf,
        /// The magic number found in the file.
        found: u32,
        /// What was expected, in words (for example `0x00000803 (u8 images)`).
        expected: &'static str,
    },

    /// The file is shorter than its header says.
    #[error("{path}: truncated: expected {expected_len} bytes, found {actual_len}")]
    Truncated {
        /// The file that failed.
        path: PathBuf,
        /// Length the header implies, in bytes.
        expected_len: usize,
        /// Length actually present, in bytes.
        actual_len: usize,
    },

    /// The file is readable but its content is inconsistent in some other way
    /// (trailing bytes, absurd dimensions, wrong image size, invalid UTF-8).
    #[error("{path}: malformed: {reason}")]
    Malformed {
        /// The file that failed.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The decompressed content does not have the recorded sha256.
    #[error("{path}: sha256 mismatch: expected {expected}, found {actual}")]
    Checksum {
        /// The file that failed.
        path: PathBuf,
        /// The recorded hash (lowercase hex).
        expected: String,
        /// The hash of what was read (lowercase hex).
        actual: String,
    },

    /// Two inputs that must agree do not (for example image and label counts).
    #[error("mismatch: {0}")]
    Mismatch(String),

    /// A character that is not in the text dataset's vocabulary.
    #[error("character {ch:?} at char offset {offset} is not in the vocabulary")]
    UnknownChar {
        /// The offending character.
        ch: char,
        /// Its position, counted in chars, in the encoded string.
        offset: usize,
    },

    /// An argument is out of its valid range (zero batch size, bad range, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The loader's background thread stopped abnormally (a `Dataset` or
    /// `Batcher` implementation panicked or broke its contract).
    #[error("data loader worker failed: {0}")]
    Worker(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
