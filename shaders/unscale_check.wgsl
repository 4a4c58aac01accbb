// GradScaler's unscale with its inf/NaN check, in place: g ← g · inv_scale, and flag[0] |= 1
// when any result is inf or NaN. Replaces a scale kernel, one or two reduce kernels and an add
// per gradient; the flag stays on the device, so many gradients share one readback.
//
// The check looks at the bits (WGSL lets a compiler assume floats are finite, so isinf-style
// comparisons may be folded away) and at the *result*: an inf input stays inf, NaN stays NaN, and a
// finite product past the stored dtype's range counts too. `overflowed` compares |y|'s f32 bits
// with the first value that is not finite once stored: 0x7f800000 (inf) for f32, 65520 =
// 0x477ff000 for f16, where round-to-nearest-even first reaches inf.
//
// One flag write per workgroup at most: threads that see a bad value mark workgroup memory, and
// after the barrier thread 0 ORs into the global flag once.
//
// Parameters: UnscaleParams (kernels/optim.rs): `units`, one element each, or four when the
// kernel is the vec4 specialisation (length a multiple of 4), and the host's `inv_scale`.
// Prepended: binding 1 `g` (read_write) and binding 2 `flag: array<atomic<u32>>`;
//   ld_g(i) -> V, st_g(i, V) and overflowed(V) -> bool, where V is f32 or vec4<f32>;
//   inv_scale() -> f32: params().inv_scale, or 1 / scale[0] from binding 3 when GradScaler keeps its
//   scale on the device.

{{PARAMS}}
var<workgroup> wg_bad: atomic<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if i < params().units {
        let y = ld_g(i) * inv_scale();
        st_g(i, y);
        if overflowed(y) {
            atomicStore(&wg_bad, 1u);
        }
    }
    workgroupBarrier();
    if lid == 0u && atomicLoad(&wg_bad) != 0u {
        atomicOr(&flag[0], 1u);
    }
}
