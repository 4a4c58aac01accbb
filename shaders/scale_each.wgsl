// x ← x · factor[0] in place for up to eight tensors bound together, the scale of
// `clip_grad_norm_` (kernels/scale_each.rs): one dispatch serves several gradients, where a
// fused multiply each would cost one dispatch and a fresh buffer per gradient. The factor is read
// on the device, so the host never needs the norm.
//
// Tensor t owns workgroups [first_t, first_t + groups_t); workgroup c of it takes blocks of
// 1024 elements c, c + groups_t, … (four elements a thread, 256 apart: coalesced).
//
// Parameters: ScaleEachParams (kernels/scale_each.rs); the table at word `table` holds
// [first, len, groups] per tensor, in order of `first`.
// Prepended: binding 1 `factor` (f32, read); bindings 2.. the tensors x0, x1, … (read_write) and
// `scale_tensor(t, c, groups, n, lid, f)`.

{{PARAMS}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let h = params();
    var t = 0u;
    loop {
        if t + 1u >= h.tensors || info[h.table + 3u * (t + 1u)] > g {
            break;
        }
        t += 1u;
    }
    let row = h.table + 3u * t;
    let c = g - info[row];
    // A 2-D grid's spare workgroups, past the last tensor's.
    if c >= info[row + 2u] {
        return;
    }
    scale_tensor(t, c, info[row + 2u], info[row + 1u], lid, factor[0]);
}
