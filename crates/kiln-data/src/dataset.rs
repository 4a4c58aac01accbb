//! The two traits a data loader is built from: random access to samples and
//! collation of samples into a batch.

/// Random access to a fixed number of samples.
///
/// `Send + Sync` because the [`DataLoader`](crate::DataLoader) reads samples
/// on a background thread.
pub trait Dataset: Send + Sync {
    /// One sample.
    type Item: Send;

    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `index`, or `None` when `index >= self.len()`.
    fn get(&self, index: usize) -> Option<Self::Item>;
}

/// Turns a list of samples into one batch (for example, stacks images into a
/// single `Vec<f32>` ready to become a tensor).
pub trait Batcher<I>: Send + Sync {
    /// The collated batch.
    type Batch: Send;

    /// Collates `items` (never empty when called by the loader).
    fn batch(&self, items: Vec<I>) -> Self::Batch;
}

/// A dataset held in memory as a vector of cloneable samples.
///
/// A wrapper rather than `impl Dataset for Vec<T>`, because that impl would
/// shadow the slice's own `get` (returning `Option<&T>`) wherever the trait
/// is in scope.
///
/// ```
/// use kiln_data::{Dataset, VecDataset};
/// let d = VecDataset::new(vec![10, 20, 30]);
/// assert_eq!(d.len(), 3);
/// assert_eq!(d.get(1), Some(20));
/// assert_eq!(d.get(3), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VecDataset<T> {
    items: Vec<T>,
}

impl<T> VecDataset<T> {
    /// Wraps `items`.
    pub fn new(items: Vec<T>) -> Self {
        Self { items }
    }

    /// The samples.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Unwraps back into the vector.
    pub fn into_inner(self) -> Vec<T> {
        self.items
    }
}

impl<T> From<Vec<T>> for VecDataset<T> {
    fn from(items: Vec<T>) -> Self {
        Self::new(items)
    }
}

impl<T: Clone + Send + Sync> Dataset for VecDataset<T> {
    type Item = T;

    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, index: usize) -> Option<T> {
        self.items.get(index).cloned()
    }
}

/// A batcher that returns the samples as a `Vec`, unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct VecBatcher;

impl<I: Send> Batcher<I> for VecBatcher {
    type Batch = Vec<I>;

    fn batch(&self, items: Vec<I>) -> Vec<I> {
        items
    }
}
