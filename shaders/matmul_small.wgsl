// Batched matmul for matrix-vector-like shapes (m or n tiny), where a 64×64 output tile would
// sit mostly idle: each output is a dot product split over KL lanes of a workgroup, and a
// workgroup computes 256 / KL outputs.
// info: [M, N, K, outputs, KL, k_inner, a_off, a_sb, a_sm, a_sk, b_off, b_sb, b_sk, b_sn]
// KL is a power of two (≤ 256). k_inner puts a dot product's lanes on neighbouring threads, for
// operands whose k-stride is the small one; otherwise neighbouring threads take neighbouring
// outputs, which is what reads a row-major [k, n] right-hand side in order.

{{BINDINGS}}

var<workgroup> partial: array<{{C}}, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let M = info[0];
    let N = info[1];
    let K = info[2];
    let KL = info[4];
    let per_group = 256u / KL;
    var kl = lid / per_group;
    var ol = lid % per_group;
    if info[5] != 0u {
        kl = lid % KL;
        ol = lid / KL;
    }
    let o = linear_group(wid, nwg) * per_group + ol;
    var acc = {{C}}(0);
    if o < info[3] {
        let n = o % N;
        let mb = o / N;
        let m = mb % M;
        let bi = mb / M;
        let a_sk = info[9];
        let b_sk = info[12];
        var pa = info[6] + bi * info[7] + m * info[8] + kl * a_sk;
        var pb = info[10] + bi * info[11] + n * info[13] + kl * b_sk;
        for (var k = kl; k < K; k += KL) {
            acc += {{LOAD_A}} * {{LOAD_B}};
            pa += KL * a_sk;
            pb += KL * b_sk;
        }
    }
    // Tree-sum each output's KL partial sums; its lanes sit at ol·KL + 0..KL.
    let slot = ol * KL;
    partial[slot + kl] = acc;
    workgroupBarrier();
    for (var s = KL / 2u; s > 0u; s /= 2u) {
        if kl < s {
            partial[slot + kl] += partial[slot + kl + s];
        }
        workgroupBarrier();
    }
    if kl == 0u && o < info[3] {
        out[o] = {{STORE}};
    }
}
