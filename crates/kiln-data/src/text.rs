//! Character-level text datasets, and Moby-Dick vendored under `data/moby-dick/`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{DataError, Result};
use crate::files::{data_dir, find_file, read_maybe_gz, verify_sha256};
use crate::rng::Rng;

/// sha256 of the uncompressed `moby-dick.txt` (UTF-8, 1 204 997 bytes).
pub const MOBY_DICK_SHA256: &str = "fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240";

/// What [`TextDataset::decode`] writes for an id outside the vocabulary.
pub const UNKNOWN_ID_CHAR: char = char::REPLACEMENT_CHARACTER;

/// A text as a sequence of character ids, with its vocabulary.
///
/// The vocabulary is the sorted set of distinct `char`s (Unicode scalar
/// values) of the text; id `k` is the `k`-th smallest. Sorting makes the ids a
/// function of the character set alone, so they are stable across runs.
///
/// ```
/// use kiln_data::TextDataset;
/// let text = TextDataset::from_text("hello");
/// assert_eq!(text.vocab(), ['e', 'h', 'l', 'o']);
/// let ids = text.encode("hole")?;
/// assert_eq!(ids, [1, 3, 2, 0]);
/// assert_eq!(text.decode(&ids), "hole");
/// # Ok::<(), kiln_data::DataError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextDataset {
    vocab: Vec<char>,
    tokens: Vec<u32>,
}

impl TextDataset {
    /// Moby-Dick from `$KILN_DATA_DIR/moby-dick` (or the repository's
    /// `data/moby-dick`), checked against [`MOBY_DICK_SHA256`].
    pub fn moby_dick() -> Result<Self> {
        Self::moby_dick_from(data_dir().join("moby-dick"))
    }

    /// Moby-Dick from `dir`, holding `moby-dick.txt.gz` or `moby-dick.txt`.
    pub fn moby_dick_from(dir: impl AsRef<Path>) -> Result<Self> {
        let path = find_file(dir.as_ref(), "moby-dick.txt");
        let bytes = read_maybe_gz(&path)?;
        verify_sha256(&bytes, MOBY_DICK_SHA256, &path)?;
        Self::from_utf8(bytes, &path)
    }

    /// Any UTF-8 text file, gzipped or raw, without checksum verification.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_utf8(read_maybe_gz(path)?, path)
    }

    fn from_utf8(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        let text = String::from_utf8(bytes).map_err(|e| DataError::Malformed {
            path: path.to_path_buf(),
            reason: format!("not UTF-8: {}", e.utf8_error()),
        })?;
        Ok(Self::from_text(&text))
    }

    /// The dataset of `text`, with the vocabulary of its characters.
    pub fn from_text(text: &str) -> Self {
        let vocab: Vec<char> = text.chars().collect::<BTreeSet<_>>().into_iter().collect();
        // Every char of `text` is in `vocab` by construction, so `id_of`
        // always finds one; `filter_map` merely avoids an unreachable panic.
        let tokens = text.chars().filter_map(|c| id_of(&vocab, c)).collect();
        Self { vocab, tokens }
    }

    /// The distinct characters, sorted; a character's id is its index here.
    pub fn vocab(&self) -> &[char] {
        &self.vocab
    }

    /// Number of distinct characters.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The whole text as ids.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Length of the text in characters.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The ids of `s`'s characters. A character outside the vocabulary is an
    /// error ([`DataError::UnknownChar`]) rather than silently dropped, so a
    /// prompt is never quietly changed.
    pub fn encode(&self, s: &str) -> Result<Vec<u32>> {
        s.chars()
            .enumerate()
            .map(|(offset, ch)| id_of(&self.vocab, ch).ok_or(DataError::UnknownChar { ch, offset }))
            .collect()
    }

    /// The text of `ids`; an id outside the vocabulary (which a model can
    /// sample if its output layer is wider) becomes [`UNKNOWN_ID_CHAR`].
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&id| usize::try_from(id).ok().and_then(|i| self.vocab.get(i).copied()).unwrap_or(UNKNOWN_ID_CHAR))
            .collect()
    }

    /// Splits the text in two contiguous parts: the first `train_frac` of the
    /// characters and the rest (`split(0.9)` keeps the last 10% for
    /// validation). Both parts keep the full vocabulary, so ids agree.
    /// Contiguous rather than random so that validation windows never overlap
    /// training text.
    ///
    /// [`DataError::InvalidArgument`] unless both parts are non-empty.
    pub fn split(&self, train_frac: f64) -> Result<(Self, Self)> {
        // Truncation toward zero is the intended rounding of the split point.
        let cut = (train_frac * self.len() as f64) as usize;
        if !(train_frac > 0.0 && train_frac < 1.0) || cut == 0 || cut >= self.len() {
            return Err(DataError::InvalidArgument(format!(
                "split({train_frac}) of {} characters leaves an empty part",
                self.len()
            )));
        }
        let part = |tokens: &[u32]| Self { vocab: self.vocab.clone(), tokens: tokens.to_vec() };
        Ok((part(&self.tokens[..cut]), part(&self.tokens[cut..])))
    }

    /// `batch` windows of `seq_len` ids at uniformly random offsets, as
    /// `(inputs, targets)`, each `batch * seq_len` ids laid out window after
    /// window; `targets` is `inputs` shifted one character ahead, the
    /// next-character prediction task.
    ///
    /// ```
    /// use kiln_data::{Rng, TextDataset};
    /// let text = TextDataset::from_text("abcdefgh");
    /// let (x, y) = text.random_windows(2, 3, &mut Rng::new(0))?;
    /// assert_eq!((x.len(), y.len()), (6, 6));
    /// for (xi, yi) in x.iter().zip(&y) {
    ///     assert_eq!(xi + 1, *yi); // consecutive letters have consecutive ids
    /// }
    /// # Ok::<(), kiln_data::DataError>(())
    /// ```
    ///
    /// [`DataError::InvalidArgument`] if `batch` or `seq_len` is 0 or the text
    /// is not longer than `seq_len`.
    pub fn random_windows(&self, batch: usize, seq_len: usize, rng: &mut Rng) -> Result<(Vec<u32>, Vec<u32>)> {
        let starts = self.window_starts(batch, seq_len)?;
        let total = batch * seq_len;
        let (mut inputs, mut targets) = (Vec::with_capacity(total), Vec::with_capacity(total));
        for _ in 0..batch {
            let start = rng.index(starts);
            inputs.extend_from_slice(&self.tokens[start..start + seq_len]);
            targets.extend_from_slice(&self.tokens[start + 1..start + seq_len + 1]);
        }
        Ok((inputs, targets))
    }

    /// Number of valid window start offsets, after validating the arguments.
    fn window_starts(&self, batch: usize, seq_len: usize) -> Result<usize> {
        if batch == 0 || seq_len == 0 {
            return Err(DataError::InvalidArgument(format!(
                "random_windows needs batch > 0 and seq_len > 0, got {batch} and {seq_len}"
            )));
        }
        if batch.checked_mul(seq_len).is_none() {
            return Err(DataError::InvalidArgument(format!(
                "random_windows batch {batch} × seq_len {seq_len} overflows"
            )));
        }
        // A window needs seq_len inputs plus one more character for the last target.
        match self.len().checked_sub(seq_len) {
            Some(starts) if starts > 0 => Ok(starts),
            _ => Err(DataError::InvalidArgument(format!(
                "text of {} characters is too short for windows of {seq_len} (+1 target)",
                self.len()
            ))),
        }
    }
}

fn id_of(vocab: &[char], ch: char) -> Option<u32> {
    let index = vocab.binary_search(&ch).ok()?;
    u32::try_from(index).ok()
}
