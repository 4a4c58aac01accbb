// scatter_add: a contiguous copy of `dst` with src[q] added at q with q[dim] = ids[q].
// info: [numel, dim, base(dst), base(ids), base(src), ...layout blocks]
// WGSL has no float atomics, so each thread owns one output element p and scans the ids
// positions along `dim` that share p's other coordinates, adding the matches in increasing
// order: the sum is deterministic. Outside the ids extent p is a plain copy. The generator
// fills T (storage) and C (compute: f16 accumulates in f32; integers wrap).

@group(0) @binding(1) var<storage, read> dst: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> out: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= info[0] { return; }
    let dim = info[1];
    let db = info[2];
    let ib = info[3];
    let sb = info[4];
    let rank = info[db + 1u];
    var at = info[db];
    var id_at = info[ib];
    var src_at = info[sb];
    var inside = true;
    var want = 0u;
    var rem = i;
    var d = rank;
    loop {
        if d == 0u { break; }
        d -= 1u;
        let extent = info[db + 2u + d];
        let c = rem % extent;
        rem /= extent;
        at += c * info[db + 2u + rank + d];
        if d == dim {
            want = c;
        } else {
            inside = inside && c < info[ib + 2u + d];
            id_at += c * info[ib + 2u + rank + d];
            src_at += c * info[sb + 2u + rank + d];
        }
    }
    var acc = {{C}}(dst[at]);
    if inside {
        let len = info[ib + 2u + dim];
        let id_step = info[ib + 2u + rank + dim];
        let src_step = info[sb + 2u + rank + dim];
        for (var m = 0u; m < len; m++) {
            if ids[id_at + m * id_step] == want {
                acc += {{C}}(src[src_at + m * src_step]);
            }
        }
    }
    out[i] = {{T}}(acc);
}
