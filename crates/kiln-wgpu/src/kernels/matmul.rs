//! Batched strided matmul, `[b, m, k] · [b, k, n] → [b, m, n]` (contiguous). Operands are read in
//! place through their strides: transposed views, a batch stride of 0 (broadcast) and offsets
//! cost no copy. Two WGSL templates: a register-tiled kernel (`shaders/matmul.wgsl`) specialised
//! by dtype and by each operand's fast dim, and a split-k dot-product kernel for
//! matrix-vector-like shapes (`shaders/matmul_small.wgsl`).

use super::{compute_type, enables, load, module, storage_type, store};
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Error, Layout, Result};

const OP: &str = "matmul";

/// The output tile of one workgroup (tm×tn), how deep along k it stages the operands (tk), and
/// the block of that tile each thread accumulates (rm×rn, multiples of 4: read as vec4s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    tm: u32,
    tn: u32,
    tk: u32,
    rm: u32,
    rn: u32,
}

impl Tile {
    const fn threads(self) -> u32 {
        (self.tm / self.rm) * (self.tn / self.rn)
    }
}

const TILE: Tile = Tile { tm: 64, tn: 64, tk: 16, rm: 4, rn: 4 };

fn tile_from_env() -> Tile {
    let Ok(v) = std::env::var("KILN_MM_TILE") else { return TILE };
    let p: Vec<u32> = v.split(',').filter_map(|x| x.parse().ok()).collect();
    Tile { tm: p[0], tn: p[1], tk: p[2], rm: p[3], rn: p[4] }
}

/// Shapes with this few rows or columns take the dot-product kernel: a 64-wide tile would be
/// mostly padding.
const SMALL_MN: usize = 4;

const DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::I32, DType::U32];

enum Spec {
    /// `a_k_fast`: neighbouring threads load along k of `a` (its k-stride is the smaller one);
    /// otherwise along m. `b_k_fast` likewise for `b` against n.
    Tiled { dtype: DType, tile: Tile, a_k_fast: bool, b_k_fast: bool },
    Small { dtype: DType },
}

impl Spec {
    fn key(&self) -> String {
        match self {
            Spec::Tiled { dtype, tile: t, a_k_fast, b_k_fast } => {
                let class = |k_fast: bool| if k_fast { "k" } else { "x" };
                format!(
                    "matmul|tiled{}x{}x{}/{}x{}|{dtype}|a{}|b{}",
                    t.tm,
                    t.tn,
                    t.tk,
                    t.rm,
                    t.rn,
                    class(*a_k_fast),
                    class(*b_k_fast)
                )
            }
            Spec::Small { dtype } => format!("matmul|small|{dtype}"),
        }
    }

    fn source(&self) -> Result<String> {
        match *self {
            Spec::Tiled { dtype, tile, a_k_fast, b_k_fast } => tiled_source(dtype, tile, a_k_fast, b_k_fast),
            Spec::Small { dtype } => small_source(dtype),
        }
    }
}

fn bindings(dtype: DType) -> Result<String> {
    let t = storage_type(OP, dtype)?;
    Ok(format!(
        "@group(0) @binding(1) var<storage, read> a: array<{t}>;\n\
         @group(0) @binding(2) var<storage, read> b: array<{t}>;\n\
         @group(0) @binding(3) var<storage, read_write> out: array<{t}>;\n"
    ))
}

/// `acc + x * y` for vectors of the compute type (a fused multiply-add for floats).
fn mac(dtype: DType, acc: &str, x: &str, y: &str) -> String {
    if dtype.is_float() { format!("fma({x}, {y}, {acc})") } else { format!("{acc} + {x} * {y}") }
}

/// The generated pieces that move one operand's tk-deep slabs into workgroup memory.
#[derive(Default)]
struct Staging {
    setup: String,
    fetch_first: String,
    put: String,
    fetch_next: String,
}

/// Staging for operand `name` (`a` or `b`) in quads of 4 neighbouring rows (columns) at one k;
/// `len` is the tile's length along m (n), `k_fast` says neighbouring threads take neighbouring k.
fn stage(tile: Tile, name: &str, len: u32, k_fast: bool, out: &mut Staging) {
    let (array, pitch) = if name == "a" { ("As", "PA") } else { ("Bs", "PB") };
    // a: [off, sb, sm, sk] at info[6..10]; b: [off, sb, sk, sn] at info[10..14].
    let (off, sb, sx, sk, origin) =
        if name == "a" { (6, 7, "a_sm", "a_sk", "m0") } else { (10, 11, "b_sn", "b_sk", "n0") };
    let (threads, quads) = (tile.threads(), len / 4);
    for r in 0..quads * tile.tk / threads {
        let q = format!("(lid + {}u)", r * threads);
        let (k, x) =
            if k_fast { (format!("{q} % TK"), format!("{q} / TK")) } else { (format!("{q} / {quads}u"), format!("{q} % {quads}u")) };
        let (kv, xv, pv, vv) = (format!("{name}k{r}"), format!("{name}q{r}"), format!("{name}p{r}"), format!("{name}v{r}"));
        out.setup += &format!(
            "    let {kv} = {k};\n    let {xv} = {x};\n    \
             var {pv} = info[{off}] + bi * info[{sb}] + ({origin} + {xv} * 4u) * {sx} + {kv} * {sk};\n"
        );
        let fetch = |kbase: &str| {
            format!(
                "{vv} = quad_{name}({pv}, {sx}, {origin} + {xv} * 4u, {kbase}{kv} < K);\n        {pv} += TK * {sk};\n"
            )
        };
        out.fetch_first += &format!("    var {}", fetch(""));
        out.fetch_next += &format!("        {}", fetch("k0 + TK + "));
        out.put += &format!("        {array}[{kv} * {pitch} + {xv}] = {vv};\n");
    }
}

fn tiled_source(dtype: DType, tile: Tile, a_k_fast: bool, b_k_fast: bool) -> Result<String> {
    let Tile { tm, tn, tk, rm, rn } = tile;
    let c = compute_type(dtype);
    let mut st = Staging::default();
    stage(tile, "a", tm, a_k_fast, &mut st);
    stage(tile, "b", tn, b_k_fast, &mut st);
    // Threads along m and n; a thread's row quads sit TY quads apart, its column quads TX apart,
    // so that neighbouring threads read neighbouring vec4s of workgroup memory.
    let (ty_n, tx_n) = (tm / rm, tn / rn);
    let mut acc = String::new();
    let mut macs = String::new();
    let mut stores = String::new();
    for i in 0..rm / 4 {
        macs += &format!("            let a{i} = As[kk * PA + ty + {}u];\n", i * ty_n);
    }
    for j in 0..rn / 4 {
        macs += &format!("            let b{j} = Bs[kk * PB + tx + {}u];\n", j * tx_n);
    }
    let lanes = ["x", "y", "z", "w"];
    for i in 0..rm / 4 {
        for (l, lane) in lanes.iter().enumerate() {
            stores += &format!(
                "    {{\n        let row = m0 + (ty + {}u) * 4u + {l}u;\n        if row < M {{\n            let base = out_base + row * N;\n",
                i * ty_n
            );
            for j in 0..rn / 4 {
                let v = format!("acc{i}{lane}{j}");
                acc += &format!("    var {v} = vec4<{c}>(0);\n");
                macs += &format!("            {v} = {};\n", mac(dtype, &v, &format!("vec4<{c}>(a{i}.{lane})"), &format!("b{j}")));
                stores += &format!("            let col{j} = n0 + (tx + {}u) * 4u;\n", j * tx_n);
                for (l2, lane2) in lanes.iter().enumerate() {
                    stores += &format!(
                        "            if col{j} + {l2}u < N {{ out[base + col{j} + {l2}u] = {}; }}\n",
                        store(dtype, &format!("{v}.{lane2}"))
                    );
                }
            }
            stores += "        }\n    }\n";
        }
    }
    let body = crate::shaders::MATMUL
        .replace("{{BINDINGS}}", &bindings(dtype)?)
        .replace("{{C}}", c)
        .replace("{{LOAD_A}}", &load(dtype, "a[p]"))
        .replace("{{LOAD_B}}", &load(dtype, "b[p]"))
        .replace("{{PA}}", &(tm / 4 + 1).to_string())
        .replace("{{PB}}", &(tn / 4 + 1).to_string())
        .replace("{{TK}}", &tk.to_string())
        .replace("{{AS_LEN}}", &(tk * (tm / 4 + 1)).to_string())
        .replace("{{BS_LEN}}", &(tk * (tn / 4 + 1)).to_string())
        .replace("{{WG}}", &tile.threads().to_string())
        .replace("{{TM}}", &tm.to_string())
        .replace("{{TN}}", &tn.to_string())
        .replace("{{TX}}", &tx_n.to_string())
        .replace("{{SETUP}}", &st.setup)
        .replace("{{FETCH_FIRST}}", &st.fetch_first)
        .replace("{{ACC_DECL}}", &acc)
        .replace("{{PUT}}", &st.put)
        .replace("{{FETCH_NEXT}}", &st.fetch_next)
        .replace("{{MAC}}", &macs)
        .replace("{{STORE}}", &stores);
    Ok(module(enables(&[dtype]), false, &body))
}

fn small_source(dtype: DType) -> Result<String> {
    let body = crate::shaders::MATMUL_SMALL
        .replace("{{BINDINGS}}", &bindings(dtype)?)
        .replace("{{C}}", compute_type(dtype))
        .replace("{{LOAD_A}}", &load(dtype, "a[pa]"))
        .replace("{{LOAD_B}}", &load(dtype, "b[pb]"))
        .replace("{{STORE}}", &store(dtype, "partial[slot]"));
    Ok(module(enables(&[dtype]), false, &body))
}

/// An operand's `[offset, batch, x, k]` strides as u32 words (for `b` the caller swaps x and k
/// back into info's order). Size-1 dims get stride 0 so that no pointer walk can pass u32.
fn words(l: &Layout, len: usize, side: &str) -> Result<[u32; 4]> {
    if l.numel() == 0 {
        return Ok([0; 4]);
    }
    let extent = l.storage_extent();
    if extent > len {
        return Err(Error::invalid(OP, format!("{side} layout {l:?} reaches past its buffer of {len} elements")));
    }
    if extent > u32::MAX as usize {
        return Err(Error::OutOfMemory { op: OP, msg: format!("{side} layout {l:?} needs indices past u32") });
    }
    let s = |d: usize| if l.shape()[d] <= 1 { 0 } else { l.strides()[d] as u32 };
    Ok([l.offset() as u32, s(0), s(1), s(2)])
}

/// Whether neighbouring threads should walk k (stride `sk`) rather than the other dim
/// (stride `sx`, size `x`) to read neighbouring addresses.
fn k_fast(sk: u32, sx: u32, k: usize, x: usize) -> bool {
    k > 1 && (x <= 1 || sk <= sx)
}

pub(crate) fn matmul(a: &GpuStorage, al: &Layout, b: &GpuStorage, bl: &Layout) -> Result<GpuStorage> {
    let (sa, sb) = (al.shape(), bl.shape());
    if sa.len() != 3 || sb.len() != 3 || sa[0] != sb[0] || sa[2] != sb[1] {
        return Err(Error::shape(OP, format!("{sa:?} · {sb:?}: expected [b, m, k] · [b, k, n]")));
    }
    let dtype = a.dtype();
    if b.dtype() != dtype {
        return Err(Error::dtype(OP, dtype, b.dtype()));
    }
    storage_type(OP, dtype)?;
    if !DTYPES.contains(&dtype) {
        return Err(Error::UnsupportedDType { op: OP, dtype, why: " (matmul needs a numeric dtype)".into() });
    }
    let (batch, m, k, n) = (sa[0], sa[1], sa[2], sb[2]);
    let numel = batch.checked_mul(m).and_then(|x| x.checked_mul(n)).filter(|&x| x <= u32::MAX as usize);
    let Some(numel) = numel else {
        return Err(Error::OutOfMemory { op: OP, msg: format!("{sa:?} · {sb:?} has more than 2^32 outputs") });
    };
    let ctx = a.context();
    let out = GpuStorage::alloc(ctx, OP, dtype, numel)?;
    if numel == 0 {
        return Ok(out);
    }
    let wa = words(al, a.len(), "lhs")?;
    let wb = words(bl, b.len(), "rhs")?;
    let dims = [m as u32, n as u32, k as u32];
    // info[6..14]: a's [off, sb, sm, sk], then b's [off, sb, sk, sn].
    let strides = [wa[0], wa[1], wa[2], wa[3], wb[0], wb[1], wb[2], wb[3]];
    let (spec, head, groups) = if m.min(n) <= SMALL_MN {
        // Enough lanes per dot product to keep a workgroup busy on long k, few enough that a
        // short k still fills the workgroup with outputs.
        let lanes = k.div_ceil(32).next_power_of_two().clamp(1, 64) as u32;
        let k_inner = if m <= n { k_fast(wb[2], wb[3], k, n) } else { k_fast(wa[3], wa[2], k, m) };
        let head = [numel as u32, lanes, k_inner as u32];
        (Spec::Small { dtype }, head, (numel as u32).div_ceil(256 / lanes))
    } else {
        let tile = tile_from_env();
        let (tiles_m, tiles_n) = ((m as u32).div_ceil(tile.tm), (n as u32).div_ceil(tile.tn));
        let total = tiles_m as u64 * tiles_n as u64 * batch as u64;
        let total = u32::try_from(total)
            .map_err(|_| Error::OutOfMemory { op: OP, msg: format!("{sa:?} · {sb:?} needs too many workgroups") })?;
        let spec = Spec::Tiled { dtype, tile, a_k_fast: k_fast(wa[3], wa[2], k, m), b_k_fast: k_fast(wb[2], wb[3], k, n) };
        (spec, [tiles_m, tiles_n, total], total)
    };
    let kernel = ctx.cache.get(&ctx.device, OP, &spec.key(), || spec.source().unwrap_or_default())?;
    let mut meta = dims.to_vec();
    meta.extend(head);
    meta.extend(strides);
    ctx.dispatch(OP, &kernel, &[a.buffer(), b.buffer(), out.buffer()], &meta, groups)?;
    Ok(out)
}

/// Every matmul source the backend can generate.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut specs = Vec::new();
    for dtype in DTYPES {
        for a_k_fast in [true, false] {
            for b_k_fast in [true, false] {
                specs.push(Spec::Tiled { dtype, tile: TILE, a_k_fast, b_k_fast });
            }
        }
        specs.push(Spec::Small { dtype });
    }
    specs.into_iter().filter_map(|s| Some((s.key(), s.source().ok()?))).collect()
}
