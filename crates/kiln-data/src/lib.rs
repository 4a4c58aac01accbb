//! Kiln's data pipeline: the vendored datasets (MNIST, Moby-Dick), a
//! [`Dataset`]/[`Batcher`] pair of traits, and a [`DataLoader`] that shuffles
//! reproducibly and prepares batches on a background thread.
//!
//! This crate depends on no other Kiln crate: batches are plain `Vec<f32>`,
//! `Vec<u32>` and `Vec<u8>`, which the training code turns into tensors.
//!
//! The vendored files live in the repository's `data/` directory; set
//! `KILN_DATA_DIR` to use a copy elsewhere. Every vendored file is checked
//! against a recorded sha256 when loaded.
//!
//! ```no_run
//! use kiln_data::{DataLoader, Mnist, MnistBatcher};
//! let loader = DataLoader::new(Mnist::train()?, MnistBatcher, 64)?.shuffle(0);
//! for epoch in 0..2 {
//!     for batch in loader.epoch(epoch) {
//!         let batch = batch?;
//!         // batch.images: 64 * 784 normalised f32, batch.labels: 64 u32
//!         # let _ = batch;
//!     }
//! }
//! # Ok::<(), kiln_data::DataError>(())
//! ```

mod dataset;
mod error;
mod files;
mod idx;
mod loader;
mod mnist;
mod rng;
mod shard;
mod text;

pub use dataset::{Batcher, Dataset, VecBatcher, VecDataset};
pub use error::{DataError, Result};
pub use files::{DATA_DIR_ENV, data_dir, sha256_hex};
pub use idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IdxArray, parse_idx, read_idx};
pub use loader::{DataLoader, Epoch};
pub use mnist::{
    MNIST_CLASSES, MNIST_MEAN, MNIST_PIXELS, MNIST_SIDE, MNIST_STD, Mnist, MnistBatch, MnistBatcher, MnistItem, Split,
    TEST_IMAGES_SHA256, TEST_LABELS_SHA256, TRAIN_IMAGES_SHA256, TRAIN_LABELS_SHA256, normalize_pixel,
};
pub use rng::Rng;
pub use shard::shard_range;
pub use text::{MOBY_DICK_SHA256, TextDataset, UNKNOWN_ID_CHAR};
