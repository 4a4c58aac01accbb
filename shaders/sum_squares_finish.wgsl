// The second pass of `sum_squares`: workgroup t adds tensor t's partial sums (slots
// [start, start + count) of `partials`, written by `sum_squares.wgsl`) into out[t].
//
// Parameters: SumSquaresFinishParams (kernels/sum_squares.rs); the table at word `table` holds
// [start, count] per tensor.
// Prepended: binding 1 `partials` (read f32), binding 2 `out` (read_write f32).

{{PARAMS}}
var<workgroup> tree: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = linear_group(wid, nwg);
    let h = params();
    // Uniform per workgroup: the whole group leaves together, before any barrier.
    if t >= h.tensors {
        return;
    }
    let start = info[h.table + 2u * t];
    let count = info[h.table + 2u * t + 1u];
    var s = 0.0;
    for (var j = lid; j < count; j += 256u) {
        s += partials[start + j];
    }
    tree[lid] = s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if lid < w {
            tree[lid] += tree[lid + w];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out[t] = tree[0];
    }
}
