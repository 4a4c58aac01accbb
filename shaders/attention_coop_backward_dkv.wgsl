// Attention backward on tensor cores, second pass: dk and dv, f16 in and out, f32 statistics;
// the same contract as attention_backward_dkv.wgsl, recomputing P = exp(scale·q·kᵀ − lse) and
// reading δ from the first pass. A workgroup of NS subgroups of 32 owns BR = 16·NS key rows
// (k and v staged in f16); subgroup `sid` owns the strip sid·16.. . Per tile of BC queries:
//   q, dO, lse and δ staged;                                                     barrier
//   each subgroup: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ strips to `ss`, `dps` (f32);        barrier
//   every thread: Pᵀ and dSᵀ = Pᵀ (dPᵀ − δ) (f32 math, f16 results) to `pts`, `dss`; barrier
//   each subgroup: dv tiles += Pᵀ strip · dO, dk tiles += dSᵀ strip · Q (f32 accumulators held
//   across all tiles);                                                           barrier
// then dk = scale · its accumulator and dv, through a per-subgroup f32 scratch tile. Causal:
// query tiles before the workgroup's first key are skipped. Every decision around cooperative
// ops and barriers depends on the workgroup alone; a workgroup past the last recomputes the
// last one and stores nothing.
//
// With a bias, S includes it; with dropout (factor r: 1/keep or 0) dv takes (P·r)ᵀ·dO and
// dS = P (dP·r − δ) (attention_extras.wgsl, appended).
//
// info: [batch·heads, heads, q_len, kv_len, causal, has_mask, scale (f32 bits), k_tiles], then
// the ten words of attention_extras.wgsl.
// Bindings: q, k, v, o, dout (array<vec4<f16>>), mask (u32), lse, delta (f32), dk, dv
// (array<f16>), bias (f32).

@group(0) @binding(1) var<storage, read> q: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f16>>;
@group(0) @binding(4) var<storage, read> o: array<vec4<f16>>;
@group(0) @binding(5) var<storage, read> dout: array<vec4<f16>>;
@group(0) @binding(6) var<storage, read> mask: array<u32>;
@group(0) @binding(7) var<storage, read> lse: array<f32>;
@group(0) @binding(8) var<storage, read> delta: array<f32>;
@group(0) @binding(9) var<storage, read_write> dk: array<f16>;
@group(0) @binding(10) var<storage, read_write> dv: array<f16>;
@group(0) @binding(11) var<storage, read> bias: array<f32>;

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

var<workgroup> ks: array<vec4<f16>, {{QS_LEN}}>;
var<workgroup> vs: array<vec4<f16>, {{QS_LEN}}>;
var<workgroup> qs: array<vec4<f16>, {{KV_LEN}}>;
var<workgroup> dos: array<vec4<f16>, {{KV_LEN}}>;
var<workgroup> ss: array<f32, {{SS_LEN}}>;
var<workgroup> dps: array<f32, {{SS_LEN}}>;
var<workgroup> pts: array<vec4<f16>, {{PS_LEN}}>;
var<workgroup> dss: array<vec4<f16>, {{PS_LEN}}>;
var<workgroup> tl: array<f32, {{BC}}>;
var<workgroup> td: array<f32, {{BC}}>;
var<workgroup> seen: array<u32, {{BR}}>;

@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let k_tiles = info[7];
    let groups = info[0] * k_tiles;
    let linear = linear_group(wid, nwg);
    let store = linear < groups;
    let g = min(linear, groups - 1u);
    let bh = g / k_tiles;
    let tile = g % k_tiles;
    let heads = info[1];
    let q_len = info[2];
    let kv_len = info[3];
    let causal = info[4] != 0u;
    let has_mask = info[5] != 0u;
    let scale = bitcast<f32>(info[6]);
    let j0 = tile * BR;
    let q0 = bh * q_len;
    let kv_base = bh * kv_len;
    let mask_base = (bh / heads) * kv_len;

    for (var x = lid; x < BR * D4; x += WG) {
        let r = x / D4;
        var kx = vec4<f16>();
        var vx = vec4<f16>();
        if j0 + r < kv_len {
            kx = k[(kv_base + j0 + r) * D4 + x % D4];
            vx = v[(kv_base + j0 + r) * D4 + x % D4];
        }
        ks[r * Q4 + x % D4] = kx;
        vs[r * Q4 + x % D4] = vx;
    }
    // Which keys any query may see.
    if lid < BR {
        var ok = j0 + lid < kv_len;
        if ok && has_mask {
            ok = mask[mask_base + j0 + lid] == 0u;
        }
        seen[lid] = u32(ok);
    }
{{ACC_DECL}}
    var start = 0u;
    if causal {
        start = (j0 / BC) * BC;
    }
    for (var t0 = start; t0 < q_len; t0 += BC) {
        for (var x = lid; x < BC * D4; x += WG) {
            let c = x / D4;
            var qx = vec4<f16>();
            var dx = vec4<f16>();
            if t0 + c < q_len {
                qx = q[(q0 + t0 + c) * D4 + x % D4];
                dx = dout[(q0 + t0 + c) * D4 + x % D4];
            }
            qs[c * Q4 + x % D4] = qx;
            dos[c * Q4 + x % D4] = dx;
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
{{SCORES}}
        workgroupBarrier();
        for (var x = lid; x < BR * BC / 4u; x += WG) {
            let r = x / (BC / 4u);
            let c = (x % (BC / 4u)) * 4u;
            let j = j0 + r;
            var p4 = vec4<f32>(0.0);
            var d4 = vec4<f32>(0.0);
            for (var y = 0u; y < 4u; y++) {
                let i = t0 + c + y;
                if seen[r] != 0u && i < q_len && !(causal && j > i) {
                    // A bias of -inf gives exp(-inf) = 0.
                    let p = exp(ss[r * SF + c + y] * scale + attn_bias(bh / heads, bh % heads, i, j) - tl[c + y]);
                    let rr = attn_drop(q0 + i, j, kv_len);
                    p4[y] = p * rr;
                    d4[y] = p * (dps[r * SF + c + y] * rr - td[c + y]);
                }
            }
            pts[r * P4 + c / 4u] = vec4<f16>(p4);
            dss[r * P4 + c / 4u] = vec4<f16>(d4);
        }
        workgroupBarrier();
{{GRADS}}
        workgroupBarrier();
    }
{{STORE}}
}
