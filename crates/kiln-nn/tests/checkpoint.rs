//! Checkpoints: bit-exact round trips, resuming training, and every kind of bad file rejected
//! with `Error::Checkpoint` while the model stays as it was.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kiln_core::{DType, Device, Error, Result, Tensor};
use kiln_nn::checkpoint::{self, load, load_state_dict, load_with_optimizer, save, save_with_optimizer};
use kiln_nn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use kiln_nn::{Module, ModuleExt};
use std::path::Path;

/// `x · w + b`, with a buffer of each remaining dtype to exercise the dtype mapping.
struct Tiny {
    w: Tensor,
    b: Tensor,
    seen: Tensor,
    mask: Tensor,
    half: Tensor,
}

impl Tiny {
    fn new(seed: u64) -> Tiny {
        kiln_core::manual_seed(seed);
        let cpu = Device::cpu();
        Tiny {
            w: Tensor::randn(&[3, 2], &cpu).unwrap().with_grad(),
            b: Tensor::randn(&[2], &cpu).unwrap().with_grad(),
            seen: Tensor::from_vec(vec![seed as u32, 7], &[2], &cpu).unwrap(),
            mask: Tensor::from_vec(vec![seed.is_multiple_of(2), true, false], &[3], &cpu).unwrap(),
            half: Tensor::randn(&[2, 2], &cpu).unwrap().to_dtype(DType::F16).unwrap(),
        }
    }

    fn snapshot(&self) -> Vec<(String, Vec<f64>)> {
        let mut all = self.named_parameters();
        all.extend(self.named_buffers());
        all.into_iter().map(|(n, t)| (n, t.to_f64_vec().unwrap())).collect()
    }
}

impl Module for Tiny {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        &x.matmul(&self.w)? + &self.b
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("w".into(), self.w.clone()), ("b".into(), self.b.clone())]
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        vec![("seen".into(), self.seen.clone()), ("mask".into(), self.mask.clone()), ("half".into(), self.half.clone())]
    }
}

/// A model with only `w`, to write files with a key missing.
struct OnlyW(Tensor);

impl Module for OnlyW {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.0)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("w".into(), self.0.clone())]
    }
}

fn train_step(model: &Tiny, opt: &mut dyn Optimizer, step: usize) {
    kiln_core::manual_seed(1000 + step as u64);
    let x = Tensor::randn(&[4, 3], &Device::cpu()).unwrap();
    let loss = model.forward(&x).unwrap().square().unwrap().mean_all().unwrap();
    loss.backward().unwrap();
    opt.step().unwrap();
    opt.zero_grad();
}

fn is_checkpoint_err<T: std::fmt::Debug>(r: Result<T>, what: &str) -> String {
    match r {
        Err(Error::Checkpoint { msg, .. }) => msg,
        other => panic!("{what}: expected Error::Checkpoint, got {other:?}"),
    }
}

#[test]
fn round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    let a = Tiny::new(1);
    save(&a, &path).unwrap();
    let b = Tiny::new(2);
    assert_ne!(a.snapshot(), b.snapshot());
    load(&b, &path).unwrap();
    assert_eq!(
        a.w.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.w.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(a.snapshot(), b.snapshot());
    assert_eq!(b.half.dtype(), DType::F16);
    assert!(b.w.requires_grad(), "parameters stay parameters");

    let sd = load_state_dict(&path).unwrap();
    let names: Vec<&str> = sd.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["b", "half", "mask", "seen", "w"]);
    assert!(sd.iter().all(|(_, t)| t.device().is_cpu()));
    let dtypes: Vec<DType> = sd.iter().map(|(_, t)| t.dtype()).collect();
    assert_eq!(dtypes, [DType::F32, DType::F16, DType::Bool, DType::U32, DType::F32]);
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn bytes_round_trip_like_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    let a = Tiny::new(5);
    save(&a, &path).unwrap();
    let bytes = checkpoint::save_to_bytes(&a).unwrap();
    let b = Tiny::new(6);
    checkpoint::load_from_bytes(&b, &bytes).unwrap();
    assert_eq!(a.snapshot(), b.snapshot());
    // The file loads from its bytes, and the async form's bytes load too.
    for (what, other) in [
        ("file", std::fs::read(&path).unwrap()),
        ("async", pollster::block_on(checkpoint::save_to_bytes_async(&a)).unwrap()),
    ] {
        let c = Tiny::new(7);
        checkpoint::load_from_bytes(&c, &other).unwrap();
        assert_eq!(a.snapshot(), c.snapshot(), "{what}");
    }
    // Bad bytes are rejected with the same checks as a bad file, naming no path, and leave
    // the model as it was.
    let before = b.snapshot();
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x10;
    let msg = is_checkpoint_err(checkpoint::load_from_bytes(&b, &flipped), "flipped byte");
    assert!(msg.contains("checksum"), "{msg}");
    let err = checkpoint::load_from_bytes(&b, &bytes[..20]).unwrap_err();
    assert!(matches!(&err, Error::Checkpoint { path, .. } if path == "<bytes>"), "{err}");
    let missing = is_checkpoint_err(
        checkpoint::load_from_bytes(&b, &checkpoint::save_to_bytes(&OnlyW(a.w.clone())).unwrap()),
        "missing keys",
    );
    assert!(missing.contains("missing key \"b\""), "{missing}");
    assert_eq!(b.snapshot(), before);
}

#[test]
fn files_are_standard_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    let a = Tiny::new(3);
    save(&a, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("w").unwrap();
    assert_eq!(w.dtype(), safetensors::Dtype::F32);
    assert_eq!(w.shape(), &[3, 2]);
    let first = f32::from_le_bytes(w.data()[..4].try_into().unwrap());
    assert_eq!(first, a.w.to_vec::<f32>().unwrap()[0]);
    // A file written by another tool (no kiln.* metadata, so no checksum) loads too.
    let foreign = dir.path().join("foreign.safetensors");
    let entries: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.dtype(), v.data().to_vec())).collect();
    write_raw(&foreign, &entries, None);
    let b = Tiny::new(4);
    load(&b, &foreign).unwrap();
    assert_eq!(a.snapshot(), b.snapshot());
}

fn write_raw(
    path: &Path,
    entries: &[(String, Vec<usize>, safetensors::Dtype, Vec<u8>)],
    metadata: Option<Vec<(&str, &str)>>,
) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = entries
        .iter()
        .map(|(n, s, d, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let md = metadata.map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    std::fs::write(path, safetensors::serialize(views, md).unwrap()).unwrap();
}

#[test]
fn resume_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.safetensors");
    let cfg = AdamConfig { lr: 0.05, weight_decay: 0.01, ..Default::default() };

    let a = Tiny::new(5);
    let mut opt_a = Adam::new(a.parameters(), cfg).unwrap();
    for s in 0..3 {
        train_step(&a, &mut opt_a, s);
    }
    save_with_optimizer(&a, &opt_a, &path).unwrap();
    for s in 3..5 {
        train_step(&a, &mut opt_a, s);
    }

    let b = Tiny::new(6);
    let mut opt_b = Adam::new(b.parameters(), cfg).unwrap();
    load_with_optimizer(&b, &mut opt_b, &path).unwrap();
    assert_eq!(opt_b.step_count(), 3);
    for s in 3..5 {
        train_step(&b, &mut opt_b, s);
    }
    assert_eq!(a.snapshot(), b.snapshot(), "resumed run diverged");
    assert_eq!(opt_b.step_count(), 5);

    // The same file also loads as a plain model checkpoint (optimizer entries ignored)...
    let c = Tiny::new(7);
    load(&c, &path).unwrap();
    // ...but a model-only file cannot resume an optimizer.
    let model_only = dir.path().join("model.safetensors");
    save(&c, &model_only).unwrap();
    let mut opt_c = Adam::new(c.parameters(), cfg).unwrap();
    let msg = is_checkpoint_err(load_with_optimizer(&c, &mut opt_c, &model_only), "model-only");
    assert!(msg.contains("kiln.step"), "{msg}");

    // Optimizer state for another optimizer kind is rejected before the model changes.
    let d = Tiny::new(8);
    let before = d.snapshot();
    let mut sgd = Sgd::new(d.parameters(), SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) }).unwrap();
    let msg = is_checkpoint_err(load_with_optimizer(&d, &mut sgd, &path), "wrong optimizer");
    assert!(msg.contains("exp_avg"), "{msg}");
    assert_eq!(d.snapshot(), before);
    assert_eq!(sgd.step_count(), 0);
}

#[test]
fn saving_overwrites_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    save(&Tiny::new(9), &path).unwrap();
    let m = Tiny::new(10);
    save(&m, &path).unwrap();
    let n = Tiny::new(11);
    load(&n, &path).unwrap();
    assert_eq!(m.snapshot(), n.snapshot());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // A directory that does not exist is an I/O error, not a panic.
    assert!(matches!(save(&m, dir.path().join("nope/x.safetensors")), Err(Error::Io { .. })));
    assert!(matches!(load(&m, dir.path().join("absent.safetensors")), Err(Error::Io { .. })));
}

/// Asserts that loading `path` into `m` fails with `Error::Checkpoint` (whose message contains
/// `needle`), with and without an optimizer, and leaves `m` as it was (`before`).
fn assert_rejected(m: &Tiny, before: &[(String, Vec<f64>)], path: &Path, needle: &str, what: &str) {
    let msg = is_checkpoint_err(load(m, path), what);
    assert!(msg.contains(needle), "{what}: message {msg:?} lacks {needle:?}");
    let mut opt = Adam::new(m.parameters(), AdamConfig::default()).unwrap();
    is_checkpoint_err(load_with_optimizer(m, &mut opt, path), what);
    assert_eq!(opt.step_count(), 0);
    assert!(opt.state().is_empty());
    assert_eq!(m.snapshot(), before, "{what}: model changed");
}

/// Rewrites a same-sized file in place: truncating and rewriting thousands of times is slow on
/// some filesystems (block discards).
fn overwrite(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(mut f) if f.metadata().unwrap().len() == bytes.len() as u64 => f.write_all(bytes).unwrap(),
        _ => std::fs::write(path, bytes).unwrap(),
    }
}

#[test]
fn bad_files_are_rejected_and_leave_the_model_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let good_path = dir.path().join("good.safetensors");
    let src = Tiny::new(12);
    let mut opt = Adam::new(src.parameters(), AdamConfig::default()).unwrap();
    train_step(&src, &mut opt, 0);
    save_with_optimizer(&src, &opt, &good_path).unwrap();
    let good = std::fs::read(&good_path).unwrap();
    let p = |name: &str| dir.path().join(name);
    let m = Tiny::new(42);
    let before = m.snapshot();

    // Missing key: a file with only `w`.
    save(&OnlyW(Tensor::zeros(&[3, 2], &Device::cpu()).unwrap()), p("missing")).unwrap();
    assert_rejected(&m, &before, &p("missing"), "missing key \"b\"", "missing key");

    // Extra key.
    let mut named = load_state_dict(&good_path).unwrap();
    named.push(("extra".into(), Tensor::zeros(&[1], &Device::cpu()).unwrap()));
    checkpoint::save_state_dict(&named, p("extra")).unwrap();
    assert_rejected(&m, &before, &p("extra"), "unexpected key \"extra\"", "extra key");

    // Wrong shape.
    let swap = |name: &str, t: Tensor| -> Vec<(String, Tensor)> {
        load_state_dict(&good_path)
            .unwrap()
            .into_iter()
            .map(|(n, old)| if n == name { (n, t.clone()) } else { (n, old) })
            .collect()
    };
    checkpoint::save_state_dict(&swap("w", Tensor::zeros(&[2, 3], &Device::cpu()).unwrap()), p("shape")).unwrap();
    assert_rejected(&m, &before, &p("shape"), "key \"w\" has shape [2, 3]", "wrong shape");

    // Wrong dtype.
    checkpoint::save_state_dict(
        &swap("b", Tensor::zeros(&[2], &Device::cpu()).unwrap().to_dtype(DType::F64).unwrap()),
        p("dtype"),
    )
    .unwrap();
    assert_rejected(&m, &before, &p("dtype"), "key \"b\" has dtype", "wrong dtype");

    // A dtype Kiln has no tensors for (I64).
    write_raw(&p("i64"), &[("w".into(), vec![1], safetensors::Dtype::I64, vec![0; 8])], None);
    assert_rejected(&m, &before, &p("i64"), "I64", "unsupported dtype");

    // Truncated at every length.
    for len in (0..good.len()).step_by(7).chain([good.len() - 1]) {
        std::fs::write(p("trunc"), &good[..len]).unwrap();
        assert_rejected(&m, &before, &p("trunc"), "", &format!("truncated to {len}"));
    }

    // Random bytes, and text.
    let mut state = 0x1234_5678_9abc_def0u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(p("random"), &random).unwrap();
    assert_rejected(&m, &before, &p("random"), "not a valid safetensors file", "random bytes");
    std::fs::write(p("text"), b"this is not a checkpoint at all, just some text").unwrap();
    assert_rejected(&m, &before, &p("text"), "not a valid safetensors file", "text");
    std::fs::write(p("empty"), b"").unwrap();
    assert_rejected(&m, &before, &p("empty"), "", "empty file");

    // Every single bit flip in the length prefix and the JSON header.
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    for byte in 0..header_end {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[byte] ^= 1 << bit;
            overwrite(&p("flip"), &bad);
            assert_rejected(&m, &before, &p("flip"), "", &format!("header bit {bit} of byte {byte} flipped"));
        }
    }

    // Bit flips in the tensor data are caught by the checksum.
    for byte in (header_end..good.len()).step_by(5) {
        let mut bad = good.clone();
        bad[byte] ^= 0x10;
        overwrite(&p("flip"), &bad);
        assert_rejected(&m, &before, &p("flip"), "checksum", &format!("data byte {byte} flipped"));
    }

    // The good file still loads after all that.
    assert_ne!(m.snapshot(), src.snapshot());
    load(&m, &good_path).unwrap();
    assert_eq!(m.snapshot(), src.snapshot());
}

#[test]
fn gpu_model_round_trip() {
    let Some(gpu) = kiln_testkit::gpu("gpu_model_round_trip") else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpu.safetensors");
    let on_gpu = |t: &Tensor| t.to(&gpu).unwrap().detach();
    let cpu_model = Tiny::new(20);
    let a = OnlyW(on_gpu(&cpu_model.w).with_grad());
    let mut opt = Adam::new(vec![a.0.clone()], AdamConfig::default()).unwrap();
    let x = Tensor::randn(&[4, 3], &gpu).unwrap();
    a.forward(&x).unwrap().square().unwrap().mean_all().unwrap().backward().unwrap();
    opt.step().unwrap();
    save_with_optimizer(&a, &opt, &path).unwrap();

    let b = OnlyW(Tensor::zeros(&[3, 2], &gpu).unwrap().with_grad());
    let mut opt_b = Adam::new(vec![b.0.clone()], AdamConfig::default()).unwrap();
    load_with_optimizer(&b, &mut opt_b, &path).unwrap();
    assert!(b.0.device().is_gpu());
    assert_eq!(a.0.to_vec::<f32>().unwrap(), b.0.to_vec::<f32>().unwrap());
    let state = opt_b.state();
    assert!(state.iter().filter(|(n, _)| n != "0.step").all(|(_, t)| t.device().is_gpu()));
}
