// Scaled dot-product attention forward, flash-attention style: a workgroup owns BR = 64 query
// rows of one (batch, head), one thread per row holding its scaled query and output
// accumulator in registers (D is baked in). Keys and values stream through shared memory in
// tiles of BC rows; each thread keeps an online softmax (running max m, running sum l,
// rescaling acc when m grows), so no [q_len, kv_len] score matrix ever exists. The causal
// mask is computed from indices (key j > query i is hidden, and tiles wholly past the
// workgroup's last row are never loaded); the key mask is [batch, kv_len] u32 words.
//
// info: [batch·heads, heads, q_len, kv_len, causal, has_mask, scale (f32 bits), q_tiles]
// Bindings (prepended): q, k, v (read), mask (u32, read), o (q's dtype), lse (f32);
// ld_q/ld_k/ld_v/st_o. Output: o = Σ softmax·v, lse = m + log l (+inf where no key is seen,
// with o = 0: the backward then gives that row zero gradients).

const D: u32 = {{D}}u;
const BC: u32 = {{BC}}u;
const BR: u32 = 64u;

var<workgroup> ks: array<f32, {{TILE}}>;
var<workgroup> vs: array<f32, {{TILE}}>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let q_tiles = info[7];
    let bh = g / q_tiles;
    if bh >= info[0] {
        return;
    }
    let tile = g % q_tiles;
    let heads = info[1];
    let q_len = info[2];
    let kv_len = info[3];
    let causal = info[4] != 0u;
    let has_mask = info[5] != 0u;
    let scale = bitcast<f32>(info[6]);
    let i = tile * BR + lid;
    let live = i < q_len;
    let q_base = (bh * q_len + min(i, q_len - 1u)) * D;
    let kv_base = bh * kv_len * D;
    let mask_base = (bh / heads) * kv_len;

    var qr: array<f32, D>;
    var acc: array<f32, D>;
    for (var e = 0u; e < D; e++) {
        qr[e] = ld_q(q_base + e) * scale;
        acc[e] = 0.0;
    }
    var m = bitcast<f32>(0xff800000u);
    var l = 0.0;
    var kv_end = kv_len;
    if causal {
        kv_end = min(kv_len, tile * BR + BR);
    }
    for (var t0 = 0u; t0 < kv_end; t0 += BC) {
        for (var e = lid; e < BC * D; e += BR) {
            let j = t0 + e / D;
            var kx = 0.0;
            var vx = 0.0;
            if j < kv_len {
                kx = ld_k(kv_base + j * D + e % D);
                vx = ld_v(kv_base + j * D + e % D);
            }
            ks[e] = kx;
            vs[e] = vx;
        }
        workgroupBarrier();
        if live {
            let here = min(BC, kv_len - t0);
            for (var c = 0u; c < here; c++) {
                let j = t0 + c;
                if causal && j > i {
                    break;
                }
                if has_mask && mask[mask_base + j] != 0u {
                    continue;
                }
                var s = 0.0;
                for (var e = 0u; e < D; e++) {
                    s += qr[e] * ks[c * D + e];
                }
                if s > m {
                    // exp(-inf) = 0 clears the (empty) accumulator on the first visible key.
                    let corr = exp(m - s);
                    l *= corr;
                    for (var e = 0u; e < D; e++) {
                        acc[e] *= corr;
                    }
                    m = s;
                }
                let p = exp(s - m);
                l += p;
                for (var e = 0u; e < D; e++) {
                    acc[e] += p * vs[c * D + e];
                }
            }
        }
        workgroupBarrier();
    }
    if live {
        let row = bh * q_len + i;
        var inv = 0.0;
        var z = bitcast<f32>(0x7f800000u);
        if l > 0.0 {
            inv = 1.0 / l;
            z = m + log(l);
        }
        for (var e = 0u; e < D; e++) {
            st_o(row * D + e, acc[e] * inv);
        }
        lse[row] = z;
    }
}
