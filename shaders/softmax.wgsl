// Softmax and log-softmax over the last dim, computed in f32.
//
// Parameters: SoftmaxParams (kernels/reduce.rs); `lead` is the base of the leading dims'
// layout block, which `row_base` reads.
//
// A workgroup of 256 threads owns 256 / lanes rows; a row's lanes are neighbours, so a
// contiguous row is read coalesced. One online pass keeps a running (max, sum of exp(x - max))
// per lane, rescaling the sum when the max grows; a shared-memory tree merges the lanes; a
// second pass writes the outputs. The row is read twice and written once.
//
// The generator fills BINDINGS (`src`, `dst`, `row_base` and the loads and stores), and from
// the `// @@` sections at the end of this file:
// - OUTPUT: the value written for `x`, given the row's max `m`, sum `z` and `log(z)` as `lz`;
// - FIRST and SECOND, the two passes: scalar (any stride), or vec4 when the rows are
//   contiguous and 4-aligned (then `base`, `j` and the loads count vec4s: a quarter of the
//   load and store instructions);
// - SHARED and MERGE, which leave the row's (max, sum) in `total`: with one lane per row
//   that is the lane's own state, and the shader holds no shared memory and no barrier (see
//   reduce.wgsl for why that matters on lavapipe).

{{PARAMS}}
{{BINDINGS}}

struct MaxSum {
    m: f32,
    z: f32,
}

{{SHARED}}

fn neg_inf() -> f32 {
    return kiln_f32_bits(0xff800000u);
}

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn is_inf(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;
}

fn is_neg_inf(x: f32) -> bool {
    return bitcast<u32>(x) == 0xff800000u;
}

fn push(a: MaxSum, x: f32) -> MaxSum {
    if x > a.m {
        // exp(-inf) is 0, so the first finite element starts the sum at 1.
        return MaxSum(x, a.z * exp(a.m - x) + 1.0);
    }
    // -inf adds nothing; skipping it also avoids exp(-inf - -inf) = NaN while a.m is -inf.
    // NaN falls through and poisons the sum, as it should.
    if is_neg_inf(x) {
        return a;
    }
    return MaxSum(a.m, a.z + exp(x - a.m));
}

fn finish(x: f32, m: f32, z: f32, lz: f32, poisoned: bool) -> f32 {
    if poisoned {
        return kiln_f32_bits(0x7fc00000u);
    }
    return {{OUTPUT}};
}

fn push4(a: MaxSum, v: vec4<f32>) -> MaxSum {
    return push(push(push(push(a, v.x), v.y), v.z), v.w);
}

fn finish4(v: vec4<f32>, m: f32, z: f32, lz: f32, poisoned: bool) -> vec4<f32> {
    return vec4<f32>(finish(v.x, m, z, lz, poisoned), finish(v.y, m, z, lz, poisoned), finish(v.z, m, z, lz, poisoned), finish(v.w, m, z, lz, poisoned));
}

fn rescale(a: MaxSum, m: f32) -> f32 {
    if a.m == m {
        return a.z;
    }
    return a.z * exp(a.m - m);
}

fn merge(a: MaxSum, b: MaxSum) -> MaxSum {
    let m = max(a.m, b.m);
    return MaxSum(m, rescale(a, m) + rescale(b, m));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let rows = p.rows;
    let n = p.n;
    let stride = p.stride;
    let lanes = p.lanes;
    let row_local = lid / lanes;
    let lane = lid % lanes;
    let g = linear_group(wid, nwg) * (256u / lanes) + row_local;
    let live = g < rows;

    var base = 0u;
    var st = MaxSum(neg_inf(), 0.0);
    if live {
        base = row_base(g);
{{FIRST}}
    }

{{MERGE}}

    if live {
        let m = total.m;
        let z = total.z;
        let lz = log(z);
        // All -inf (max -inf), any +inf (max +inf) or any NaN (sum NaN): the row is NaN, as in
        // PyTorch, where x - max or the sum is NaN.
        let poisoned = is_inf(m) || is_nan(z);
{{SECOND}}
    }
}

// @@ output-softmax
exp(x - m) / z
// @@ output-log-softmax
x - m - lz
// @@ shared-tree
var<workgroup> sh: array<MaxSum, 256>;
// @@ merge-tree
    sh[lid] = st;
    workgroupBarrier();
    for (var s = lanes / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            sh[lid] = merge(sh[lid], sh[lid + s]);
        }
        workgroupBarrier();
    }
    let total = sh[row_local * lanes];
// @@ merge-single
    let total = st;
// @@ first-scalar
        // Four loads in flight per step: one at a time leaves most of the bandwidth idle.
        var j = lane;
        for (; j < n && n - j > 3u * lanes; j += 4u * lanes) {
            let x0 = load_src(base + j * stride);
            let x1 = load_src(base + (j + lanes) * stride);
            let x2 = load_src(base + (j + 2u * lanes) * stride);
            let x3 = load_src(base + (j + 3u * lanes) * stride);
            st = push(push(push(push(st, x0), x1), x2), x3);
        }
        for (; j < n; j += lanes) {
            st = push(st, load_src(base + j * stride));
        }
// @@ second-scalar
        // Loads first, then stores: the compiler cannot move a load above a store to a buffer
        // that might alias it.
        let out_base = g * n;
        var j = lane;
        for (; j < n && n - j > 3u * lanes; j += 4u * lanes) {
            let x0 = load_src(base + j * stride);
            let x1 = load_src(base + (j + lanes) * stride);
            let x2 = load_src(base + (j + 2u * lanes) * stride);
            let x3 = load_src(base + (j + 3u * lanes) * stride);
            store_dst(out_base + j, finish(x0, m, z, lz, poisoned));
            store_dst(out_base + j + lanes, finish(x1, m, z, lz, poisoned));
            store_dst(out_base + j + 2u * lanes, finish(x2, m, z, lz, poisoned));
            store_dst(out_base + j + 3u * lanes, finish(x3, m, z, lz, poisoned));
        }
        for (; j < n; j += lanes) {
            store_dst(out_base + j, finish(load_src(base + j * stride), m, z, lz, poisoned));
        }
// @@ first-vec
        let n4 = n / 4u;
        var j = lane;
        for (; j < n4 && n4 - j > lanes; j += 2u * lanes) {
            let v0 = load_src4(base + j);
            let v1 = load_src4(base + j + lanes);
            st = push4(push4(st, v0), v1);
        }
        for (; j < n4; j += lanes) {
            st = push4(st, load_src4(base + j));
        }
// @@ second-vec
        let n4 = n / 4u;
        let out_base = g * n4;
        var j = lane;
        for (; j < n4 && n4 - j > lanes; j += 2u * lanes) {
            let v0 = load_src4(base + j);
            let v1 = load_src4(base + j + lanes);
            store_dst4(out_base + j, finish4(v0, m, z, lz, poisoned));
            store_dst4(out_base + j + lanes, finish4(v1, m, z, lz, poisoned));
        }
        for (; j < n4; j += lanes) {
            store_dst4(out_base + j, finish4(load_src4(base + j), m, z, lz, poisoned));
        }
