// Attention backward, first pass: dq (and δ for the second pass), recomputing the
// probabilities from the forward's saved log-sum-exp, P_ij = exp(scale·q_i·k_j − lse_i), so
// nothing of size q_len × kv_len is stored. Tiled as the forward (attention.wgsl): a workgroup
// of TR×TC threads owns BR = 4·TR query rows, whose (pre-scaled) q and dO rows stay in workgroup
// memory; keys and values stream through in tiles of BC = CN·TC. Thread (tr, tc) owns rows
// 4·tr..4·tr+3 (vec4 lanes), keys tc + TC·jj and dq columns (vec4s) tc + TC·u.
//   δ_i = dO_i·O_i (the softmax backward's row term; written out for the second pass);
//   per key tile: S and dP = dO·Vᵀ (4×CN each per thread), dS = P (dP − δ) to `ds`; barrier;
//   dq += dS·K from `ds` and the staged K; barrier.
//   dq_i = scale · Σ_j dS_ij k_j (q was pre-scaled for S only).
// With a bias, S includes it; with dropout (factor r: 1/keep or 0), dS = P (dP·r − δ).
// Each thread owns its outputs: no atomics, deterministic.
//
// info: [batch·heads, heads, q_len, kv_len, causal, has_mask, scale (f32 bits), q_tiles], then
// the ten words of attention_extras.wgsl (appended).
// Bindings (prepended): q, k, v, o, dout (read), mask (u32), lse (f32, read), delta (f32,
// written), dq; ld4_* / st4_dq helpers.

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

var<workgroup> qs: array<vec4<f32>, {{QS_LEN}}>;
var<workgroup> dos: array<vec4<f32>, {{QS_LEN}}>;
var<workgroup> ks: array<vec4<f32>, {{KV_LEN}}>;
var<workgroup> vs: array<vec4<f32>, {{KV_LEN}}>;
// dS of the tile: [key][row group].
var<workgroup> ds: array<vec4<f32>, {{PS_LEN}}>;
var<workgroup> rowd: array<f32, {{BR}}>;

fn neg_inf() -> f32 {
    return kiln_f32_bits(0xff800000u);
}

@compute @workgroup_size({{WG}})
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
    let tr = lid / TC;
    let tc = lid % TC;
    let i0 = tile * BR;
    let q0 = bh * q_len;
    let kv_base = bh * kv_len;
    let mask_base = (bh / heads) * kv_len;
    let rows = vec4<u32>(i0 + tr * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    let live = rows < vec4<u32>(q_len);

    for (var x = lid; x < BR * D4; x += WG) {
        let r = x / D4;
        let e = x % D4;
        var qv = vec4<f32>(0.0);
        var dv = vec4<f32>(0.0);
        if i0 + r < q_len {
            qv = ld4_q((q0 + i0 + r) * D, e * 4u) * scale;
            dv = ld4_dout((q0 + i0 + r) * D, e * 4u);
        }
        qs[r * QP + e] = qv;
        dos[r * QP + e] = dv;
    }
    workgroupBarrier();
    for (var r = lid; r < BR; r += WG) {
        var dsum = 0.0;
        if i0 + r < q_len {
            for (var e = 0u; e < D4; e++) {
                dsum += dot(dos[r * QP + e], ld4_o((q0 + i0 + r) * D, e * 4u));
            }
            delta[q0 + i0 + r] = dsum;
        }
        rowd[r] = dsum;
    }
    workgroupBarrier();
    let dl = vec4<f32>(rowd[tr * 4u], rowd[tr * 4u + 1u], rowd[tr * 4u + 2u], rowd[tr * 4u + 3u]);
    // +inf for rows past the end: exp(s − inf) = 0.
    var z = vec4<f32>(kiln_f32_bits(0x7f800000u));
    for (var ri = 0u; ri < 4u; ri++) {
        if rows[ri] < q_len {
            z[ri] = lse[q0 + rows[ri]];
        }
    }
    var acc: array<vec4<f32>, {{ACC_LEN}}>;
    for (var x = 0u; x < 4u * OV; x++) {
        acc[x] = vec4<f32>(0.0);
    }
    var kv_end = kv_len;
    if causal {
        kv_end = min(kv_len, i0 + BR);
    }
    for (var t0 = 0u; t0 < kv_end; t0 += BC) {
        for (var x = lid; x < BC * SW; x += WG) {
            let c = x / SW;
            let e = x % SW;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if t0 + c < kv_len && e < D4 {
                kx = ld4_k((kv_base + t0 + c) * D, e * 4u);
                vx = ld4_v((kv_base + t0 + c) * D, e * 4u);
            }
            ks[c * SP + e] = kx;
            vs[c * SP + e] = vx;
        }
        workgroupBarrier();
        var s: array<vec4<f32>, {{CN}}>;
        var dp: array<vec4<f32>, {{CN}}>;
        for (var jj = 0u; jj < CN; jj++) {
            s[jj] = vec4<f32>(0.0);
            dp[jj] = vec4<f32>(0.0);
        }
        let qr = tr * 4u * QP;
        for (var e = 0u; e < D4; e++) {
            let q0_ = qs[qr + e];
            let q1_ = qs[qr + QP + e];
            let q2_ = qs[qr + 2u * QP + e];
            let q3_ = qs[qr + 3u * QP + e];
            let d0 = dos[qr + e];
            let d1 = dos[qr + QP + e];
            let d2 = dos[qr + 2u * QP + e];
            let d3 = dos[qr + 3u * QP + e];
            for (var jj = 0u; jj < CN; jj++) {
                let k = ks[(tc + jj * TC) * SP + e];
                let v = vs[(tc + jj * TC) * SP + e];
                s[jj] += vec4<f32>(dot(q0_, k), dot(q1_, k), dot(q2_, k), dot(q3_, k));
                dp[jj] += vec4<f32>(dot(d0, v), dot(d1, v), dot(d2, v), dot(d3, v));
            }
        }
        for (var jj = 0u; jj < CN; jj++) {
            let j = t0 + tc + jj * TC;
            var key_ok = j < kv_len;
            if key_ok && has_mask {
                key_ok = mask[mask_base + j] == 0u;
            }
            var vis = live & vec4<bool>(key_ok);
            if causal {
                vis = vis & (vec4<u32>(j) <= rows);
            }
            var sj = s[jj];
            if attn_has_bias() && key_ok {
                let ri = min(rows, vec4<u32>(q_len - 1u));
                let b = bh / heads;
                let h = bh % heads;
                sj += vec4<f32>(attn_bias(b, h, ri.x, j), attn_bias(b, h, ri.y, j), attn_bias(b, h, ri.z, j), attn_bias(b, h, ri.w, j));
                vis = vis & (sj > vec4<f32>(neg_inf()));
            }
            var r = vec4<f32>(1.0);
            if attn_dropping() {
                r = vec4<f32>(attn_drop(q0 + rows.x, j, kv_len), attn_drop(q0 + rows.y, j, kv_len), attn_drop(q0 + rows.z, j, kv_len), attn_drop(q0 + rows.w, j, kv_len));
            }
            let p = select(vec4<f32>(0.0), exp(sj - z), vis);
            ds[(tc + jj * TC) * TR + tr] = p * (dp[jj] * r - dl);
        }
        workgroupBarrier();
        for (var c = 0u; c < BC; c++) {
            let d = ds[c * TR + tr];
            for (var u = 0u; u < OV; u++) {
                let k = ks[c * SP + tc + u * TC];
                acc[u] += d.x * k;
                acc[OV + u] += d.y * k;
                acc[2u * OV + u] += d.z * k;
                acc[3u * OV + u] += d.w * k;
            }
        }
        workgroupBarrier();
    }
    for (var ri = 0u; ri < 4u; ri++) {
        if rows[ri] < q_len {
            let row = q0 + rows[ri];
            for (var u = 0u; u < OV; u++) {
                let col = tc + u * TC;
                if col < D4 {
                    st4_ga(row * D, col * 4u, acc[ri * OV + u] * scale);
                }
            }
        }
    }
}
