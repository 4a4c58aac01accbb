// Σ x² of up to eight tensors bound together, the first pass of `sum_squares` (gradient
// clipping's norm): each workgroup sums the squares of its share of one tensor into one slot of
// a partials buffer; `sum_squares_finish.wgsl` then adds each tensor's slots. One dispatch thus
// serves several gradients, where squaring, reducing and adding each cost three or four.
//
// Tensor t owns workgroups [first_t, first_t + groups_t) and partial slots out_base + those
// indices. Its elements are walked in blocks of 1024 (four loads of 256 consecutive elements
// per thread, in flight together), workgroup c taking blocks c, c + groups_t, c + 2·groups_t, ….
//
// Parameters: SumSquaresParams (kernels/sum_squares.rs); the table at word `table` holds
// [first, len, groups] per tensor, in order of `first`.
// Prepended: binding 1 `partials` (read_write f32); bindings 2.. the tensors x0, x1, … and
// `tensor_sum(t, c, groups, n, lid) -> f32`, this thread's share of tensor t's Σ x².

{{PARAMS}}
var<workgroup> tree: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let h = params();
    // The tensor this workgroup serves: the last whose first workgroup is at or before g.
    var t = 0u;
    loop {
        if t + 1u >= h.tensors || info[h.table + 3u * (t + 1u)] > g {
            break;
        }
        t += 1u;
    }
    let row = h.table + 3u * t;
    // Past the last tensor's workgroups (a 2-D grid's spare ones) there is nothing to add.
    let c = g - info[row];
    let inside = c < info[row + 2u];
    var s = 0.0;
    if inside {
        s = tensor_sum(t, c, info[row + 2u], info[row + 1u], lid);
    }
    tree[lid] = s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if lid < w {
            tree[lid] += tree[lid + w];
        }
        workgroupBarrier();
    }
    if lid == 0u && inside {
        partials[h.out_base + g] = tree[0];
    }
}
