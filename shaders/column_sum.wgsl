// Column sums of a row-major matrix (bias gradients: Σ over [rows, cols] down each column), the
// first pass: vec4 loads of four neighbouring columns. A workgroup owns 32 vec4 columns (128
// columns) and one chunk of rows; its 8 row lanes take rows lane, lane + 8, …, so a subgroup of
// 32 threads reads 512 contiguous bytes per load, four loads in flight. The lanes' sums meet in
// a small tree and one f32 vec4 partial per (chunk, vec4 column) goes to `part`, which
// `column_sum_finish.wgsl` adds up.
//
// Parameters: ColumnSumParams (kernels/column_sum.rs), in vec4 units where named so: element
// (r, 4·c4 + e) of the matrix is src[offset4 + r·stride4 + c4][e].
// Prepended: binding 1 `src` (array<vec4<T>>, read), binding 2 `part` (array<vec4<f32>>).

{{PARAMS}}
var<workgroup> tree: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = params();
    let g = linear_group(wid, nwg);
    let block = g % h.blocks;
    let chunk_id = g / h.blocks;
    let c4 = block * 32u + lid % 32u;
    let lane = lid / 32u;
    var acc = vec4<f32>(0.0);
    if c4 < h.cols4 && chunk_id < h.chunks {
        let hi = min((chunk_id + 1u) * h.chunk, h.rows);
        var r = chunk_id * h.chunk + lane;
        for (; r + 24u < hi; r += 32u) {
            let a = load4(h.offset4 + r * h.stride4 + c4);
            let b = load4(h.offset4 + (r + 8u) * h.stride4 + c4);
            let c = load4(h.offset4 + (r + 16u) * h.stride4 + c4);
            let d = load4(h.offset4 + (r + 24u) * h.stride4 + c4);
            acc += (a + b) + (c + d);
        }
        for (; r < hi; r += 8u) {
            acc += load4(h.offset4 + r * h.stride4 + c4);
        }
    }
    tree[lid] = acc;
    workgroupBarrier();
    for (var s = 4u; s > 0u; s >>= 1u) {
        if lane < s {
            tree[lid] += tree[lid + 32u * s];
        }
        workgroupBarrier();
    }
    if lane == 0u && c4 < h.cols4 && chunk_id < h.chunks {
        part[chunk_id * h.cols4 + c4] = tree[lid];
    }
}
