// Materialised attention, forward: the row softmax between S = Q·Kᵀ and O = P·V. Rows of the
// score matrix [batch·heads, q_len, kv_len] are overwritten in place with the probabilities
// P = softmax(scale·S) over the keys each query sees; the row's log-sum-exp goes to `lse`.
// Same contract as the flash kernel (attention.wgsl): a key is hidden when causal and j > i, or
// when the key mask word is nonzero, or when its biased score is -inf; hidden keys get P = 0; a
// row that sees no key gets P = 0 and lse = +inf (the backward then gives it zero gradients).
// With dropout the stored P is dropped and scaled (attention_extras.wgsl); lse is not.
//
// A workgroup of 64 threads owns 64 / LANES rows; a row's LANES threads are neighbours and walk
// it in chunks of 4 elements (one vec4 load where rows are 4-aligned). One online pass keeps a
// running (max, sum) per thread, a shared-memory tree merges the lanes, a second pass writes P.
// LANES comes from `info`, so it is uniform and the barriers in the tree are too.
//
// info and the row layout: attention_rows.wgsl, prepended.
// Bindings (prepended): s (read_write, ld4_s / st4_s by row base and chunk), mask (u32), lse (f32).

var<workgroup> red_m: array<f32, 64>;
var<workgroup> red_l: array<f32, 64>;

fn neg_inf() -> f32 {
    return kiln_f32_bits(0xff800000u);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = score_row(wid, nwg, lid);
    // Read here, not through score_row: the barrier loops need it visibly uniform.
    let lanes = info[7u];
    let kv_len = info[2u];

    var m = neg_inf();
    var l = 0.0;
    for (var c = row.lane; c * 4u < row.end; c += lanes) {
        let x = scores4(row, c);
        for (var e = 0u; e < 4u; e++) {
            if visible(c * 4u + e, row.end, row.mask_base) && x[e] > neg_inf() {
                let xe = x[e];
                if xe > m {
                    // exp(-inf) = 0: the first visible key starts the sum at 1.
                    l = l * exp(m - xe) + 1.0;
                    m = xe;
                } else {
                    l += exp(xe - m);
                }
            }
        }
    }
    red_m[lid] = m;
    red_l[lid] = l;
    workgroupBarrier();
    for (var half = lanes / 2u; half > 0u; half = half / 2u) {
        if row.lane < half {
            let mb = red_m[lid + half];
            let lb = red_l[lid + half];
            let ma = red_m[lid];
            let mm = max(ma, mb);
            if mm > neg_inf() {
                red_l[lid] = red_l[lid] * exp(ma - mm) + lb * exp(mb - mm);
                red_m[lid] = mm;
            }
        }
        workgroupBarrier();
    }
    m = red_m[lid - row.lane];
    l = red_l[lid - row.lane];

    if !row.live {
        return;
    }
    var inv = 0.0;
    if l > 0.0 {
        inv = 1.0 / l;
    }
    // The whole row is written: hidden keys (past `row.end` too) get 0.
    for (var c = row.lane; c * 4u < kv_len; c += lanes) {
        let x = scores4(row, c);
        var p = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            if visible(c * 4u + e, row.end, row.mask_base) && x[e] > neg_inf() {
                p[e] = exp(x[e] - m) * inv;
            }
        }
        st4_s(row.base, c, p * attn_drop4(row.r, c * 4u, kv_len));
    }
    if row.lane == 0u {
        var z = kiln_f32_bits(0x7f800000u);
        if l > 0.0 {
            z = m + log(l);
        }
        lse[row.r] = z;
    }
}
