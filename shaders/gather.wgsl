// gather: out[p] = src[p with p[dim] = ids[p]]; `out` has the shape of `ids`, which has src's
// rank and is no larger than src outside `dim`.
// info: [numel, dim, base(src), base(ids), ...layout blocks]
// One walk over the output coordinates yields both the ids index and src's index (less dim's
// term). T is the storage word (pure data movement: 4-byte dtypes travel as u32). An id past
// the dim (i32 negatives arrive as huge u32) reads nothing and writes zero.

@group(0) @binding(1) var<storage, read> src: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= info[0] { return; }
    let dim = info[1];
    let sb = info[2];
    let ib = info[3];
    let rank = info[ib + 1u];
    var at = info[sb];
    var id_at = info[ib];
    var rem = i;
    var d = rank;
    loop {
        if d == 0u { break; }
        d -= 1u;
        let extent = info[ib + 2u + d];
        let c = rem % extent;
        rem /= extent;
        id_at += c * info[ib + 2u + rank + d];
        if d != dim { at += c * info[sb + 2u + rank + d]; }
    }
    let id = ids[id_at];
    if id >= info[sb + 2u + dim] {
        out[i] = {{T}}();
        return;
    }
    out[i] = src[at + id * info[sb + 2u + rank + dim]];
}
