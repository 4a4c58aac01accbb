// Attention backward on tensor cores, first pass: dq (and δ for the second pass), f16 q, k, v,
// o, dO and dq, f32 statistics; the same contract as attention_backward_dq.wgsl, recomputing
// P = exp(scale·q·kᵀ − lse) from the forward's log-sum-exp. A workgroup of NS subgroups of 32
// owns BR = 16·NS query rows (q and dO staged in f16); subgroup `sid` owns the strip sid·16.. .
//   δ_i = dO_i·O_i (f32; written out for the second pass);
//   per tile of BC keys: K and V staged;                                        barrier
//   each subgroup: S = Q·Kᵀ and dP = dO·Vᵀ strips to `ss`, `dps` (f32);         barrier
//   every thread: dS = P (dP − δ) (f32 math, f16 result) to `dss`;              barrier
//   each subgroup: its dq tiles (f32 accumulators held across all tiles) += dS strip · K; barrier
// then dq = scale · accumulator, through a per-subgroup f32 scratch tile.
// Every decision around cooperative ops and barriers depends on the workgroup alone; a
// workgroup past the last recomputes the last one and stores nothing.
//
// With a bias, S includes it; with dropout (factor r: 1/keep or 0), dS = P (dP·r − δ)
// (attention_extras.wgsl, appended).
//
// info: [batch·heads, heads, q_len, kv_len, causal, has_mask, scale (f32 bits), q_tiles], then
// the ten words of attention_extras.wgsl.
// Bindings: q, k, v, o, dout (array<vec4<f16>>), mask (u32), lse (f32), delta (f32, written),
// dq (array<f16>), bias (f32).

@group(0) @binding(1) var<storage, read> q: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f16>>;
@group(0) @binding(4) var<storage, read> o: array<vec4<f16>>;
@group(0) @binding(5) var<storage, read> dout: array<vec4<f16>>;
@group(0) @binding(6) var<storage, read> mask: array<u32>;
@group(0) @binding(7) var<storage, read> lse: array<f32>;
@group(0) @binding(8) var<storage, read_write> delta: array<f32>;
@group(0) @binding(9) var<storage, read_write> dq: array<f16>;
@group(0) @binding(10) var<storage, read> bias: array<f32>;

const D: u32 = {{D}}u;
const D4: u32 = D / 4u;
const NS: u32 = {{NS}}u;
const BR: u32 = 16u * NS;
const BC: u32 = {{BC}}u;
const WG: u32 = 32u * NS;
const QH: u32 = D + 8u;
const Q4: u32 = QH / 4u;
const PH: u32 = BC + 8u;
const P4: u32 = PH / 4u;
const SF: u32 = BC + 4u;

var<workgroup> qs: array<vec4<f16>, {{QS_LEN}}>;
var<workgroup> dos: array<vec4<f16>, {{QS_LEN}}>;
var<workgroup> ks: array<vec4<f16>, {{KV_LEN}}>;
var<workgroup> vs: array<vec4<f16>, {{KV_LEN}}>;
var<workgroup> ss: array<f32, {{SS_LEN}}>;
var<workgroup> dps: array<f32, {{SS_LEN}}>;
var<workgroup> dss: array<vec4<f16>, {{PS_LEN}}>;
var<workgroup> rz: array<f32, {{BR}}>;
var<workgroup> rd: array<f32, {{BR}}>;

@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let q_tiles = info[7];
    let groups = info[0] * q_tiles;
    let linear = linear_group(wid, nwg);
    let store = linear < groups;
    let g = min(linear, groups - 1u);
    let bh = g / q_tiles;
    let tile = g % q_tiles;
    let heads = info[1];
    let q_len = info[2];
    let kv_len = info[3];
    let causal = info[4] != 0u;
    let has_mask = info[5] != 0u;
    let scale = bitcast<f32>(info[6]);
    let i0 = tile * BR;
    let q0 = bh * q_len;
    let kv_base = bh * kv_len;
    let mask_base = (bh / heads) * kv_len;

    for (var x = lid; x < BR * D4; x += WG) {
        let r = x / D4;
        var qx = vec4<f16>();
        var dx = vec4<f16>();
        if i0 + r < q_len {
            qx = q[(q0 + i0 + r) * D4 + x % D4];
            dx = dout[(q0 + i0 + r) * D4 + x % D4];
        }
        qs[r * Q4 + x % D4] = qx;
        dos[r * Q4 + x % D4] = dx;
    }
    if lid < BR {
        let i = i0 + lid;
        var dsum = 0.0;
        // +inf past the end: exp(s − inf) = 0.
        var z = kiln_f32_bits(0x7f800000u);
        if i < q_len {
            for (var e = 0u; e < D4; e++) {
                dsum += dot(vec4<f32>(dout[(q0 + i) * D4 + e]), vec4<f32>(o[(q0 + i) * D4 + e]));
            }
            z = lse[q0 + i];
            if store {
                delta[q0 + i] = dsum;
            }
        }
        rz[lid] = z;
        rd[lid] = dsum;
    }
{{ACC_DECL}}
    var kv_end = kv_len;
    if causal {
        kv_end = min(kv_len, i0 + BR);
    }
    workgroupBarrier();
    for (var t0 = 0u; t0 < kv_end; t0 += BC) {
        for (var x = lid; x < BC * D4; x += WG) {
            let c = x / D4;
            var kx = vec4<f16>();
            var vx = vec4<f16>();
            if t0 + c < kv_len {
                kx = k[(kv_base + t0 + c) * D4 + x % D4];
                vx = v[(kv_base + t0 + c) * D4 + x % D4];
            }
            ks[c * Q4 + x % D4] = kx;
            vs[c * Q4 + x % D4] = vx;
        }
        workgroupBarrier();
{{SCORES}}
        workgroupBarrier();
        for (var x = lid; x < BR * BC / 4u; x += WG) {
            let r = x / (BC / 4u);
            let c = (x % (BC / 4u)) * 4u;
            let i = i0 + r;
            var d4 = vec4<f32>(0.0);
            let r4 = attn_drop4(q0 + i, t0 + c, kv_len);
            for (var y = 0u; y < 4u; y++) {
                let j = t0 + c + y;
                var visible = i < q_len && j < kv_len && !(causal && j > i);
                if visible && has_mask {
                    visible = mask[mask_base + j] == 0u;
                }
                if visible {
                    // A bias of -inf gives exp(-inf) = 0.
                    let p = exp(ss[r * SF + c + y] * scale + attn_bias(bh / heads, bh % heads, i, j) - rz[r]);
                    d4[y] = p * (dps[r * SF + c + y] * r4[y] - rd[r]);
                }
            }
            dss[r * P4 + c / 4u] = vec4<f16>(d4);
        }
        workgroupBarrier();
{{GRADS}}
        workgroupBarrier();
    }
{{STORE}}
}
