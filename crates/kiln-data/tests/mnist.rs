//! The vendored MNIST files: shape, checksums, and batching them.

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln_data::{DataError, DataLoader, Dataset, MNIST_PIXELS, Mnist, MnistBatcher, Split, data_dir, normalize_pixel};

// Decompressing and hashing the 47 MB training set once per test binary.
fn train() -> &'static Mnist {
    static TRAIN: OnceLock<Mnist> = OnceLock::new();
    TRAIN.get_or_init(|| Mnist::train().expect("vendored MNIST train set loads"))
}

fn test_set() -> &'static Mnist {
    static TEST: OnceLock<Mnist> = OnceLock::new();
    TEST.get_or_init(|| Mnist::test().expect("vendored MNIST test set loads"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-data-mnist-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn assert_well_formed(m: &Mnist, n: usize) {
    assert_eq!(m.len(), n);
    assert_eq!(m.images().len(), n * 28 * 28);
    assert_eq!(m.labels().len(), n);
    let mut counts = [0usize; 10];
    for &l in m.labels() {
        counts[usize::from(l)] += 1; // panics if a label is >= 10
    }
    // Every digit is well represented (each is roughly a tenth of the set).
    assert!(counts.iter().all(|&c| c > n / 20), "{counts:?}");
}

#[test]
fn train_set_is_60000_labelled_28x28_images() {
    assert_well_formed(train(), 60_000);
    // The first training digit is a 5, famously.
    assert_eq!(train().label(0), Some(5));
}

#[test]
fn test_set_is_10000_labelled_28x28_images() {
    assert_well_formed(test_set(), 10_000);
    assert_eq!(test_set().label(0), Some(7));
}

#[test]
fn accessors_are_bounds_checked() {
    let m = test_set();
    assert!(m.image(9_999).is_some());
    assert_eq!(m.image(10_000), None);
    assert_eq!(m.label(10_000), None);
    assert_eq!(m.image(usize::MAX), None);
    assert_eq!(m.get(10_000), None);
    let (start, end) = (5, 3);
    assert!(m.slice(start..end).is_err(), "reversed range");
    assert!(m.slice(0..10_001).is_err());
}

#[test]
fn slice_and_take_copy_the_right_images() {
    let m = test_set();
    let s = m.slice(100..110).expect("in range");
    assert_eq!(s.len(), 10);
    assert_eq!(s.image(0), m.image(100));
    assert_eq!(s.label(9), m.label(109));
    let t = m.take(5);
    assert_eq!((t.len(), t.image(4)), (5, m.image(4)));
    assert_eq!(m.take(1_000_000).len(), 10_000);
}

#[test]
fn image_f32_is_normalised() {
    let m = test_set();
    let pixels = m.image_f32(0).expect("in range");
    assert_eq!(pixels.len(), MNIST_PIXELS);
    let background = (0.0 - 0.1307) / 0.3081;
    assert!((pixels[0] - background).abs() < 1e-6);
    assert!((normalize_pixel(255) - (1.0 - 0.1307) / 0.3081).abs() < 1e-6);
    // The normalised training set has roughly zero mean and unit variance.
    let sample = train().take(5_000);
    let xs: Vec<f32> = sample.images().iter().map(|&p| normalize_pixel(p)).collect();
    let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    assert!(mean.abs() < 0.05 && (var.sqrt() - 1.0).abs() < 0.05, "{mean} {var}");
}

#[test]
fn modified_copy_fails_checksum() {
    let dir = scratch("checksum");
    let src = data_dir().join("mnist");
    std::fs::copy(src.join("t10k-images-idx3-ubyte.gz"), dir.join("t10k-images-idx3-ubyte.gz")).expect("copy images");
    // An uncompressed labels file with one label changed: still valid IDX,
    // so only the checksum can catch it.
    let mut labels = kiln_data::read_idx(src.join("t10k-labels-idx1-ubyte.gz")).expect("labels");
    labels.data[17] = (labels.data[17] + 1) % 10;
    let mut raw = labels.magic.to_be_bytes().to_vec();
    raw.extend((labels.data.len() as u32).to_be_bytes());
    raw.extend(&labels.data);
    let path = dir.join("t10k-labels-idx1-ubyte");
    std::fs::write(&path, raw).expect("write modified labels");

    match Mnist::load_from(&dir, Split::Test) {
        Err(err @ DataError::Checksum { .. }) => {
            assert!(err.to_string().contains("t10k-labels-idx1-ubyte"), "{err}");
        }
        other => panic!("expected Checksum, got {other:?}"),
    }
    // Without checksum verification the same files load fine.
    let loose = Mnist::from_files(dir.join("t10k-images-idx3-ubyte.gz"), &path).expect("loads");
    assert_eq!(loose.len(), 10_000);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_directory_is_an_io_error_naming_the_file() {
    let err = Mnist::load_from("/nonexistent/kiln", Split::Train).expect_err("no such dir");
    assert!(matches!(err, DataError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/kiln/train-labels-idx1-ubyte"), "{err}");
}

#[test]
fn swapped_files_are_bad_magic() {
    let src = data_dir().join("mnist");
    let labels = src.join("t10k-labels-idx1-ubyte.gz");
    let err = Mnist::from_files(&labels, &labels).expect_err("labels are not images");
    assert!(matches!(err, DataError::BadMagic { found: 0x801, .. }), "{err:?}");
}

#[test]
fn from_parts_checks_sizes_and_labels() {
    assert!(Mnist::from_parts(vec![0; 784 * 2], vec![1, 2]).is_ok());
    assert!(matches!(Mnist::from_parts(vec![0; 783], vec![1]), Err(DataError::Mismatch(_))));
    assert!(Mnist::from_parts(vec![0; 784], vec![10]).is_err());
}

#[test]
fn loader_batches_match_the_dataset() {
    let m = test_set().take(1_000);
    let loader = DataLoader::new(m.clone(), MnistBatcher, 128).expect("batch size > 0").shuffle(3);
    assert_eq!(loader.len(), 8);
    let order = loader.indices(0);
    let mut seen = 0;
    for (b, batch) in loader.epoch(0).enumerate() {
        let batch = batch.expect("batch");
        let expected = if b < 7 { 128 } else { 1_000 - 7 * 128 };
        assert_eq!(batch.size, expected);
        assert_eq!(batch.images.len(), expected * MNIST_PIXELS);
        assert_eq!(batch.labels.len(), expected);
        for k in 0..batch.size {
            let i = order[seen + k];
            assert_eq!(batch.labels[k], u32::from(m.labels()[i]));
            let img = m.image_f32(i).expect("in range");
            assert_eq!(&batch.images[k * MNIST_PIXELS..(k + 1) * MNIST_PIXELS], img.as_slice());
        }
        seen += batch.size;
    }
    assert_eq!(seen, 1_000);
}
