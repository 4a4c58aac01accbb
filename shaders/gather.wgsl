// gather: out[p] = src[p with p[dim] = ids[p]]; `out` has the shape of `ids`, which has src's
// rank and is no larger than src outside `dim`.
// Parameters: GatherParams (kernels/index.rs); `src` and `ids` are their layout blocks' bases.
// One walk over the output coordinates yields both the ids index and src's index (less dim's
// term). T is the storage word (pure data movement: 4-byte dtypes travel as u32). An id past
// the dim (i32 negatives arrive as huge u32) reads nothing and writes zero.

{{PARAMS}}
@group(0) @binding(1) var<storage, read> src: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= p.numel { return; }
    let dim = p.dim;
    let rank = layout_rank(p.ids);
    var at = layout_offset(p.src);
    var id_at = layout_offset(p.ids);
    var rem = i;
    var d = rank;
    loop {
        if d == 0u { break; }
        d -= 1u;
        let extent = layout_size(p.ids, d);
        let c = rem % extent;
        rem /= extent;
        id_at += c * layout_stride(p.ids, rank, d);
        if d != dim { at += c * layout_stride(p.src, rank, d); }
    }
    let id = ids[id_at];
    if id >= layout_size(p.src, dim) {
        out[i] = {{T}}();
        return;
    }
    out[i] = src[at + id * layout_stride(p.src, rank, dim)];
}
