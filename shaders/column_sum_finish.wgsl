// Column sums, the second pass: adds the `chunks` vec4 partials of each vec4 column (written by
// column_sum.wgsl, one row of `cols4` per chunk) and stores the four sums in the output dtype.
// Laid out as the first pass: a workgroup owns 32 vec4 columns, and its 8 lanes take chunks
// lane, lane + 8, …, meeting in a small tree. (One thread per column, each folding all the
// chunks in turn, waited on a chain of up to 128 loads: 13.7 µs per call on an H100 in W10,
// about as long as the first pass.)
//
// Parameters: ColumnSumParams (kernels/column_sum.rs).
// Prepended: binding 1 `part` (array<vec4<f32>>, read), binding 2 `dst` (array<vec4<T>>) and
// `store4(i, v)`.

{{PARAMS}}
var<workgroup> tree: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = params();
    let c4 = linear_group(wid, nwg) * 32u + lid % 32u;
    let lane = lid / 32u;
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    if c4 < h.cols4 {
        var p = lane;
        for (; p + 8u < h.chunks; p += 16u) {
            a += part[p * h.cols4 + c4];
            b += part[(p + 8u) * h.cols4 + c4];
        }
        for (; p < h.chunks; p += 8u) {
            a += part[p * h.cols4 + c4];
        }
    }
    tree[lid] = a + b;
    workgroupBarrier();
    for (var s = 4u; s > 0u; s >>= 1u) {
        if lane < s {
            tree[lid] += tree[lid + 32u * s];
        }
        workgroupBarrier();
    }
    if lane == 0u && c4 < h.cols4 {
        store4(c4, tree[lid]);
    }
}
