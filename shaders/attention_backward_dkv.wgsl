// Attention backward, second pass: dk and dv, recomputing P_ij = exp(scale·q_i·k_j − lse_i)
// from the saved log-sum-exp and reading δ_i = dO_i·O_i from the first pass
// (attention_backward_dq.wgsl). The roles of the forward's tiling swap: a workgroup of TR×TC
// threads owns BR = 4·TR key rows, whose k and v rows stay in workgroup memory; queries (pre-
// scaled), output gradients, lse and δ stream through in tiles of BC = CN·TC. Thread (tr, tc)
// owns keys 4·tr..4·tr+3 (vec4 lanes), queries tc + TC·jj and dk/dv columns tc + TC·u.
// Per query tile: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (4×CN each per thread), P and dS = P (dP − δ) to
// `pt` and `dst`; barrier; dv += Pᵀ·dO, dk += dSᵀ·Q (scale included in the staged q); barrier.
// Causal: query i sees key j only when i >= j, so query tiles before the first key are skipped.
// With a bias, S includes it; with dropout (factor r: 1/keep or 0; a thread's four keys share
// one Philox block) dv takes (P·r)ᵀ·dO and dS = P (dP·r − δ).
// Each thread owns its outputs: no atomics, deterministic.
//
// info: [batch·heads, heads, q_len, kv_len, causal, has_mask, scale (f32 bits), k_tiles], then
// the ten words of attention_extras.wgsl (appended).
// Bindings (prepended): q, k, v, o, dout (read), mask (u32), lse, delta (f32, read), dk, dv;
// ld4_* / st4_ga (dk) / st4_gb (dv) helpers.

const D: u32 = {{D}}u;
const D4: u32 = {{D4}}u;
const QP: u32 = D4 + 1u;
const TR: u32 = {{TR}}u;
const TC: u32 = {{TC}}u;
const CN: u32 = {{CN}}u;
const OV: u32 = {{OV}}u;
const BR: u32 = 4u * TR;
const BC: u32 = CN * TC;
const WG: u32 = TR * TC;
const SW: u32 = OV * TC;
const SP: u32 = SW + 1u;

var<workgroup> ks: array<vec4<f32>, {{QS_LEN}}>;
var<workgroup> vs: array<vec4<f32>, {{QS_LEN}}>;
var<workgroup> qs: array<vec4<f32>, {{KV_LEN}}>;
var<workgroup> dos: array<vec4<f32>, {{KV_LEN}}>;
// P and dS of the tile: [query][key group].
var<workgroup> pt: array<vec4<f32>, {{PS_LEN}}>;
var<workgroup> dst: array<vec4<f32>, {{PS_LEN}}>;
var<workgroup> tl: array<f32, {{BC}}>;
var<workgroup> td: array<f32, {{BC}}>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let k_tiles = info[7];
    let bh = g / k_tiles;
    if bh >= info[0] {
        return;
    }
    let tile = g % k_tiles;
    let heads = info[1];
    let q_len = info[2];
    let kv_len = info[3];
    let causal = info[4] != 0u;
    let has_mask = info[5] != 0u;
    let scale = bitcast<f32>(info[6]);
    let tr = lid / TC;
    let tc = lid % TC;
    let j0 = tile * BR;
    let q0 = bh * q_len;
    let kv_base = bh * kv_len;
    let mask_base = (bh / heads) * kv_len;
    // This thread's four keys, and which of them any query may see.
    let keys = vec4<u32>(j0 + tr * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    var seen = keys < vec4<u32>(kv_len);
    if has_mask {
        for (var ri = 0u; ri < 4u; ri++) {
            if seen[ri] {
                seen[ri] = mask[mask_base + keys[ri]] == 0u;
            }
        }
    }

    for (var x = lid; x < BR * D4; x += WG) {
        let r = x / D4;
        let e = x % D4;
        var kx = vec4<f32>(0.0);
        var vx = vec4<f32>(0.0);
        if j0 + r < kv_len {
            kx = ld4_k((kv_base + j0 + r) * D, e * 4u);
            vx = ld4_v((kv_base + j0 + r) * D, e * 4u);
        }
        ks[r * QP + e] = kx;
        vs[r * QP + e] = vx;
    }
    var gk: array<vec4<f32>, {{ACC_LEN}}>;
    var gv: array<vec4<f32>, {{ACC_LEN}}>;
    for (var x = 0u; x < 4u * OV; x++) {
        gk[x] = vec4<f32>(0.0);
        gv[x] = vec4<f32>(0.0);
    }
    var start = 0u;
    if causal {
        start = (j0 / BC) * BC;
    }
    for (var t0 = start; t0 < q_len; t0 += BC) {
        for (var x = lid; x < BC * SW; x += WG) {
            let c = x / SW;
            let e = x % SW;
            var qx = vec4<f32>(0.0);
            var dx = vec4<f32>(0.0);
            if t0 + c < q_len && e < D4 {
                qx = ld4_q((q0 + t0 + c) * D, e * 4u) * scale;
                dx = ld4_dout((q0 + t0 + c) * D, e * 4u);
            }
            qs[c * SP + e] = qx;
            dos[c * SP + e] = dx;
        }
        for (var c = lid; c < BC; c += WG) {
            var z = kiln_f32_bits(0x7f800000u);
            var dl = 0.0;
            if t0 + c < q_len {
                z = lse[q0 + t0 + c];
                dl = delta[q0 + t0 + c];
            }
            tl[c] = z;
            td[c] = dl;
        }
        workgroupBarrier();
        var s: array<vec4<f32>, {{CN}}>;
        var dp: array<vec4<f32>, {{CN}}>;
        for (var jj = 0u; jj < CN; jj++) {
            s[jj] = vec4<f32>(0.0);
            dp[jj] = vec4<f32>(0.0);
        }
        let kr = tr * 4u * QP;
        for (var e = 0u; e < D4; e++) {
            let k0 = ks[kr + e];
            let k1 = ks[kr + QP + e];
            let k2 = ks[kr + 2u * QP + e];
            let k3 = ks[kr + 3u * QP + e];
            let v0 = vs[kr + e];
            let v1 = vs[kr + QP + e];
            let v2 = vs[kr + 2u * QP + e];
            let v3 = vs[kr + 3u * QP + e];
            for (var jj = 0u; jj < CN; jj++) {
                let q = qs[(tc + jj * TC) * SP + e];
                let d = dos[(tc + jj * TC) * SP + e];
                s[jj] += vec4<f32>(dot(k0, q), dot(k1, q), dot(k2, q), dot(k3, q));
                dp[jj] += vec4<f32>(dot(v0, d), dot(v1, d), dot(v2, d), dot(v3, d));
            }
        }
        for (var jj = 0u; jj < CN; jj++) {
            let c = tc + jj * TC;
            let i = t0 + c;
            var vis = seen & vec4<bool>(i < q_len);
            if causal {
                vis = vis & (keys <= vec4<u32>(i));
            }
            var si = s[jj];
            if attn_has_bias() && i < q_len {
                let kj = min(keys, vec4<u32>(kv_len - 1u));
                let b = bh / heads;
                let h = bh % heads;
                si += vec4<f32>(attn_bias(b, h, i, kj.x), attn_bias(b, h, i, kj.y), attn_bias(b, h, i, kj.z), attn_bias(b, h, i, kj.w));
                vis = vis & (si > vec4<f32>(kiln_f32_bits(0xff800000u)));
            }
            let r = attn_drop4(q0 + i, keys.x, kv_len);
            let p = select(vec4<f32>(0.0), exp(si - tl[c]), vis);
            pt[c * TR + tr] = p * r;
            dst[c * TR + tr] = p * (dp[jj] * r - td[c]);
        }
        workgroupBarrier();
        for (var c = 0u; c < BC; c++) {
            let p = pt[c * TR + tr];
            let d = dst[c * TR + tr];
            for (var u = 0u; u < OV; u++) {
                let q = qs[c * SP + tc + u * TC];
                let o = dos[c * SP + tc + u * TC];
                gv[u] += p.x * o;
                gv[OV + u] += p.y * o;
                gv[2u * OV + u] += p.z * o;
                gv[3u * OV + u] += p.w * o;
                gk[u] += d.x * q;
                gk[OV + u] += d.y * q;
                gk[2u * OV + u] += d.z * q;
                gk[3u * OV + u] += d.w * q;
            }
        }
        workgroupBarrier();
    }
    for (var ri = 0u; ri < 4u; ri++) {
        if keys[ri] < kv_len {
            let row = kv_base + keys[ri];
            for (var u = 0u; u < OV; u++) {
                let col = tc + u * TC;
                if col < D4 {
                    st4_ga(row * D, col * 4u, gk[ri * OV + u]);
                    st4_gb(row * D, col * 4u, gv[ri * OV + u]);
                }
            }
        }
    }
}
