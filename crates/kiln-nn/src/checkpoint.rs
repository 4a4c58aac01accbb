//! Checkpoints in the safetensors format: a model's parameters and buffers under their
//! `named_parameters` / `named_buffers` names, optionally an optimizer's state under
//! `"optimizer.<name>"` with its step counter in the header metadata (`"kiln.step"`).
//!
//! Files are standard safetensors, readable by `safetensors.torch.load_file`. Kiln also writes
//! `"kiln.version"` and a `"kiln.checksum"` over the metadata, names, dtypes, shapes and bytes,
//! so that a flipped bit anywhere is caught; files from other tools (no `kiln.*` keys) load
//! without it.
//!
//! Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the
//! directory): a crash leaves the old checkpoint or the new one, never a torn file. Loads check
//! everything — keys, shapes, dtypes, the file's integrity — before touching the model, and
//! report problems as [`Error::Checkpoint`] naming the keys.
//!
//! ```
//! # use kiln_core::{Device, Result, Tensor};
//! # use kiln_nn::Module;
//! struct Scale { w: Tensor }
//! impl Module for Scale {
//!     fn forward(&self, x: &Tensor) -> Result<Tensor> { x * &self.w }
//!     fn named_parameters(&self) -> Vec<(String, Tensor)> { vec![("w".into(), self.w.clone())] }
//! }
//! let dir = std::env::temp_dir().join(format!("kiln-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("scale.safetensors");
//! let a = Scale { w: Tensor::from_vec(vec![1.5f32, 2.0], &[2], &Device::cpu()).unwrap().with_grad() };
//! kiln_nn::checkpoint::save(&a, &path).unwrap();
//! let b = Scale { w: Tensor::zeros(&[2], &Device::cpu()).unwrap().with_grad() };
//! kiln_nn::checkpoint::load(&b, &path).unwrap();
//! assert_eq!(b.w.to_vec::<f32>().unwrap(), vec![1.5, 2.0]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use crate::Module;
use crate::optim::Optimizer;
use kiln_core::{DType, Device, Error, HostData, Result, Tensor};
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Key prefix of optimizer state entries.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";
/// Metadata key holding the optimizer's step counter.
pub const STEP_KEY: &str = "kiln.step";
const VERSION_KEY: &str = "kiln.version";
const CHECKSUM_KEY: &str = "kiln.checksum";

fn ckpt_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.display().to_string(), msg: msg.into() }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), msg: e.to_string() }
}

/// Writes `model`'s parameters and buffers to `path`.
pub fn save(model: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    write(path.as_ref(), model_entries(model), None)
}

/// Writes `model` plus `optimizer`'s state (`"optimizer.<name>"`) and step counter, everything a
/// run needs to resume where it stopped.
pub fn save_with_optimizer(model: &dyn Module, optimizer: &dyn Optimizer, path: impl AsRef<Path>) -> Result<()> {
    let mut named = model_entries(model);
    named.extend(optimizer.state().into_iter().map(|(n, t)| (format!("{OPTIMIZER_PREFIX}{n}"), t)));
    write(path.as_ref(), named, Some(optimizer.step_count()))
}

/// Writes arbitrary named tensors (the counterpart of [`load_state_dict`]).
pub fn save_state_dict(named: &[(String, Tensor)], path: impl AsRef<Path>) -> Result<()> {
    write(path.as_ref(), named.to_vec(), None)
}

/// The bytes of the safetensors file [`save`] would write: for a browser, which has no file
/// system, or to send a model over a network. Reads GPU tensors back, blocking: in a browser use
/// [`save_to_bytes_async`].
pub fn save_to_bytes(model: &dyn Module) -> Result<Vec<u8>> {
    let entries = model_entries(model).into_iter().map(|(n, t)| Entry::from_tensor(n, &t)).collect::<Result<_>>()?;
    encode(BYTES, entries, None)
}

/// [`save_to_bytes`] without blocking the calling task (GPU tensors are read back asynchronously).
pub async fn save_to_bytes_async(model: &dyn Module) -> Result<Vec<u8>> {
    let mut entries = Vec::new();
    for (name, t) in model_entries(model) {
        let (dtype, bytes) = host_to_bytes(&t.to_host_async().await?);
        entries.push(Entry { name, dtype, shape: t.shape().to_vec(), bytes });
    }
    encode(BYTES, entries, None)
}

/// [`load`] from the bytes of a safetensors file (what [`save_to_bytes`] returns, or a file a
/// page fetched), with the same checks; on any error the model is unchanged.
pub fn load_from_bytes(model: &dyn Module, bytes: &[u8]) -> Result<()> {
    let path = Path::new(BYTES);
    let file = parse(bytes, path)?;
    let plan = plan_model(model, &file, path)?;
    commit(plan)
}

/// What errors about in-memory checkpoints name in place of a path.
const BYTES: &str = "<bytes>";

/// Loads `path` into `model`'s parameters and buffers, each onto the device it already lives on.
/// Every key of the model must be in the file with the same shape and dtype, and the file may
/// hold no others (optimizer entries are ignored). On any error the model is unchanged.
pub fn load(model: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let file = read(path)?;
    let plan = plan_model(model, &file, path)?;
    commit(plan)
}

/// Like [`load`], and also restores `optimizer`'s state and step counter from a file written
/// by [`save_with_optimizer`]. Model and optimizer are both checked before either changes.
pub fn load_with_optimizer(model: &dyn Module, optimizer: &mut dyn Optimizer, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let file = read(path)?;
    let plan = plan_model(model, &file, path)?;
    let step = match file.metadata.get(STEP_KEY) {
        Some(s) => {
            s.parse::<u64>().map_err(|_| ckpt_err(path, format!("metadata {STEP_KEY:?} is {s:?}, not a step count")))?
        }
        None => return Err(ckpt_err(path, format!("no optimizer state (metadata {STEP_KEY:?} is missing)"))),
    };
    let mut state = Vec::new();
    for e in &file.entries {
        if let Some(name) = e.name.strip_prefix(OPTIMIZER_PREFIX) {
            state.push((name.to_string(), e.to_tensor(&Device::cpu())?));
        }
    }
    optimizer.load_state(&state).map_err(|e| ckpt_err(path, format!("optimizer state: {e}")))?;
    optimizer.set_step_count(step);
    commit(plan)
}

/// Every tensor in `path`, on the CPU, sorted by name (optimizer entries included).
pub fn load_state_dict(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let file = read(path.as_ref())?;
    file.entries.iter().map(|e| Ok((e.name.clone(), e.to_tensor(&Device::cpu())?))).collect()
}

fn model_entries(model: &dyn Module) -> Vec<(String, Tensor)> {
    let mut named = model.named_parameters();
    named.extend(model.named_buffers());
    named
}

/// One tensor as stored: little-endian bytes.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Entry {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

impl Entry {
    fn from_tensor(name: String, t: &Tensor) -> Result<Entry> {
        let (dtype, bytes) = host_to_bytes(&t.to_host()?);
        Ok(Entry { name, dtype, shape: t.shape().to_vec(), bytes })
    }

    fn kiln_dtype(&self) -> DType {
        match self.dtype {
            Dtype::F16 => DType::F16,
            Dtype::F64 => DType::F64,
            Dtype::I32 => DType::I32,
            Dtype::U32 => DType::U32,
            Dtype::BOOL => DType::Bool,
            // `read` admits only the dtypes above and F32.
            _ => DType::F32,
        }
    }

    fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_host(bytes_to_host(self.kiln_dtype(), &self.bytes), &self.shape, device)
    }
}

fn host_to_bytes(data: &HostData) -> (Dtype, Vec<u8>) {
    fn flat<const N: usize, T: Copy>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        let mut out = Vec::with_capacity(v.len() * N);
        for &x in v {
            out.extend_from_slice(&f(x));
        }
        out
    }
    match data {
        HostData::F32(v) => (Dtype::F32, flat(v, f32::to_le_bytes)),
        HostData::F16(v) => (Dtype::F16, flat(v, |x| x.to_bits().to_le_bytes())),
        HostData::F64(v) => (Dtype::F64, flat(v, f64::to_le_bytes)),
        HostData::I32(v) => (Dtype::I32, flat(v, i32::to_le_bytes)),
        HostData::U32(v) => (Dtype::U32, flat(v, u32::to_le_bytes)),
        HostData::Bool(v) => (Dtype::BOOL, v.iter().map(|&b| b as u8).collect()),
    }
}

/// Decodes bytes whose length and (for bools) values `read` has already checked.
fn bytes_to_host(dtype: DType, bytes: &[u8]) -> HostData {
    fn words<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    match dtype {
        DType::F32 => HostData::F32(words(bytes, f32::from_le_bytes)),
        // Through f64, which holds every f16 exactly (NaN payloads become the canonical NaN).
        DType::F16 => HostData::from_f64(&words(bytes, |a| f16_bits_to_f64(u16::from_le_bytes(a))), DType::F16),
        DType::F64 => HostData::F64(words(bytes, f64::from_le_bytes)),
        DType::I32 => HostData::I32(words(bytes, i32::from_le_bytes)),
        DType::U32 => HostData::U32(words(bytes, u32::from_le_bytes)),
        DType::Bool => HostData::Bool(bytes.iter().map(|&b| b != 0).collect()),
    }
}

fn f16_bits_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let mant = (bits & 0x3ff) as f64;
    sign * match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + mant / 1024.0) * 2f64.powi(e - 15),
    }
}

/// A word-at-a-time multiplicative hash. Each step is a bijection of the state for a given
/// input word, so any single corrupted word (any flipped bit) always changes the result.
struct Checksum(u64);

impl Checksum {
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.word(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            self.word(u64::from_le_bytes(a));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut a = [0u8; 8];
            a[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(a));
        }
    }

    /// Over the metadata (but the checksum itself) and every tensor, in name order so that
    /// the file layout does not matter.
    fn of(metadata: &HashMap<String, String>, entries: &[&Entry]) -> String {
        let mut h = Checksum(0x6b69_6c6e_2e63_6b70);
        let mut keys: Vec<&String> = metadata.keys().filter(|k| k.as_str() != CHECKSUM_KEY).collect();
        keys.sort();
        for k in keys {
            h.bytes(k.as_bytes());
            h.bytes(metadata[k].as_bytes());
        }
        let mut sorted: Vec<&&Entry> = entries.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for e in sorted {
            h.bytes(e.name.as_bytes());
            h.bytes(format!("{:?}", e.dtype).as_bytes());
            h.word(e.shape.len() as u64);
            for &d in &e.shape {
                h.word(d as u64);
            }
            h.bytes(&e.bytes);
        }
        format!("{:016x}", h.0)
    }
}

/// Refuses two tensors of one name.
fn check_unique<'a>(path: &Path, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(ckpt_err(path, format!("two tensors are named {n:?}")));
        }
    }
    Ok(())
}

/// The header metadata of a checkpoint of `entries`: format, version, step, checksum.
fn metadata_for(entries: &[&Entry], step: Option<u64>) -> HashMap<String, String> {
    let mut metadata =
        HashMap::from([("format".to_string(), "pt".to_string()), (VERSION_KEY.to_string(), "1".to_string())]);
    if let Some(step) = step {
        metadata.insert(STEP_KEY.to_string(), step.to_string());
    }
    metadata.insert(CHECKSUM_KEY.to_string(), Checksum::of(&metadata, entries));
    metadata
}

/// A whole checkpoint file's bytes, in memory.
fn encode(label: &str, entries: Vec<Entry>, step: Option<u64>) -> Result<Vec<u8>> {
    let path = Path::new(label);
    check_unique(path, entries.iter().map(|e| e.name.as_str()))?;
    let refs: Vec<&Entry> = entries.iter().collect();
    let metadata = metadata_for(&refs, step);
    safetensors::serialize(refs.iter().map(|e| (e.name.as_str(), *e)), Some(metadata))
        .map_err(|e| ckpt_err(path, format!("cannot serialize: {e}")))
}

fn write(path: &Path, named: Vec<(String, Tensor)>, step: Option<u64>) -> Result<()> {
    if cfg!(target_arch = "wasm32") {
        return Err(Error::Io {
            path: path.display().to_string(),
            msg: "a browser has no file system: use save_to_bytes_async".into(),
        });
    }
    check_unique(path, named.iter().map(|(n, _)| n.as_str()))?;
    let entries: Vec<Entry> = named.into_iter().map(|(n, t)| Entry::from_tensor(n, &t)).collect::<Result<_>>()?;
    let refs: Vec<&Entry> = entries.iter().collect();
    let metadata = metadata_for(&refs, step);

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| ckpt_err(path, "not a file path"))?;
    remove_stale_temps(&dir, &file_name.to_string_lossy());
    let (tmp, _reserved) = reserve_temp(&dir, &file_name.to_string_lossy()).map_err(|e| io_err(path, e))?;
    let result = (|| -> Result<()> {
        safetensors::serialize_to_file(refs.iter().map(|e| (e.name.as_str(), *e)), Some(metadata), &tmp)
            .map_err(|e| ckpt_err(path, format!("cannot serialize: {e}")))?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
        sync_dir(&dir).map_err(|e| io_err(&dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The writer's process id if `file` is one of our temporaries for checkpoint `name`
/// (`.{name}.{pid}.{n}.tmp`, as [`reserve_temp`] names them).
fn temp_owner(file: &str, name: &str) -> Option<u32> {
    let rest = file.strip_prefix('.')?.strip_prefix(name)?.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (pid, n) = rest.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// Is process `pid` gone? Only answered where `/proc` shows processes (Linux); elsewhere a
/// temporary counts as stale once it is an hour old, far longer than any save takes.
fn writer_gone(pid: u32, tmp: &Path) -> bool {
    if Path::new("/proc/self").exists() {
        return !Path::new(&format!("/proc/{pid}")).exists();
    }
    let age = std::fs::metadata(tmp).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
    age.is_some_and(|a| a > std::time::Duration::from_secs(3600))
}

/// Deletes the temporaries that earlier saves of this checkpoint left when they were killed
/// mid-write. Only our own naming pattern for this file name, and only where the process that
/// wrote it is gone: a concurrent save (this process's or another's) keeps its file. Best
/// effort: a failure here must not fail the save.
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let me = std::process::id();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file.to_str().and_then(|f| temp_owner(f, name)) else { continue };
        let p = entry.path();
        if pid != me && entry.file_type().is_ok_and(|t| t.is_file()) && writer_gone(pid, &p) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Creates an empty, uniquely named file next to the target so that concurrent saves never
/// share a temporary.
fn reserve_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes the rename itself durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; its renames are journaled by NTFS.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// A parsed, verified checkpoint.
struct FileContents {
    entries: Vec<Entry>,
    metadata: HashMap<String, String>,
}

fn read(path: &Path) -> Result<FileContents> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    parse(&bytes, path)
}

/// Parses and verifies a checkpoint file's bytes; errors name `path`.
fn parse(bytes: &[u8], path: &Path) -> Result<FileContents> {
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| ckpt_err(path, format!("not a valid safetensors file: {e}")))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| ckpt_err(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut entries = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let dtype = view.dtype();
        if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::F64 | Dtype::I32 | Dtype::U32 | Dtype::BOOL) {
            return Err(ckpt_err(path, format!("key {name:?} has dtype {dtype:?}, which Kiln tensors cannot hold")));
        }
        entries.push(Entry { name, dtype, shape: view.shape().to_vec(), bytes: view.data().to_vec() });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let written_by_kiln = metadata.keys().any(|k| k.starts_with("kiln."));
    match metadata.get(CHECKSUM_KEY) {
        Some(sum) => {
            let refs: Vec<&Entry> = entries.iter().collect();
            if *sum != Checksum::of(&metadata, &refs) {
                return Err(ckpt_err(path, "checksum mismatch: the file is corrupt"));
            }
        }
        None if written_by_kiln => {
            return Err(ckpt_err(path, format!("metadata {CHECKSUM_KEY:?} is missing: the file is corrupt")));
        }
        None => {}
    }
    // After the checksum, so that a corrupt file is reported as such.
    if let Some(e) = entries.iter().find(|e| e.dtype == Dtype::BOOL && e.bytes.iter().any(|&b| b > 1)) {
        return Err(ckpt_err(path, format!("key {:?}: bool tensor holds bytes other than 0 and 1", e.name)));
    }
    Ok(FileContents { entries, metadata })
}

/// The model's tensors paired with new values already on their devices.
struct Plan {
    assignments: Vec<(Tensor, Tensor)>,
}

fn plan_model(model: &dyn Module, file: &FileContents, path: &Path) -> Result<Plan> {
    let expected = model_entries(model);
    let by_name: HashMap<&str, &Entry> = file.entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    let mut matched = Vec::new();
    for (name, t) in &expected {
        if !names.insert(name.as_str()) {
            problems.push(format!("the model names two tensors {name:?}"));
            continue;
        }
        let Some(e) = by_name.get(name.as_str()) else {
            problems.push(format!("missing key {name:?}"));
            continue;
        };
        if e.shape != t.shape() {
            problems.push(format!(
                "key {name:?} has shape {:?} in the file, the model expects {:?}",
                e.shape,
                t.shape()
            ));
        } else if e.kiln_dtype() != t.dtype() {
            problems.push(format!(
                "key {name:?} has dtype {} in the file, the model expects {}",
                e.kiln_dtype(),
                t.dtype()
            ));
        } else {
            matched.push((t, *e));
        }
    }
    for e in &file.entries {
        if !e.name.starts_with(OPTIMIZER_PREFIX) && !names.contains(e.name.as_str()) {
            problems.push(format!("unexpected key {:?}", e.name));
        }
    }
    if !problems.is_empty() {
        return Err(ckpt_err(path, problems.join("; ")));
    }
    let mut assignments = Vec::with_capacity(matched.len());
    for (t, e) in matched {
        // Assigning a tensor its own data is a no-op that fails exactly when the real
        // assignment would (a view that does not own its storage): find out now, not halfway.
        t.set_data(t).map_err(|err| ckpt_err(path, format!("key {:?} cannot be assigned in place: {err}", e.name)))?;
        let value = e.to_tensor(t.device()).map_err(|err| ckpt_err(path, format!("key {:?}: {err}", e.name)))?;
        assignments.push((t.clone(), value));
    }
    Ok(Plan { assignments })
}

fn commit(plan: Plan) -> Result<()> {
    for (t, v) in &plan.assignments {
        t.set_data(v)?;
    }
    Ok(())
}
