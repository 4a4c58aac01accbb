//! kiln-wgpu is built in layers: a module may import only from its own layer or a lower one.
//! This test reads every file under `src/`, places it by its top-level module in `LAYERS`, finds
//! what it names through `crate::` and `super::` paths (comments and string literals skipped;
//! names the crate root re-exports are followed to the module that defines them), and fails on an
//! import from a higher layer or on a module missing from the table, so a new file has to be
//! placed. It also prints the import cycles (strongly connected files): by construction each
//! lies within one layer. Run with `--nocapture` to see the graph's summary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` and its layer; a folder (`kernels/`, `fusion/`) is one
/// module. Lower numbers sit lower.
const LAYERS: &[(&str, u32)] = &[
    // 0: what differs in a browser.
    ("platform", 0),
    // 1: the device (`Gpu`: device, queue, limits, features, errors, waits) and adapter choice.
    ("gpu", 1),
    ("adapter", 1),
    // 2: resources, each taking a device or a `&Gpu`.
    ("pool", 2),
    ("segments", 2),
    ("cache", 2),
    ("pipeline_cache", 2),
    ("bind_cache", 2),
    ("profile", 2),
    // 3: recording and submitting work, moving bytes.
    ("batch", 3),
    ("readback", 3),
    // 4: the ops. `GpuContext` composes the pieces below plus the ops' state (fusion, autotune),
    // and the kernels are `impl GpuContext` blocks, so these modules may import each other.
    ("context", 4),
    ("kernels", 4),
    ("fusion", 4),
    ("autotune", 4),
    ("storage", 4),
    ("chunked", 4),
    ("shaders", 4),
    ("exit", 4),
    // 5: the crate root (`lib.rs`): declares the modules and re-exports the public API.
    ("", 5),
];

/// A source file: its module path (`kernels::matmul`; empty for `lib.rs`) and its text with
/// comments and literals blanked out.
struct File {
    module: Vec<String>,
    code: String,
}

fn src_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read_files(dir: &Path, prefix: &[String], out: &mut Vec<File>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src/").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("file name").to_string();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            read_files(&path, &p, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut module = prefix.to_vec();
            if name != "mod" && !(prefix.is_empty() && name == "lib") {
                module.push(name);
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            out.push(File { module, code: strip(&text) });
        }
    }
}

/// `text` with comments, string literals and char literals replaced by spaces, so that a
/// `crate::` inside them (a doc link, WGSL) is not taken for an import.
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && at(&c, i + 1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && at(&c, i + 1) == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(&c, i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(&c, i + 1) == Some('/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r'
            && (at(&c, i + 1) == Some('"') || at(&c, i + 1) == Some('#'))
            && (i == 0 || !is_ident(c[i - 1]))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            j += 1;
            while j < c.len() && !(c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#'))) {
                j += 1;
            }
            i = j + 1 + hashes;
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && at(&c, i + 1) == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{..}'.
            i += 2;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c[i] == '\'' && at(&c, i + 2) == Some('\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn at(c: &[char], i: usize) -> Option<char> {
    c.get(i).copied()
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Every path `file` names through `crate::` or `super::`, each as absolute module segments
/// (a `use crate::{a::b, c}` group gives one path per item).
fn paths(file: &File) -> Vec<Vec<String>> {
    let c: Vec<char> = file.code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let starts_word = i == 0 || !(is_ident(c[i - 1]) || c[i - 1] == ':' || c[i - 1] == '$');
        let word =
            ["crate", "super"].into_iter().find(|w| starts_word && c[i..].starts_with(&w.chars().collect::<Vec<_>>()));
        let Some(word) = word else {
            i += 1;
            continue;
        };
        let mut j = i + word.len();
        if !(c.get(j) == Some(&':') && c.get(j + 1) == Some(&':')) {
            i = j;
            continue;
        }
        j += 2;
        // `super` from `a/b.rs` (module a::b) is module a; from `a.rs` (a top-level module, or
        // an inline `mod tests` in it) it stays inside that top-level module.
        let base: Vec<String> = if word == "crate" {
            Vec::new()
        } else if file.module.len() > 1 {
            file.module[..file.module.len() - 1].to_vec()
        } else {
            file.module.clone()
        };
        let (rest, end) = path_tail(&c, j);
        for tail in rest {
            let mut p = base.clone();
            p.extend(tail);
            found.push(p);
        }
        i = end;
    }
    found
}

/// Reads the path after `crate::` from `c[j..]`: a chain of `ident::`, possibly ending in a
/// `{...}` group; returns the segment lists and where it ended.
fn path_tail(c: &[char], mut j: usize) -> (Vec<Vec<String>>, usize) {
    let mut segs = Vec::new();
    loop {
        while c.get(j).is_some_and(|ch| ch.is_whitespace()) {
            j += 1;
        }
        if c.get(j) == Some(&'{') {
            // A group: split at top-level commas, read each item's path.
            let mut out = Vec::new();
            let mut depth = 0;
            let mut k = j + 1;
            let mut item_start = k;
            while k < c.len() {
                match c[k] {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(group_item(c, item_start, k, &segs));
                        item_start = k + 1;
                    }
                    _ => {}
                }
                k += 1;
            }
            out.extend(group_item(c, item_start, k, &segs));
            return (out, k + 1);
        }
        let start = j;
        while c.get(j).is_some_and(|&ch| is_ident(ch)) {
            j += 1;
        }
        if j == start {
            break;
        }
        segs.push(c[start..j].iter().collect::<String>());
        if c.get(j) == Some(&':') && c.get(j + 1) == Some(&':') {
            j += 2;
        } else {
            break;
        }
    }
    (vec![segs], j)
}

fn group_item(c: &[char], start: usize, end: usize, prefix: &[String]) -> Vec<Vec<String>> {
    if c[start..end].iter().all(|ch| ch.is_whitespace()) {
        return Vec::new();
    }
    let (tails, _) = path_tail(&c[..end], start);
    tails
        .into_iter()
        .map(|t| {
            let mut p = prefix.to_vec();
            // `self` in a group names the prefix itself.
            p.extend(t.into_iter().filter(|s| s != "self"));
            p
        })
        .collect()
}

/// The names `lib.rs` re-exports at the crate root, each with the module path it comes from.
fn root_reexports(lib: &File) -> BTreeMap<String, Vec<String>> {
    let mut names = BTreeMap::new();
    for stmt in lib.code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else { continue };
        let rest: Vec<char> = rest.chars().collect();
        for path in path_tail(&rest, 0).0 {
            if let Some((name, module)) = path.split_last() {
                names.insert(name.clone(), module.to_vec());
            }
        }
    }
    names
}

/// The file a path lands in: the longest prefix of `path` that is a file's module (the crate
/// root's re-exports followed first).
fn target(path: &[String], modules: &BTreeSet<Vec<String>>, root: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let path: Vec<String> = match path.first().and_then(|first| root.get(first)) {
        Some(module) if !modules.contains(&path[..1].to_vec()) => module.iter().chain(&path[1..]).cloned().collect(),
        _ => path.to_vec(),
    };
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p)).unwrap_or_default()
}

fn layer_of(module: &[String]) -> Option<u32> {
    let top = module.first().map(String::as_str).unwrap_or("");
    LAYERS.iter().find(|(name, _)| *name == top).map(|&(_, l)| l)
}

fn show(module: &[String]) -> String {
    if module.is_empty() { "lib".to_string() } else { module.join("::") }
}

/// Files that import each other in a cycle (Tarjan's strongly connected components of two or
/// more files).
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        graph: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a [String], usize>,
        low: BTreeMap<&'a [String], usize>,
        stack: Vec<&'a [String]>,
        on_stack: BTreeSet<&'a [String]>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a [String]) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.graph[v] {
            let w = w.as_slice();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_vec());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_slice()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Each file's imports, as the files they land in (itself excluded).
fn import_graph(files: &[File]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let lib = files.iter().find(|f| f.module.is_empty()).expect("src/lib.rs");
    let root = root_reexports(lib);
    files
        .iter()
        .map(|f| {
            let to = paths(f).iter().map(|p| target(p, &modules, &root)).filter(|t| *t != f.module).collect();
            (f.module.clone(), to)
        })
        .collect()
}

fn all_files() -> Vec<File> {
    let mut files = Vec::new();
    read_files(&src_dir(), &[], &mut files);
    assert!(files.len() > 20, "found only {} files under {}", files.len(), src_dir().display());
    files
}

#[test]
fn every_module_has_a_layer() {
    let missing: Vec<String> =
        all_files().iter().filter(|f| layer_of(&f.module).is_none()).map(|f| show(&f.module)).collect();
    assert!(missing.is_empty(), "modules missing from LAYERS in tests/layers.rs (place each in a layer): {missing:?}");
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let files = all_files();
    let graph = import_graph(&files);
    let mut bad = Vec::new();
    for (from, tos) in &graph {
        let Some(lf) = layer_of(from) else { continue };
        for to in tos {
            if let Some(lt) = layer_of(to).filter(|&lt| lt > lf) {
                bad.push(format!("{} (layer {lf}) imports {} (layer {lt})", show(from), show(to)));
            }
        }
    }
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    eprintln!("kiln-wgpu: {} files, {edges} file-to-file imports", files.len());
    for scc in cycles(&graph) {
        let layers: BTreeSet<Option<u32>> = scc.iter().map(|m| layer_of(m)).collect();
        eprintln!(
            "import cycle of {} files, layers {layers:?}: {}",
            scc.len(),
            scc.iter().map(|m| show(m)).collect::<Vec<_>>().join(", ")
        );
    }
    assert!(bad.is_empty(), "imports from a higher layer:\n{}", bad.join("\n"));
}

/// The parser finds what the layer check relies on, so that a parser that saw nothing cannot
/// pass the check above.
#[test]
fn the_parser_sees_imports() {
    let file = File {
        module: vec!["kernels".into(), "norm".into()],
        code: strip(
            "use crate::{batch::Batcher, pool::{BufferPool, PooledBuffer}, gpu};\n\
             // use crate::context::GpuContext;\n\
             let s = \"crate::exit\"; let c = '\"'; let r = r#\"crate::fusion \"# ;\n\
             impl crate::GpuContext {}\n\
             use super::fused::check_len;\n",
        ),
    };
    let got: BTreeSet<String> = paths(&file).iter().map(|p| p.join("::")).collect();
    let want: BTreeSet<String> =
        ["batch::Batcher", "pool::BufferPool", "pool::PooledBuffer", "gpu", "GpuContext", "kernels::fused::check_len"]
            .into_iter()
            .map(String::from)
            .collect();
    assert_eq!(got, want);
    let files = all_files();
    let graph = import_graph(&files);
    let key = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    // `impl crate::context::GpuContext` in autotune.rs, and `crate::GpuContext` through the root's re-export.
    assert!(graph[&key("autotune")].contains(&key("context")), "autotune -> context not seen");
    assert!(graph[&key("kernels::matmul_coop")].contains(&key("context")), "kernels::matmul_coop -> context not seen");
    assert!(graph[&key("batch")].contains(&key("gpu")), "batch -> gpu not seen");
}
