// Cross-entropy from logits, one row of contiguous [rows, classes] per workgroup of 256
// threads: an online (max, Σ exp(x − max)) per lane, as in softmax.wgsl, plus the row sum for
// label smoothing; a shared-memory tree merges the lanes; lane 0 picks the target's logit.
//   lse = max + log Σ exp(x − max)
//   loss = (1 − ε)·(lse − x[t]) + ε·(lse − mean(x)),   0 where t is the ignored index.
// A target past the classes (the core rejects those first) gives NaN, never a wild read.
//
// Parameters: CrossEntropyKernelParams (kernels/cross_entropy.rs).
// Bindings (prepended): x (read), targets (u32 words; i32 ids are their bit patterns, read),
// loss (x's dtype), lse (f32); ld_x/st_loss.

{{PARAMS}}
struct MaxSum {
    m: f32,
    z: f32,
}

var<workgroup> red_m: array<f32, 256>;
var<workgroup> red_z: array<f32, 256>;
var<workgroup> red_s: array<f32, 256>;

fn neg_inf() -> f32 {
    return kiln_f32_bits(0xff800000u);
}

fn push(a: MaxSum, x: f32) -> MaxSum {
    if x > a.m {
        return MaxSum(x, a.z * exp(a.m - x) + 1.0);
    }
    if bitcast<u32>(x) == 0xff800000u {
        return a;
    }
    return MaxSum(a.m, a.z + exp(x - a.m));
}

fn rescale(m: f32, z: f32, to: f32) -> f32 {
    if m == to {
        return z;
    }
    return z * exp(m - to);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let row = linear_group(wid, nwg);
    let rows = p.rows;
    let c = p.classes;
    if row >= rows {
        return;
    }
    let base = row * c;
    var st = MaxSum(neg_inf(), 0.0);
    var s = 0.0;
    for (var j = lid; j < c; j += 256u) {
        let x = ld_x(base + j);
        st = push(st, x);
        s += x;
    }
    red_m[lid] = st.m;
    red_z[lid] = st.z;
    red_s[lid] = s;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if lid < k {
            let m = max(red_m[lid], red_m[lid + k]);
            red_z[lid] = rescale(red_m[lid], red_z[lid], m) + rescale(red_m[lid + k], red_z[lid + k], m);
            red_m[lid] = m;
            red_s[lid] += red_s[lid + k];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        let z = red_m[0] + log(red_z[0]);
        lse[row] = z;
        let t = targets[row];
        let eps = p.smoothing;
        var loss = 0.0;
        if p.has_ignore != 0u && t == p.ignore_index {
            loss = 0.0;
        } else if t >= c {
            loss = kiln_f32_bits(0x7fc00000u);
        } else {
            loss = (1.0 - eps) * (z - ld_x(base + t)) + eps * (z - red_s[0] / f32(c));
        }
        st_loss(row, loss);
    }
}
