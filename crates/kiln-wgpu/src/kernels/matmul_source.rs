//! WGSL for the matmul kernels of `matmul.rs`, which picks and records them: each specialisation's
//! key and generated source, and the list of every one the backend can generate.
//!
//! Two WGSL templates: a register-tiled kernel (`shaders/matmul.wgsl`, operand fetches from
//! `shaders/matmul_load*.wgsl`) specialised by dtype, tile size and each operand's layout class,
//! and a split-k dot-product kernel for matrix-vector-like shapes (`shaders/matmul_small.wgsl`).
//! Split along k, the tiled kernel writes f32 partials that `shaders/matmul_splitk_sum.wgsl` adds
//! into the output.

use super::matmul::{CANDIDATES, DTYPES, Fetch, MEDIUM, OP, Tile};
use super::{compute_type, enables, load, module, storage_type, store};
use crate::shaders::Template;
use kiln_backend::{DType, Result};

const FETCHES: [Fetch; 3] = [Fetch::K, Fetch::X, Fetch::X4];

/// One matmul kernel the backend can build.
pub(super) enum Spec {
    /// `split`: one k range per workgroup, f32 partials out.
    Tiled {
        dtype: DType,
        tile: Tile,
        a: Fetch,
        b: Fetch,
        split: bool,
    },
    Small {
        dtype: DType,
    },
    /// The sum of split k's partials into a `dtype` output, 4 elements per thread when `vec4`.
    SplitSum {
        dtype: DType,
        vec4: bool,
    },
}

impl Spec {
    pub(super) fn key(&self) -> String {
        match self {
            Spec::Tiled { dtype, tile, a, b, split } => {
                let split = if *split { "|split" } else { "" };
                format!("matmul|{}|{dtype}|a{a:?}|b{b:?}{split}", tile.name())
            }
            Spec::Small { dtype } => format!("matmul|small|{dtype}"),
            Spec::SplitSum { dtype, vec4 } => format!("matmul|splitk-sum|{dtype}|{}", if *vec4 { "v4" } else { "v1" }),
        }
    }

    pub(super) fn source(&self) -> Result<String> {
        match *self {
            Spec::Tiled { dtype, tile, a, b, split } => tiled_source(dtype, tile, a, b, split),
            Spec::Small { dtype } => small_source(dtype),
            Spec::SplitSum { dtype, vec4 } => split_sum_source(dtype, vec4),
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

/// The generated WGSL that moves both operands' tk-deep slabs into workgroup memory.
#[derive(Default)]
struct Staging {
    decls: String,
    setup: String,
    /// Each quad one thread moves per slab, for both operands.
    quads: Vec<Quad>,
}

/// One quad (4 neighbours along m or n at one k) a thread moves per slab: its place in the
/// slab and its global pointer, which advances one slab per fetch.
struct Quad {
    /// `a` or `b`.
    name: &'static str,
    /// Its index among the operand's quads of this thread: names its register in double
    /// buffering.
    r: u32,
    fetch: Fetch,
    /// WGSL names of its k within the slab, its x (m or n) coordinate and its pointer.
    k: String,
    x: String,
    p: String,
    /// The operand's x and k strides.
    sx: &'static str,
    sk: &'static str,
}

impl Quad {
    fn array(&self) -> &'static str {
        if self.name == "a" { "As" } else { "Bs" }
    }

    /// The slab index of this quad, `slab` vec4s into the array (a WGSL expression; empty:
    /// the first slab).
    fn index(&self, slab: &str) -> String {
        let pitch = if self.name == "a" { "PA" } else { "PB" };
        let slab = if slab.is_empty() { String::new() } else { format!("{slab} + ") };
        format!("{slab}{} * {pitch} + {}q", self.k, self.x)
    }

    /// The fetch of this quad from the slab that starts at k = `k0` (zeros past the edges).
    fn load(&self, k0: &str) -> String {
        let (name, p, x, k) = (self.name, &self.p, &self.x, &self.k);
        // The operand's extent along x: main's `let`s of info[0] and info[1].
        let lim = if name == "a" { "M" } else { "N" };
        if self.fetch == Fetch::X4 {
            format!("{name}_quad_x({p}, {x}, {lim}, {k0} + {k} < K)")
        } else {
            format!("{name}_quad({p}, {}, {x}, {lim}, {k0} + {k} < K)", self.sx)
        }
    }

    /// Moves the pointer on to the next slab.
    fn step(&self) -> String {
        format!("{} += TK * {};\n", self.p, self.sk)
    }

    /// The register a double-buffered kernel fetches this quad into.
    fn reg(&self) -> String {
        format!("{}v{}", self.name, self.r)
    }
}

/// Staging code for operand `name` (`a` or `b`), whose tile is `len` long along m (n). Each
/// thread moves `quads·tk / threads` quads (4 neighbours along m or n at one k) per slab.
fn stage(
    dtype: DType,
    tile: Tile,
    name: &'static str,
    len: u32,
    fetch: Fetch,
    split: bool,
    out: &mut Staging,
) -> Result<()> {
    let is_a = name == "a";
    let (binding, origin) = if is_a { (1, "m0") } else { (2, "n0") };
    // a: [off, sb, sm, sk] at info[6..10]; b: [off, sb, sk, sn] at info[10..14].
    let (off, sb, sx, sk) = if is_a { (6, 7, "a_sm", "a_sk") } else { (10, 11, "b_sn", "b_sk") };
    let template = if fetch == Fetch::X4 { crate::shaders::MATMUL_LOAD_VEC4 } else { crate::shaders::MATMUL_LOAD };
    out.decls += &Template::new(template)
        .set("X", name)
        .set("BINDING", binding.to_string())
        .set("T", storage_type(OP, dtype)?)
        .set("C", compute_type(dtype))
        .render();
    out.decls += "\n";
    let (threads, quads) = (tile.threads(), len / 4);
    for r in 0..quads * tile.tk / threads {
        let q = format!("(lid + {}u)", r * threads);
        let (k, x, p) = (format!("{name}k{r}"), format!("{name}x{r}"), format!("{name}p{r}"));
        let (kq, xq) = if fetch == Fetch::K {
            (format!("{q} % TK"), format!("{q} / TK"))
        } else {
            (format!("{q} / {quads}u"), format!("{q} % {quads}u"))
        };
        out.setup += &format!(
            "    let {k} = {kq};\n    let {x}q = {xq};\n    let {x} = {origin} + {x}q * 4u;\n    \
             var {p} = info[{off}] + bi * info[{sb}] + {x} * {sx} + {k} * {sk};\n"
        );
        if split {
            out.setup += &format!("    {p} += KB * {sk};\n");
        }
        out.quads.push(Quad { name, r, fetch, k, x, p, sx, sk });
    }
    Ok(())
}

fn tiled_source(dtype: DType, tile: Tile, fa: Fetch, fb: Fetch, split: bool) -> Result<String> {
    let Tile { tm, tn, tk, rm, rn, db, warp, pf, group } = tile;
    let c = compute_type(dtype);
    let mut st = Staging::default();
    stage(dtype, tile, "a", tm, fa, split, &mut st)?;
    stage(dtype, tile, "b", tn, fb, split, &mut st)?;
    // Threads along m and n; a thread's row quads sit TY quads apart, its column quads TX apart,
    // so that neighbouring threads read neighbouring vec4s of workgroup memory.
    let (ty_n, tx_n) = (tm / rm, tn / rn);
    let (pa, pb) = (tm / 4 + 1, tn / 4 + 1);
    let mut acc = String::new();
    let mut stores = String::new();
    let lanes = ["x", "y", "z", "w"];
    // One k step of the multiply: a's row quads and b's column quads into fragments `a{i}` and
    // `b{j}` (`decl` "let " or "" for assignments to vars; slab indices for the quad offsets i·TY
    // and j·TX), then every accumulator from them.
    let fragments = |decl: &str, prefix: &str, a_at: &dyn Fn(u32) -> String, b_at: &dyn Fn(u32) -> String| {
        let mut s = String::new();
        for i in 0..rm / 4 {
            s += &format!("            {decl}{prefix}a{i} = As[{}];\n", a_at(i * ty_n));
        }
        for j in 0..rn / 4 {
            s += &format!("            {decl}{prefix}b{j} = Bs[{}];\n", b_at(j * tx_n));
        }
        s
    };
    let fmas = || {
        let mut s = String::new();
        for i in 0..rm / 4 {
            for lane in lanes {
                for j in 0..rn / 4 {
                    let v = format!("acc{i}{lane}{j}");
                    s += &format!(
                        "            {v} = {};\n",
                        mac(dtype, &v, &format!("vec4<{c}>(a{i}.{lane})"), &format!("b{j}"))
                    );
                }
            }
        }
        s
    };
    let step = |a_at: &dyn Fn(u32) -> String, b_at: &dyn Fn(u32) -> String| fragments("let ", "", a_at, b_at) + &fmas();
    for i in 0..rm / 4 {
        for (l, lane) in lanes.iter().enumerate() {
            stores += &format!(
                "    {{\n        let row = m0 + (ty + {}u) * 4u + {l}u;\n        if row < M {{\n            let base = out_base + row * N;\n",
                i * ty_n
            );
            for j in 0..rn / 4 {
                let v = format!("acc{i}{lane}{j}");
                acc += &format!("    var {v} = vec4<{c}>(0);\n");
                stores += &format!("            let col{j} = n0 + (tx + {}u) * 4u;\n", j * tx_n);
                for (l2, lane2) in lanes.iter().enumerate() {
                    stores += &format!(
                        "            if col{j} + {l2}u < N {{ out[base + col{j} + {l2}u] = {}; }}\n",
                        if split { format!("{v}.{lane2}") } else { store(dtype, &format!("{v}.{lane2}")) }
                    );
                }
            }
            stores += "        }\n    }\n";
        }
    }
    let main = if db {
        // Slab buffer 1 starts this many vec4s into each array.
        let (a_slab, b_slab) = (tk * pa, tk * pb);
        let fetch = |k0: &str, ind: &str| {
            st.quads
                .iter()
                .map(|q| format!("{ind}{} = {};\n{ind}{}", q.reg(), q.load(k0), q.step()))
                .collect::<String>()
        };
        let store = |buf: u32, ind: &str| {
            st.quads
                .iter()
                .map(|q| {
                    let slab = if q.name == "a" { buf * a_slab } else { buf * b_slab };
                    format!("{ind}{}[{}] = {};\n", q.array(), q.index(&format!("{slab}u")), q.reg())
                })
                .collect::<String>()
        };
        let a_at = |buf: u32, kk: u32| move |off: u32| format!("ty + {}u", buf * a_slab + kk * pa + off);
        let b_at = |buf: u32, kk: u32| move |off: u32| format!("tx + {}u", buf * b_slab + kk * pb + off);
        // The other slab's k = 0 fragments into the `fa{i}` / `fb{j}` vars (`pf` tiles).
        let ahead = |buf: u32| fragments("", "f", &a_at(buf, 0), &b_at(buf, 0));
        // One slab from buffer `buf`, unrolled along k (every index is the thread's ty (tx) plus
        // a constant), then the registers into the other buffer and the barrier. `pf` tiles
        // multiply k = 0 from the fragments read ahead, and read their last step's fragments
        // before the store and the barrier and the next slab's first ones after it, so that the
        // last step's multiply-adds run while the barrier and those reads complete.
        let slab = |buf: u32| {
            let mut s = String::new();
            for kk in 0..tk {
                let last = kk + 1 == tk;
                s += "        {\n";
                if pf && kk == 0 {
                    s += &(0..rm / 4).map(|i| format!("            let a{i} = fa{i};\n")).collect::<String>();
                    s += &(0..rn / 4).map(|j| format!("            let b{j} = fb{j};\n")).collect::<String>();
                } else {
                    s += &fragments("let ", "", &a_at(buf, kk), &b_at(buf, kk));
                }
                if pf && last {
                    s += &store(1 - buf, "            ");
                    s += "            workgroupBarrier();\n";
                    s += &ahead(1 - buf);
                }
                s += &fmas();
                s += "        }\n";
            }
            if !pf {
                s += &store(1 - buf, "        ");
                s += "        workgroupBarrier();\n";
            }
            s
        };
        let mut regs: String = st.quads.iter().map(|q| format!("    var {}: vec4<{c}>;\n", q.reg())).collect();
        let mut prologue = format!("{}{}    workgroupBarrier();\n", fetch("KB", "    "), store(0, "    "));
        if pf {
            regs += &(0..rm / 4).map(|i| format!("    var fa{i}: vec4<{c}>;\n")).collect::<String>();
            regs += &(0..rn / 4).map(|j| format!("    var fb{j}: vec4<{c}>;\n")).collect::<String>();
            prologue += &ahead(0).replace("            ", "    ");
        }
        format!(
            "{regs}{prologue}    for (var k0 = KB; k0 < K; k0 += 2u * TK) {{\n        let k1 = k0 + TK;\n\
             {}{}        let k2 = k1 + TK;\n{}{}    }}\n",
            fetch("k1", "        "),
            slab(0),
            fetch("k2", "        "),
            slab(1),
        )
    } else {
        let stage: String = st
            .quads
            .iter()
            .map(|q| format!("        {}[{}] = {};\n        {}", q.array(), q.index(""), q.load("k0"), q.step()))
            .collect();
        format!(
            "    for (var k0 = KB; k0 < K; k0 += TK) {{\n{stage}        workgroupBarrier();\n        \
             for (var kk = 0u; kk < TK; kk++) {{\n{}        }}\n        workgroupBarrier();\n    }}",
            step(&|off| format!("kk * PA + ty + {off}u"), &|off| format!("kk * PB + tx + {off}u"))
        )
    };
    let slabs = if db { 2 } else { 1 };
    let tile_xy = if group > 1 {
        format!(
            "    let span = {group}u * info[4];\n    let first = (t / span) * {group}u;\n    \
             let rows = min(info[3] - first, {group}u);\n    let r = t % span;\n    \
             let m0 = (first + r % rows) * {tm}u;\n    let n0 = (r / rows) * {tn}u;"
        )
    } else {
        format!("    let m0 = (t / info[4]) * {tm}u;\n    let n0 = (t % info[4]) * {tn}u;")
    };
    let thread_xy = if warp {
        // Each 32 threads (lane = lid % 32) an 8×4 patch; the patches in rows of TX / 8.
        let per_row = tx_n / 8;
        format!(
            "    let warp = lid / 32u;\n    let lane = lid % 32u;\n    \
             let tx = (warp % {per_row}u) * 8u + lane % 8u;\n    let ty = (warp / {per_row}u) * 4u + lane / 8u;"
        )
    } else {
        format!("    let tx = lid % {tx_n}u;\n    let ty = lid / {tx_n}u;")
    };
    let body = Template::new(crate::shaders::MATMUL)
        .set("OPERANDS", st.decls)
        .set("OUT_T", if split { "f32" } else { storage_type(OP, dtype)? })
        .set("C", c)
        .set(
            "K_RANGE",
            if split {
                "    let bi = slot % info[14];\n    let KB = (slot / info[14]) * info[15];\n    let K = min(info[2], KB + info[15]);"
            } else {
                "    let bi = slot;\n    let KB = 0u;\n    let K = info[2];"
            },
        )
        .set("PA", pa.to_string())
        .set("PB", pb.to_string())
        .set("TK", tk.to_string())
        .set("AS_LEN", (slabs * tk * pa).to_string())
        .set("BS_LEN", (slabs * tk * pb).to_string())
        .set("WG", tile.threads().to_string())
        .set("TILE_XY", tile_xy)
        .set("THREAD_XY", thread_xy)
        .set("SETUP", st.setup)
        .set("ACC_DECL", acc)
        .set("MAIN", main)
        .set("STORE", stores)
        .render();
    Ok(module(enables(&[dtype]), false, &body))
}

fn split_sum_source(dtype: DType, vec4: bool) -> Result<String> {
    let t = storage_type(OP, dtype)?;
    let (pt, ot) = if vec4 { ("vec4<f32>", format!("vec4<{t}>")) } else { ("f32", t.to_string()) };
    let body = Template::new(crate::shaders::MATMUL_SPLITK_SUM).set("PT", pt).set("OT", ot).render();
    Ok(module(enables(&[dtype]), false, &body))
}

fn small_source(dtype: DType) -> Result<String> {
    let body = Template::new(crate::shaders::MATMUL_SMALL)
        .set("BINDINGS", bindings(dtype)?)
        .set("C", compute_type(dtype))
        .set("LOAD_A", load(dtype, "a[pa]"))
        .set("LOAD_B", load(dtype, "b[pb]"))
        .set("STORE", store(dtype, "partial[slot]"))
        .render();
    Ok(module(enables(&[dtype]), false, &body))
}

/// Every matmul source the backend can generate: floats in every candidate tile and every pair of
/// layout classes, whole and split along k, and split k's sums; integers (which never take vec4
/// fetches or split) in MEDIUM tiles.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut specs = Vec::new();
    for dtype in DTYPES {
        let float = dtype.is_float();
        let (tiles, fetches): (&[Tile], &[Fetch]) =
            if float { (&CANDIDATES, &FETCHES) } else { (&[MEDIUM], &FETCHES[..2]) };
        for &tile in tiles {
            for &a in fetches {
                for &b in fetches {
                    specs.push(Spec::Tiled { dtype, tile, a, b, split: false });
                    if float {
                        specs.push(Spec::Tiled { dtype, tile, a, b, split: true });
                    }
                }
            }
        }
        specs.push(Spec::Small { dtype });
        if float {
            specs.extend([false, true].map(|vec4| Spec::SplitSum { dtype, vec4 }));
        }
    }
    specs.into_iter().filter_map(|s| Some((s.key(), s.source().ok()?))).collect()
}
