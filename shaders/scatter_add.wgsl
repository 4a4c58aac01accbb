// scatter_add: a contiguous copy of `dst` with src[q] added at q with q[dim] = ids[q].
// Parameters: ScatterParams (kernels/index.rs, shared with scatter_reduce.wgsl, which alone
// reads `op` and `include_self`); `dst`, `ids`, `src` are their layout blocks' bases.
// WGSL has no float atomics, so each thread owns one output element p and scans the ids
// positions along `dim` that share p's other coordinates, adding the matches in increasing
// order: the sum is deterministic. Outside the ids extent p is a plain copy. The generator
// fills T (storage) and C (compute: f16 accumulates in f32; integers wrap).

{{PARAMS}}
@group(0) @binding(1) var<storage, read> dst: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> out: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= p.numel { return; }
    let dim = p.dim;
    let rank = layout_rank(p.dst);
    var at = layout_offset(p.dst);
    var id_at = layout_offset(p.ids);
    var src_at = layout_offset(p.src);
    var inside = true;
    var want = 0u;
    var rem = i;
    var d = rank;
    loop {
        if d == 0u { break; }
        d -= 1u;
        let extent = layout_size(p.dst, d);
        let c = rem % extent;
        rem /= extent;
        at += c * layout_stride(p.dst, rank, d);
        if d == dim {
            want = c;
        } else {
            inside = inside && c < layout_size(p.ids, d);
            id_at += c * layout_stride(p.ids, rank, d);
            src_at += c * layout_stride(p.src, rank, d);
        }
    }
    var acc = {{C}}(dst[at]);
    if inside {
        let len = layout_size(p.ids, dim);
        let id_step = layout_stride(p.ids, rank, dim);
        let src_step = layout_stride(p.src, rank, dim);
        for (var m = 0u; m < len; m++) {
            if ids[id_at + m * id_step] == want {
                acc += {{C}}(src[src_at + m * src_step]);
            }
        }
    }
    out[i] = {{T}}(acc);
}
