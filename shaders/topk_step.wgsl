// topk over the last dim, part 2 of 3: one compare distance j of bitonic merge s, for j at
// least a tile (shorter distances run in workgroup memory in topk.wgsl). One thread per pair
// of positions (e, e + j) with bit j of e clear; the direction is ascending (best first) when
// (e & s) == 0. Pairs rank as in topk.wgsl: larger key first, ties to the lower index.
// info: [rows, padded, s, j]

@group(0) @binding(1) var<storage, read_write> pairs: array<vec2<u32>>;

fn ranks_before(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y < b.y);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let half = info[1] / 2u;
    let q = linear_group(wid, nwg) * 256u + lid;
    if q >= info[0] * half { return; }
    let s = info[2];
    let j = info[3];
    let r = q % half;
    let e = ((r & ~(j - 1u)) << 1u) | (r & (j - 1u));
    let at = (q / half) * info[1];
    let a = pairs[at + e];
    let b = pairs[at + e + j];
    if ranks_before(b, a) == ((e & s) == 0u) {
        pairs[at + e] = b;
        pairs[at + e + j] = a;
    }
}
