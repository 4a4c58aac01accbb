//! PyTorch state dicts, by name: load a safetensors file written by PyTorch
//! (`safetensors.torch.save_file(model.state_dict(), ..)`) or downloaded from a model hub into
//! any module, and write one that PyTorch's twin of the module loads with
//! `load_state_dict(strict=True)`.
//!
//! Kiln's layers use PyTorch's key names and layouts (Linear `weight [out, in]` + `bias`, Conv
//! `weight [out, in/groups, k..]`, ConvTranspose2d `weight [in, out, kh, kw]`, LayerNorm,
//! RMSNorm, GroupNorm, Embedding, BatchNorm `running_mean`/`running_var`), so most keys map one
//! to one. Two differences are bridged here:
//!
//! - **MultiheadAttention**: Kiln's [`MultiHeadAttention`](crate::MultiHeadAttention) keeps
//!   `q_proj`, `k_proj`, `v_proj` as separate Linear layers; PyTorch's `nn.MultiheadAttention`
//!   packs them as `in_proj_weight [3d, d]` and `in_proj_bias [3d]` (q, k, v in that order).
//!   Loading: a module key `P.q_proj.weight` missing from the file is taken from rows `0..d` of
//!   `P.in_proj_weight` (k: `d..2d`, v: `2d..3d`; likewise biases), or from `P.q_proj_weight`
//!   (PyTorch's name when `kdim`/`vdim` differ). Saving ([`state_dict`], [`save`]): wherever a
//!   module has the four siblings `P.q_proj`, `P.k_proj`, `P.v_proj` and `P.out_proj`, the three
//!   input projections are written packed. A model whose PyTorch twin has separate `q_proj` /
//!   `k_proj` / `v_proj` Linear layers *and* an `out_proj` (BART-style attention) should be saved
//!   with [`checkpoint::save`](crate::checkpoint::save) instead, which keeps Kiln's names.
//! - **BatchNorm's `num_batches_tracked`** (an int64 counter PyTorch uses only when
//!   `momentum=None`): Kiln's BatchNorm has a fixed momentum and no counter. Loading accepts and
//!   ignores `P.num_batches_tracked` next to a module's `P.running_mean`; saving does not write
//!   it, and PyTorch's BatchNorm fills in a missing counter itself, also under `strict=True`.
//!
//! Floating-point tensors (f16, bf16, f32, f64) are converted to the dtype of the module's
//! tensor; integer tensors (int64 included) to the module's i32/u32 when every value fits.
//! Files are memory-mapped: each tensor is decoded from the mapping straight into the buffer
//! that goes to the device, so a large checkpoint is not read into RAM first.
//!
//! ```no_run
//! # fn main() -> kiln_core::Result<()> {
//! # let device = kiln_core::Device::cpu();
//! use kiln_nn::torch::StateDict;
//! let model = kiln_nn::Linear::new(4, 2, true, &device)?;
//! // A checkpoint of `nn.Sequential(nn.Linear(4, 2))`: keys "0.weight", "0.bias".
//! let sd = StateDict::open("linear.safetensors")?.strip_prefix("0.");
//! kiln_nn::torch::load_state_dict(&model, &sd, true)?;
//! # Ok(()) }
//! ```

use crate::Module;
use kiln_core::{DType, Device, Error, HostData, Result, Tensor, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Named tensors as PyTorch stores them (dtype, shape, little-endian bytes), from a file
/// (memory-mapped) or from Kiln tensors. Keys can be renamed before loading.
#[derive(Clone)]
pub struct StateDict {
    tensors: BTreeMap<String, Raw>,
}

#[derive(Clone)]
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Bytes,
}

#[derive(Clone)]
enum Bytes {
    Mapped { map: Arc<Mmap>, start: usize, end: usize },
    Owned(Arc<Vec<u8>>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped { map, start, end } => &map[*start..*end],
            Bytes::Owned(v) => v,
        }
    }
}

/// What a non-strict load left out: module keys the state dict did not have (those tensors keep
/// their values) and state dict keys the module has no place for (PyTorch's `_IncompatibleKeys`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
}

fn file_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.display().to_string(), msg: msg.into() }
}

impl StateDict {
    /// Memory-maps a safetensors file and reads its header; tensor bytes are read only when
    /// loaded.
    pub fn open(path: impl AsRef<Path>) -> Result<StateDict> {
        let path = path.as_ref();
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Io { path: path.display().to_string(), msg: e.to_string() })?;
        // SAFETY: the mapping is read-only. If another process truncates or rewrites the file
        // while it is mapped, reads may see the new bytes or fault (SIGBUS); as with every
        // memory-mapped loader (PyTorch's `safe_open` included), a checkpoint must not be
        // modified while it is being loaded.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::Io { path: path.display().to_string(), msg: e.to_string() })?;
        // Validates the header: offsets inside the file, sizes matching dtype × shape.
        SafeTensors::deserialize(&map).map_err(|e| file_err(path, format!("not a valid safetensors file: {e}")))?;
        let (header_len, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| file_err(path, format!("not a valid safetensors file: {e}")))?;
        let data_start = 8 + header_len;
        let map = Arc::new(map);
        let tensors = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (s, e) = info.data_offsets;
                let bytes = Bytes::Mapped { map: Arc::clone(&map), start: data_start + s, end: data_start + e };
                (name, Raw { dtype: info.dtype, shape: info.shape.clone(), bytes })
            })
            .collect();
        Ok(StateDict { tensors })
    }

    /// A state dict of Kiln tensors (read back to the host once).
    pub fn from_tensors(named: &[(String, Tensor)]) -> Result<StateDict> {
        let mut tensors = BTreeMap::new();
        for (name, t) in named {
            let (dtype, bytes) = host_bytes(&t.to_host()?);
            let raw = Raw { dtype, shape: t.shape().to_vec(), bytes: Bytes::Owned(Arc::new(bytes)) };
            if tensors.insert(name.clone(), raw).is_some() {
                return Err(Error::invalid("StateDict::from_tensors", format!("two tensors are named {name:?}")));
            }
        }
        Ok(StateDict { tensors })
    }

    /// The keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The stored shape of `key`.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|r| r.shape.as_slice())
    }

    /// The stored dtype of `key` as safetensors names it (`"F32"`, `"BF16"`, `"I64"`, ..).
    pub fn dtype_name(&self, key: &str) -> Option<String> {
        self.tensors.get(key).map(|r| format!("{:?}", r.dtype))
    }

    /// One tensor on `device` in `dtype` (converted as a load would convert it).
    pub fn tensor(&self, key: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        const OP: &str = "StateDict::tensor";
        let raw = self.tensors.get(key).ok_or_else(|| Error::invalid(OP, format!("no key {key:?}")))?;
        if !kind_fits(raw.dtype, dtype) {
            return Err(Error::invalid(OP, format!("{key:?} is {:?}, which does not convert to {dtype}", raw.dtype)));
        }
        let n: usize = raw.shape.iter().product();
        let host = decode(raw, 0, n, dtype).map_err(|msg| Error::invalid(OP, format!("{key:?}: {msg}")))?;
        Tensor::from_host(host, &raw.shape, device)
    }

    /// Renames every key with `f`; `None` drops the key. Two keys renamed to one name are an
    /// error.
    pub fn map_keys(self, mut f: impl FnMut(&str) -> Option<String>) -> Result<StateDict> {
        let mut tensors = BTreeMap::new();
        for (name, raw) in self.tensors {
            let Some(new) = f(&name) else { continue };
            if tensors.contains_key(&new) {
                return Err(Error::invalid(
                    "StateDict::map_keys",
                    format!("two keys become {new:?} (one of them {name:?})"),
                ));
            }
            tensors.insert(new, raw);
        }
        Ok(StateDict { tensors })
    }

    /// Removes `prefix` from the keys that start with it (`"module."` from a DataParallel
    /// checkpoint, `"bert."` from a task model); other keys stay as they are.
    pub fn strip_prefix(self, prefix: &str) -> StateDict {
        self.replace_prefix(prefix, "")
    }

    /// Replaces `from` by `to` at the start of every key that starts with `from`. If that makes
    /// two keys equal, the renamed one wins.
    pub fn replace_prefix(self, from: &str, to: &str) -> StateDict {
        let (renamed, kept): (Vec<_>, Vec<_>) = self.tensors.into_iter().partition(|(k, _)| k.starts_with(from));
        let mut tensors: BTreeMap<String, Raw> = kept.into_iter().collect();
        for (k, raw) in renamed {
            tensors.insert(format!("{to}{}", &k[from.len()..]), raw);
        }
        StateDict { tensors }
    }

    /// Drops every key for which `keep` is false.
    pub fn filter(mut self, mut keep: impl FnMut(&str) -> bool) -> StateDict {
        self.tensors.retain(|k, _| keep(k));
        self
    }
}

/// Reads `path` and loads it into `module` ([`load_state_dict`]).
pub fn load(module: &dyn Module, path: impl AsRef<Path>, strict: bool) -> Result<LoadReport> {
    load_state_dict(module, &StateDict::open(path)?, strict)
}

/// Where one module tensor's value comes from.
enum Source<'a> {
    Whole(&'a Raw),
    /// Part `index` (of 3) along dim 0 of a packed `in_proj_*`.
    Packed {
        raw: &'a Raw,
        index: usize,
    },
}

/// Loads `sd` into `module`'s parameters and buffers (PyTorch's `load_state_dict`), each onto
/// the device and in the dtype it already has. Strict: every module key must be in `sd` and
/// every key of `sd` must be used, else [`Error::StateDict`] lists them all. Not strict: missing
/// and unexpected keys are returned in the [`LoadReport`] instead. Shape and dtype mismatches
/// (a float tensor for an integer one, say) are errors either way. All or nothing: on any error
/// the module is unchanged.
pub fn load_state_dict(module: &dyn Module, sd: &StateDict, strict: bool) -> Result<LoadReport> {
    let mut targets = module.named_parameters();
    targets.extend(module.named_buffers());
    let mut seen = HashSet::new();
    for (name, _) in &targets {
        if !seen.insert(name.as_str()) {
            return Err(Error::invalid("load_state_dict", format!("the module names two tensors {name:?}")));
        }
    }

    let mut used: HashSet<&str> = HashSet::new();
    let (mut missing, mut mismatched) = (Vec::new(), Vec::new());
    let mut planned: Vec<(&Tensor, &str, Source)> = Vec::new();
    for (name, t) in &targets {
        match find(sd, name) {
            Some((key, src)) => {
                used.insert(key);
                match check_fit(&src, t) {
                    Ok(()) => planned.push((t, key, src)),
                    // The three parts of a packed projection share one key: report it once.
                    Err(msg) if !mismatched.iter().any(|(k, _)| k == key) => mismatched.push((key.to_string(), msg)),
                    Err(_) => {}
                }
            }
            None => missing.push(name.clone()),
        }
    }
    let unexpected: Vec<String> =
        sd.keys().filter(|k| !used.contains(k) && !is_ignored_counter(k, &seen)).map(str::to_string).collect();
    if !mismatched.is_empty() || (strict && (!missing.is_empty() || !unexpected.is_empty())) {
        let (missing, unexpected) = if strict { (missing, unexpected) } else { (Vec::new(), Vec::new()) };
        return Err(Error::StateDict { missing, unexpected, mismatched });
    }

    // Decode and upload everything before the first assignment.
    let mut values = Vec::with_capacity(planned.len());
    for (t, key, src) in planned {
        // Assigning a tensor its own data fails exactly when the real assignment would (a view
        // that does not own its storage): find out now, not halfway.
        t.set_data(t)?;
        let host = match src {
            Source::Whole(raw) => decode(raw, 0, t.numel(), t.dtype()),
            Source::Packed { raw, index } => decode(raw, index * t.numel(), t.numel(), t.dtype()),
        }
        .map_err(|msg| Error::StateDict {
            missing: vec![],
            unexpected: vec![],
            mismatched: vec![(key.to_string(), msg)],
        })?;
        values.push((t, Tensor::from_host(host, t.shape(), t.device())?));
    }
    for (t, v) in values {
        t.set_data(&v)?;
    }
    Ok(LoadReport { missing, unexpected })
}

/// The entry of `sd` that holds module key `name`: the same key, else a packed or separately
/// named attention projection (see the module docs).
fn find<'a>(sd: &'a StateDict, name: &str) -> Option<(&'a str, Source<'a>)> {
    if let Some((k, raw)) = sd.tensors.get_key_value(name) {
        return Some((k.as_str(), Source::Whole(raw)));
    }
    let (parent, proj, leaf) = split_projection(name)?;
    let index = ["q_proj", "k_proj", "v_proj"].iter().position(|p| *p == proj)?;
    if leaf == "weight"
        && let Some((k, raw)) = sd.tensors.get_key_value(&format!("{parent}{proj}_weight"))
    {
        return Some((k.as_str(), Source::Whole(raw)));
    }
    let (k, raw) = sd.tensors.get_key_value(&format!("{parent}in_proj_{leaf}"))?;
    Some((k.as_str(), Source::Packed { raw, index }))
}

/// `P.num_batches_tracked` beside a module's `P.running_mean`: PyTorch's BatchNorm counter.
fn is_ignored_counter(key: &str, module_keys: &HashSet<&str>) -> bool {
    key.strip_suffix("num_batches_tracked").is_some_and(|p| module_keys.contains(format!("{p}running_mean").as_str()))
}

fn check_fit(src: &Source, t: &Tensor) -> std::result::Result<(), String> {
    let raw = match src {
        Source::Whole(raw) | Source::Packed { raw, .. } => raw,
    };
    let fits = match src {
        Source::Whole(_) => raw.shape == t.shape(),
        Source::Packed { .. } => {
            !t.shape().is_empty()
                && raw.shape.len() == t.rank()
                && raw.shape[0] == 3 * t.shape()[0]
                && raw.shape[1..] == t.shape()[1..]
        }
    };
    if !fits {
        let want = match src {
            Source::Whole(_) => format!("{:?}", t.shape()),
            Source::Packed { index, .. } => {
                let mut packed = t.shape().to_vec();
                if let Some(d) = packed.first_mut() {
                    *d *= 3;
                }
                format!("{packed:?} (q, k, v packed; part {index} is the module's {:?})", t.shape())
            }
        };
        return Err(format!("shape {:?} in the state dict, the module expects {want}", raw.shape));
    }
    if !kind_fits(raw.dtype, t.dtype()) {
        return Err(format!("dtype {:?} in the state dict, the module's tensor is {}", raw.dtype, t.dtype()));
    }
    Ok(())
}

/// Floats convert to floats, integers to integers, bools to bools.
fn kind_fits(src: Dtype, dst: DType) -> bool {
    match dst {
        DType::F32 | DType::F16 | DType::F64 => is_float(src),
        DType::I32 | DType::U32 => is_int(src),
        DType::Bool => src == Dtype::BOOL,
    }
}

fn is_float(d: Dtype) -> bool {
    matches!(d, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

fn is_int(d: Dtype) -> bool {
    matches!(d, Dtype::I8 | Dtype::U8 | Dtype::I16 | Dtype::U16 | Dtype::I32 | Dtype::U32 | Dtype::I64 | Dtype::U64)
}

fn words<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// Elements `start..start + n` of `raw` in `dtype`. The caller has checked that the kinds fit.
fn decode(raw: &Raw, start: usize, n: usize, dtype: DType) -> std::result::Result<HostData, String> {
    let size = raw.dtype.bitsize() / 8;
    let bytes =
        raw.bytes.as_slice().get(start * size..(start + n) * size).ok_or("tensor data shorter than its shape")?;
    Ok(match (raw.dtype, dtype) {
        // The common cases without a detour through f64.
        (Dtype::F32, DType::F32) => HostData::F32(words(bytes).map(f32::from_le_bytes).collect()),
        (Dtype::F16, DType::F16) => {
            HostData::F16(words(bytes).map(|w| f16::from_bits(u16::from_le_bytes(w))).collect())
        }
        (Dtype::F16, DType::F32) => {
            HostData::F32(words(bytes).map(|w| f16::from_bits(u16::from_le_bytes(w)).to_f32()).collect())
        }
        // bf16 is the top half of an f32.
        (Dtype::BF16, DType::F32) => {
            HostData::F32(words(bytes).map(|w| f32::from_bits(u32::from(u16::from_le_bytes(w)) << 16)).collect())
        }
        (Dtype::BOOL, DType::Bool) => HostData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        (src, DType::F32 | DType::F16 | DType::F64) => HostData::from_f64(&floats(src, bytes)?, dtype),
        (src, DType::I32 | DType::U32) => {
            let v = ints(src, bytes)?;
            let (lo, hi) =
                if dtype == DType::I32 { (i64::from(i32::MIN), i64::from(i32::MAX)) } else { (0, i64::from(u32::MAX)) };
            if let Some(bad) = v.iter().find(|&&x| x < lo || x > hi) {
                return Err(format!("value {bad} does not fit the module's {dtype}"));
            }
            match dtype {
                DType::I32 => HostData::I32(v.iter().map(|&x| x as i32).collect()),
                _ => HostData::U32(v.iter().map(|&x| x as u32).collect()),
            }
        }
        (src, dst) => return Err(format!("cannot convert {src:?} to {dst}")),
    })
}

fn floats(src: Dtype, bytes: &[u8]) -> std::result::Result<Vec<f64>, String> {
    Ok(match src {
        Dtype::F16 => words(bytes).map(|w| f16::from_bits(u16::from_le_bytes(w)).to_f64()).collect(),
        Dtype::BF16 => {
            words(bytes).map(|w| f64::from(f32::from_bits(u32::from(u16::from_le_bytes(w)) << 16))).collect()
        }
        Dtype::F32 => words(bytes).map(|w| f64::from(f32::from_le_bytes(w))).collect(),
        Dtype::F64 => words(bytes).map(f64::from_le_bytes).collect(),
        other => return Err(format!("{other:?} is not a floating-point dtype")),
    })
}

fn ints(src: Dtype, bytes: &[u8]) -> std::result::Result<Vec<i64>, String> {
    Ok(match src {
        Dtype::I8 => bytes.iter().map(|&b| i64::from(b as i8)).collect(),
        Dtype::U8 => bytes.iter().map(|&b| i64::from(b)).collect(),
        Dtype::I16 => words(bytes).map(|w| i64::from(i16::from_le_bytes(w))).collect(),
        Dtype::U16 => words(bytes).map(|w| i64::from(u16::from_le_bytes(w))).collect(),
        Dtype::I32 => words(bytes).map(|w| i64::from(i32::from_le_bytes(w))).collect(),
        Dtype::U32 => words(bytes).map(|w| i64::from(u32::from_le_bytes(w))).collect(),
        Dtype::I64 => words(bytes).map(i64::from_le_bytes).collect(),
        // Values past i64::MAX become negative and fail the range check.
        Dtype::U64 => words(bytes).map(|w| u64::from_le_bytes(w) as i64).collect(),
        other => return Err(format!("{other:?} is not an integer dtype")),
    })
}

fn host_bytes(data: &HostData) -> (Dtype, Vec<u8>) {
    fn flat<const N: usize, T: Copy>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }
    match data {
        HostData::F32(v) => (Dtype::F32, flat(v, f32::to_le_bytes)),
        HostData::F16(v) => (Dtype::F16, flat(v, |x| x.to_bits().to_le_bytes())),
        HostData::F64(v) => (Dtype::F64, flat(v, f64::to_le_bytes)),
        HostData::I32(v) => (Dtype::I32, flat(v, i32::to_le_bytes)),
        HostData::U32(v) => (Dtype::U32, flat(v, u32::to_le_bytes)),
        HostData::Bool(v) => (Dtype::BOOL, v.iter().map(|&b| u8::from(b)).collect()),
    }
}

/// `module`'s parameters and buffers under the names PyTorch's twin of it uses: attention
/// projections packed into `in_proj_weight` / `in_proj_bias` (see the module docs), everything
/// else as [`Module::named_parameters`] and [`Module::named_buffers`] name it.
pub fn state_dict(module: &dyn Module) -> Result<Vec<(String, Tensor)>> {
    let mut named = module.named_parameters();
    named.extend(module.named_buffers());
    let names: HashSet<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    // The parents ("", "layers.0.attn.", ..) that have all four attention projections.
    let parents: HashSet<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix("q_proj.weight"))
        .filter(|p| p.is_empty() || p.ends_with('.'))
        .filter(|p| {
            ["k_proj.weight", "v_proj.weight", "out_proj.weight"]
                .iter()
                .all(|s| names.contains(format!("{p}{s}").as_str()))
        })
        .collect();
    let by_name: HashMap<&str, &Tensor> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Vec::with_capacity(named.len());
    for (name, t) in &named {
        let Some((parent, proj, leaf)) = split_projection(name) else {
            out.push((name.clone(), t.clone()));
            continue;
        };
        let parts: Option<Vec<Tensor>> = ["q_proj", "k_proj", "v_proj"]
            .iter()
            .map(|p| by_name.get(format!("{parent}{p}.{leaf}").as_str()).map(|t| (*t).clone()))
            .collect();
        match parts {
            Some(parts) if parents.contains(parent) => {
                // Written once, where q's tensor is.
                if proj == "q_proj" {
                    out.push((format!("{parent}in_proj_{leaf}"), Tensor::cat(&parts, 0)?.detach()));
                }
            }
            _ => out.push((name.clone(), t.clone())),
        }
    }
    Ok(out)
}

/// `"a.b.k_proj.bias"` → `("a.b.", "k_proj", "bias")`.
fn split_projection(name: &str) -> Option<(&str, &str, &str)> {
    let (prefix, leaf) = name.rsplit_once('.')?;
    if leaf != "weight" && leaf != "bias" {
        return None;
    }
    let (parent, proj) = match prefix.rfind('.') {
        Some(i) => (&prefix[..=i], &prefix[i + 1..]),
        None => ("", prefix),
    };
    ["q_proj", "k_proj", "v_proj"].contains(&proj).then_some((parent, proj, leaf))
}

/// Writes [`state_dict`] of `module` to `path` as safetensors (atomically, as
/// [`checkpoint::save`](crate::checkpoint::save) does): `safetensors.torch.load_file` reads it
/// and PyTorch's twin of the module loads it with `load_state_dict(strict=True)`.
pub fn save(module: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    crate::checkpoint::save_state_dict(&state_dict(module)?, path)
}
