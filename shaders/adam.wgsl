// One Adam / AdamW step in place, one thread per element (PyTorch's formulas):
//   decoupled: p ← p·(1 − lr·wd)        else: g ← g + wd·p
//   m ← β₁m + (1 − β₁)g,   v ← β₂v + (1 − β₂)g²
//   p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
// The bias corrections come from `adam_bias(i)` (prepended): computed on the host in f64 from
// the host's step count, or (gated, for GradScaler) here from a step count kept on the device,
// where a set inf/NaN flag also skips the whole update without counting it.
//
// info: [n, lr, beta1, beta2, eps, weight_decay, decoupled, (lr / bias1, √bias2) or
// (ln β₁, ln β₂), 1 − lr·wd, gated: slot of `steps` to read] (floats as f32 bits)
// Bindings (prepended): p (read_write), g (read), m, v (read_write); ld_*/st_* helpers;
// gated: steps (read_write u32), found_inf (read u32).

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    let bias = adam_bias(i);
    if i >= info[0] || bias.z != 0.0 {
        return;
    }
    let b1 = bitcast<f32>(info[2]);
    let b2 = bitcast<f32>(info[3]);
    let eps = bitcast<f32>(info[4]);
    let wd = bitcast<f32>(info[5]);
    let step_size = bias.x;
    let sqrt_bias2 = bias.y;
    var p = ld_p(i);
    var g = ld_g(i);
    if info[6] != 0u {
        p = p * bitcast<f32>(info[9]);
    } else {
        g = g + wd * p;
    }
    let m = b1 * ld_m(i) + (1.0 - b1) * g;
    let v = b2 * ld_v(i) + (1.0 - b2) * g * g;
    st_m(i, m);
    st_v(i, v);
    st_p(i, p - step_size * (m / (sqrt(v) / sqrt_bias2 + eps)));
}
