// One Adam / AdamW step in place, one thread per element (PyTorch's formulas):
//   decoupled: p ← p·(1 − lr·wd)        else: g ← g + wd·p
//   m ← β₁m + (1 − β₁)g,   v ← β₂v + (1 − β₂)g²
//   p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
// The bias corrections come from `adam_bias(i)` (prepended): computed on the host in f64 from
// the host's step count, or (gated, for GradScaler) here from a step count kept on the device,
// where a set inf/NaN flag also skips the whole update without counting it.
//
// Parameters: AdamKernelParams (kernels/optim.rs); `bias_a`, `bias_b` are (lr / bias1, √bias2)
// or, gated, (ln β₁, ln β₂); `slot` (gated) is the slot of `steps` to read. The struct is `h`
// here: `p` is the parameter.
// Bindings (prepended): p (read_write), g (read), m, v (read_write); ld_*/st_* helpers;
// gated: steps (read_write u32), found_inf (read u32).

{{PARAMS}}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    let h = params();
    let bias = adam_bias(i);
    if i >= h.n || bias.z != 0.0 {
        return;
    }
    let b1 = h.beta1;
    let b2 = h.beta2;
    let eps = h.eps;
    let wd = h.weight_decay;
    let step_size = bias.x;
    let sqrt_bias2 = bias.y;
    var p = ld_p(i);
    var g = ld_g(i);
    if h.decoupled != 0u {
        p = p * h.decay;
    } else {
        g = g + wd * p;
    }
    let m = b1 * ld_m(i) + (1.0 - b1) * g;
    let v = b2 * ld_v(i) + (1.0 - b2) * g * g;
    st_m(i, m);
    st_v(i, v);
    st_p(i, p - step_size * (m / (sqrt(v) / sqrt_bias2 + eps)));
}
