// Gradient of cross-entropy from logits, one thread per logit:
//   dx[r, j] = grad[r] · (exp(x[r, j] − lse[r]) − (1 − ε)·[j == t_r] − ε/C),  0 for ignored rows.
//
// info: [rows, classes, has_ignore, ignore_index, smoothing (f32 bits)]
// Bindings (prepended): x, targets (u32 words), lse (f32), grad ([rows], x's dtype), dx; ld_x,
// ld_grad, st_dx.

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    let c = info[1];
    if i >= info[0] * c {
        return;
    }
    let r = i / c;
    let j = i % c;
    let t = targets[r];
    if info[2] != 0u && t == info[3] {
        st_dx(i, 0.0);
        return;
    }
    let eps = bitcast<f32>(info[4]);
    var onehot = 0.0;
    if j == t {
        onehot = 1.0 - eps;
    }
    st_dx(i, ld_grad(r) * (exp(ld_x(i) - lse[r]) - onehot - eps / f32(c)));
}
