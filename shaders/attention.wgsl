// Scaled dot-product attention forward, flash-attention style. A workgroup of 64 threads owns
// BR = 16 query rows of one (batch, head); each row is split over a quad of 4 threads, each
// holding a V-vec4 slice of the (zero-padded) head dim for its scaled query and its output
// accumulator. Keys and values stream through shared memory in tiles of BC rows. Per tile, each
// thread writes its partial dot products to shared memory, the quad sums them, and the row's
// online softmax (running max m, running sum l) rescales the accumulator once per tile. No
// [q_len, kv_len] score matrix ever exists. The causal mask is computed from indices (key j > i
// is hidden; tiles past the workgroup's last row are never loaded); the key mask is
// [batch, kv_len] u32 words. Small fixed-size slices let the compiler keep them in registers.
//
// info: [batch·heads, heads, q_len, kv_len, causal, has_mask, scale (f32 bits), q_tiles]
// Bindings (prepended): q, k, v (read), mask (u32, read), o (q's dtype), lse (f32);
// ld_q/ld_k/ld_v/st_o. Output: o = Σ softmax·v, lse = m + log l (+inf where no key is seen,
// with o = 0: the backward then gives that row zero gradients).

const D: u32 = {{D}}u;
const V: u32 = {{V}}u;
const W4: u32 = 4u * V;
const BC: u32 = {{BC}}u;
const BR: u32 = 16u;

var<workgroup> ks: array<vec4<f32>, {{TILE4}}>;
var<workgroup> vs: array<vec4<f32>, {{TILE4}}>;
var<workgroup> part: array<f32, {{PART}}>;

fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

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
    let r = lid / 4u;
    let quad = lid % 4u;
    let i = tile * BR + r;
    let live = i < q_len;
    let q_base = (bh * q_len + min(i, q_len - 1u)) * D;
    let kv_base = bh * kv_len * D;
    let mask_base = (bh / heads) * kv_len;

    var qr: array<vec4<f32>, V>;
    var acc: array<vec4<f32>, V>;
    for (var u = 0u; u < V; u++) {
        qr[u] = ld4_q(q_base, (quad * V + u) * 4u) * scale;
        acc[u] = vec4<f32>(0.0);
    }
    var m = neg_inf();
    var l = 0.0;
    var kv_end = kv_len;
    if causal {
        kv_end = min(kv_len, tile * BR + BR);
    }
    for (var t0 = 0u; t0 < kv_end; t0 += BC) {
        for (var x = lid; x < BC * W4; x += 64u) {
            let j = t0 + x / W4;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if j < kv_len {
                kx = ld4_k(kv_base + j * D, (x % W4) * 4u);
                vx = ld4_v(kv_base + j * D, (x % W4) * 4u);
            }
            ks[x] = kx;
            vs[x] = vx;
        }
        workgroupBarrier();
        for (var c = 0u; c < BC; c++) {
            var s = 0.0;
            for (var u = 0u; u < V; u++) {
                s += dot(qr[u], ks[c * W4 + quad * V + u]);
            }
            part[(r * BC + c) * 4u + quad] = s;
        }
        workgroupBarrier();
        var sc: array<f32, BC>;
        var tmax = neg_inf();
        for (var c = 0u; c < BC; c++) {
            let j = t0 + c;
            let p = (r * BC + c) * 4u;
            var visible = live && j < kv_len && !(causal && j > i);
            if visible && has_mask {
                visible = mask[mask_base + j] == 0u;
            }
            sc[c] = select(neg_inf(), part[p] + part[p + 1u] + part[p + 2u] + part[p + 3u], visible);
            tmax = max(tmax, sc[c]);
        }
        if tmax > neg_inf() {
            let m_new = max(m, tmax);
            // exp(-inf) = 0 clears the (empty) accumulator on the first visible tile.
            let corr = exp(m - m_new);
            l *= corr;
            for (var u = 0u; u < V; u++) {
                acc[u] *= corr;
            }
            m = m_new;
            for (var c = 0u; c < BC; c++) {
                let p = exp(sc[c] - m);
                l += p;
                for (var u = 0u; u < V; u++) {
                    acc[u] += p * vs[c * W4 + quad * V + u];
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
        for (var u = 0u; u < V; u++) {
            st4_o(row * D, (quad * V + u) * 4u, acc[u] * inv);
        }
        if quad == 0u {
            lse[row] = z;
        }
    }
}
