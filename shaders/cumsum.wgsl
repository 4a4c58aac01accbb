// Inclusive prefix sum along one dim of a strided layout, into a contiguous output.
//
// Parameters: CumsumParams (kernels/reduce.rs); `lines` is also the base of the layout block
// without the scanned dim (`lines_base`).
//
// A "line" is one 1-D slice along the scanned dim; line t starts at storage index
// layout_index(lines_base, t) and steps by s. Its output starts at
// (t / inner) * len * inner + t % inner and steps by inner.
//
// Two specialisations fill SHARED and SCAN from the `// @@` sections below:
// - sequential (lanes == 1): one thread scans a whole line. Chosen when the scanned dim is not
//   the innermost one, so neighbouring threads hold neighbouring lines and both reads and
//   writes are coalesced across threads. A line that is both long and alone runs serially:
//   correct, but slow.
// - tiled (lanes > 1): 256 / lanes lines per workgroup; a line is walked in tiles of `lanes`
//   elements, each tile scanned in shared memory (Hillis-Steele, log2(lanes) steps) and offset
//   by the running total of the earlier tiles. Chosen for lines longer than 16 when the dim is
//   innermost (or read with stride 1), where lanes read and write neighbouring elements.
//   A few very long lines still get one workgroup each (a chunked multi-pass scan would
//   spread them over the GPU; not needed yet).
// The sequential one holds no barrier (see reduce.wgsl for why that matters on lavapipe).
//
// The generator also fills BINDINGS (`src`, `dst`, `load_src`, `store_dst`) and CT.

{{PARAMS}}
{{BINDINGS}}

{{SHARED}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let lines = p.lines;
    let len = p.len;
    let inner = p.inner;
    let lanes = p.lanes;
    let stride = p.stride;
    let row_local = lid / lanes;
    let lane = lid % lanes;
    let t = linear_group(wid, nwg) * (256u / lanes) + row_local;
    let live = t < lines;
    var base = 0u;
    if live {
        base = layout_index(p.lines_base, t);
    }
    let out_base = (t / inner) * len * inner + t % inner;
{{SCAN}}
}

// @@ shared-tiled
var<workgroup> sh: array<{{CT}}, 256>;
// @@ scan-sequential
    if live {
        var acc = {{CT}}(0);
        for (var j = 0u; j < len; j++) {
            acc += load_src(base + j * stride);
            store_dst(out_base + j * inner, acc);
        }
    }
// @@ scan-tiled
    var carry = {{CT}}(0);
    for (var start = 0u; start < len; start += lanes) {
        let j = start + lane;
        let inside = live && j < len;
        var v = {{CT}}(0);
        if inside {
            v = load_src(base + j * stride);
        }
        sh[lid] = v;
        workgroupBarrier();
        for (var d = 1u; d < lanes; d <<= 1u) {
            var add = {{CT}}(0);
            if lane >= d {
                add = sh[lid - d];
            }
            workgroupBarrier();
            sh[lid] += add;
            workgroupBarrier();
        }
        if inside {
            store_dst(out_base + j * inner, carry + sh[lid]);
        }
        carry += sh[row_local * lanes + lanes - 1u];
        workgroupBarrier();
    }
