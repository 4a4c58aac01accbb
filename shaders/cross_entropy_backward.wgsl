// Gradient of cross-entropy from logits, one thread per logit:
//   dx[r, j] = grad[r] · (exp(x[r, j] − lse[r]) − (1 − ε)·[j == t_r] − ε/C),  0 for ignored rows.
//
// Parameters: CrossEntropyKernelParams (kernels/cross_entropy.rs).
// Bindings (prepended): x, targets (u32 words), lse (f32), grad ([rows], x's dtype), dx; ld_x,
// ld_grad, st_dx.

{{PARAMS}}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    let p = params();
    let c = p.classes;
    if i >= p.rows * c {
        return;
    }
    let r = i / c;
    let j = i % c;
    let t = targets[r];
    if p.has_ignore != 0u && t == p.ignore_index {
        st_dx(i, 0.0);
        return;
    }
    let eps = p.smoothing;
    var onehot = 0.0;
    if j == t {
        onehot = 1.0 - eps;
    }
    st_dx(i, ld_grad(r) * (exp(ld_x(i) - lse[r]) - onehot - eps / f32(c)));
}
