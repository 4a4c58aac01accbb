//! MNIST handwritten digits, vendored under `data/mnist/` and checksummed.

use std::ops::Range;
use std::path::Path;

use crate::dataset::{Batcher, Dataset};
use crate::error::{DataError, Result};
use crate::files::{data_dir, find_file, read_maybe_gz, verify_sha256};
use crate::idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, parse_idx_named};

/// Image height and width in pixels.
pub const MNIST_SIDE: usize = 28;
/// Pixels per image.
pub const MNIST_PIXELS: usize = MNIST_SIDE * MNIST_SIDE;
/// Number of classes (digits 0 to 9).
pub const MNIST_CLASSES: usize = 10;
/// Mean of the training pixels scaled to `[0, 1]` (the customary constant).
pub const MNIST_MEAN: f32 = 0.1307;
/// Standard deviation of the training pixels scaled to `[0, 1]`.
pub const MNIST_STD: f32 = 0.3081;

/// sha256 of the uncompressed `train-images-idx3-ubyte`.
pub const TRAIN_IMAGES_SHA256: &str = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db";
/// sha256 of the uncompressed `train-labels-idx1-ubyte`.
pub const TRAIN_LABELS_SHA256: &str = "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5";
/// sha256 of the uncompressed `t10k-images-idx3-ubyte`.
pub const TEST_IMAGES_SHA256: &str = "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7";
/// sha256 of the uncompressed `t10k-labels-idx1-ubyte`.
pub const TEST_LABELS_SHA256: &str = "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2";

/// Which half of MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// 60 000 training images.
    Train,
    /// 10 000 test images.
    Test,
}

impl Split {
    /// File names (without `.gz`) and sha256 of the images and labels files.
    fn files(self) -> [(&'static str, &'static str); 2] {
        match self {
            Split::Train => {
                [("train-images-idx3-ubyte", TRAIN_IMAGES_SHA256), ("train-labels-idx1-ubyte", TRAIN_LABELS_SHA256)]
            }
            Split::Test => {
                [("t10k-images-idx3-ubyte", TEST_IMAGES_SHA256), ("t10k-labels-idx1-ubyte", TEST_LABELS_SHA256)]
            }
        }
    }
}

/// `(x / 255 - MNIST_MEAN) / MNIST_STD`: the usual MNIST input normalisation.
pub fn normalize_pixel(x: u8) -> f32 {
    (f32::from(x) / 255.0 - MNIST_MEAN) / MNIST_STD
}

/// MNIST images (28×28 u8, row-major, one after another) and their labels.
///
/// The fields are private so that `images.len() == 784 * labels.len()` always holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mnist {
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl Mnist {
    /// The 60 000 training images from the vendored data (see [`data_dir`](crate::data_dir)).
    pub fn train() -> Result<Self> {
        Self::load(Split::Train)
    }

    /// The 10 000 test images from the vendored data.
    pub fn test() -> Result<Self> {
        Self::load(Split::Test)
    }

    /// One split from `$KILN_DATA_DIR/mnist` (or the repository's `data/mnist`).
    pub fn load(split: Split) -> Result<Self> {
        Self::load_from(data_dir().join("mnist"), split)
    }

    /// One split from `dir`, a directory holding the IDX files as
    /// `<name>.gz` or uncompressed `<name>`. The uncompressed content must
    /// match the recorded sha256, else [`DataError::Checksum`].
    pub fn load_from(dir: impl AsRef<Path>, split: Split) -> Result<Self> {
        let dir = dir.as_ref();
        let [(images_name, images_sha), (labels_name, labels_sha)] = split.files();
        // Labels first: they are small, so a wrong directory fails fast.
        let labels_path = find_file(dir, labels_name);
        let labels = read_checked(&labels_path, labels_sha)?;
        let images_path = find_file(dir, images_name);
        let images = read_checked(&images_path, images_sha)?;
        Self::from_idx_bytes(&images, &images_path, &labels, &labels_path)
    }

    /// Parses IDX image and label files without checksum verification, for
    /// MNIST-format data other than the vendored files (e.g. Fashion-MNIST).
    pub fn from_files(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Self> {
        let (images_path, labels_path) = (images.as_ref(), labels.as_ref());
        let images = read_maybe_gz(images_path)?;
        let labels = read_maybe_gz(labels_path)?;
        Self::from_idx_bytes(&images, images_path, &labels, labels_path)
    }

    fn from_idx_bytes(images: &[u8], images_path: &Path, labels: &[u8], labels_path: &Path) -> Result<Self> {
        let images = parse_idx_named(images, images_path)?;
        if images.magic != IDX_IMAGES_MAGIC {
            return Err(DataError::BadMagic {
                path: images_path.to_path_buf(),
                found: images.magic,
                expected: "0x00000803 (u8 images)",
            });
        }
        if images.dims[1..] != [MNIST_SIDE, MNIST_SIDE] {
            return Err(DataError::Malformed {
                path: images_path.to_path_buf(),
                reason: format!("images are {:?}, expected [n, 28, 28]", images.dims),
            });
        }
        let labels = parse_idx_named(labels, labels_path)?;
        if labels.magic != IDX_LABELS_MAGIC {
            return Err(DataError::BadMagic {
                path: labels_path.to_path_buf(),
                found: labels.magic,
                expected: "0x00000801 (u8 labels)",
            });
        }
        if let Some(&bad) = labels.data.iter().find(|&&l| usize::from(l) >= MNIST_CLASSES) {
            return Err(DataError::Malformed {
                path: labels_path.to_path_buf(),
                reason: format!("label {bad} is not a digit 0-9"),
            });
        }
        if images.dims[0] != labels.dims[0] {
            return Err(DataError::Mismatch(format!(
                "{} holds {} images but {} holds {} labels",
                images_path.display(),
                images.dims[0],
                labels_path.display(),
                labels.dims[0]
            )));
        }
        Ok(Self { images: images.data, labels: labels.data })
    }

    /// Builds a dataset from raw parts: `images` holds `labels.len()` images
    /// of 784 bytes each; every label must be below 10.
    pub fn from_parts(images: Vec<u8>, labels: Vec<u8>) -> Result<Self> {
        if Some(images.len()) != labels.len().checked_mul(MNIST_PIXELS) {
            return Err(DataError::Mismatch(format!(
                "{} image bytes do not make {} images of {MNIST_PIXELS} pixels",
                images.len(),
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| usize::from(l) >= MNIST_CLASSES) {
            return Err(DataError::InvalidArgument(format!("label {bad} is not a digit 0-9")));
        }
        Ok(Self { images, labels })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// All pixels, `len() * 784` bytes, image after image.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels, one per image, each in `0..10`.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The 784 pixels of image `i`, or `None` when out of range.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let start = i.checked_mul(MNIST_PIXELS)?;
        self.images.get(start..start.checked_add(MNIST_PIXELS)?)
    }

    /// The label of image `i`, or `None` when out of range.
    pub fn label(&self, i: usize) -> Option<u8> {
        self.labels.get(i).copied()
    }

    /// Image `i` as 784 normalised floats (see [`normalize_pixel`]).
    pub fn image_f32(&self, i: usize) -> Option<Vec<f32>> {
        Some(self.image(i)?.iter().copied().map(normalize_pixel).collect())
    }

    /// A copy of images `range`; [`DataError::InvalidArgument`] when the
    /// range is reversed or extends past `len()`.
    pub fn slice(&self, range: Range<usize>) -> Result<Self> {
        if range.start > range.end || range.end > self.len() {
            return Err(DataError::InvalidArgument(format!(
                "MNIST slice {range:?} out of bounds for {} images",
                self.len()
            )));
        }
        Ok(Self {
            images: self.images[range.start * MNIST_PIXELS..range.end * MNIST_PIXELS].to_vec(),
            labels: self.labels[range].to_vec(),
        })
    }

    /// A copy of the first `n` images (all of them if `n >= len()`).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Self { images: self.images[..n * MNIST_PIXELS].to_vec(), labels: self.labels[..n].to_vec() }
    }
}

fn read_checked(path: &Path, sha256: &str) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    verify_sha256(&bytes, sha256, path)?;
    Ok(bytes)
}

/// One MNIST sample: raw pixels and label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnistItem {
    /// 784 pixels, row-major, 0 = background.
    pub image: [u8; MNIST_PIXELS],
    /// The digit, `0..10`.
    pub label: u8,
}

impl Dataset for Mnist {
    type Item = MnistItem;

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn get(&self, index: usize) -> Option<MnistItem> {
        let image = self.image(index)?.try_into().ok()?;
        Some(MnistItem { image, label: self.label(index)? })
    }
}

/// A batch of MNIST samples, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct MnistBatch {
    /// `size * 784` normalised pixels, image after image (shape `[size, 1, 28, 28]`
    /// or `[size, 784]`, as the model wants).
    pub images: Vec<f32>,
    /// `size` class indices, each in `0..10`.
    pub labels: Vec<u32>,
    /// Number of samples in this batch (the last batch may be short).
    pub size: usize,
}

/// Collates [`MnistItem`]s into an [`MnistBatch`], normalising pixels with
/// [`normalize_pixel`].
///
/// ```
/// use kiln_data::{Batcher, Dataset, Mnist, MnistBatcher};
/// let mnist = Mnist::from_parts(vec![0; 2 * 784], vec![3, 7])?;
/// let items: Vec<_> = (0..2).filter_map(|i| mnist.get(i)).collect();
/// let batch = MnistBatcher.batch(items);
/// assert_eq!((batch.size, batch.images.len()), (2, 2 * 784));
/// assert_eq!(batch.labels, [3, 7]);
/// # Ok::<(), kiln_data::DataError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MnistBatcher;

impl Batcher<MnistItem> for MnistBatcher {
    type Batch = MnistBatch;

    fn batch(&self, items: Vec<MnistItem>) -> MnistBatch {
        // A table makes normalisation a lookup, and guarantees every pixel
        // value maps to exactly the same float as `normalize_pixel`.
        let table: [f32; 256] = std::array::from_fn(|v| normalize_pixel(v as u8));
        let mut images = Vec::with_capacity(items.len() * MNIST_PIXELS);
        let mut labels = Vec::with_capacity(items.len());
        for item in &items {
            images.extend(item.image.iter().map(|&p| table[usize::from(p)]));
            labels.push(u32::from(item.label));
        }
        MnistBatch { images, labels, size: items.len() }
    }
}
