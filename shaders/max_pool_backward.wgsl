// max_pool_backward: the output's gradient and the taps max_pool returned (u32), both
// [n, c, oh, ow] (strided) → contiguous [n, c, h, w]. One thread per pixel, no atomics and no
// zero-filled buffer to scatter into (as col2im.wgsl): for each tap (ki, kj) the pixel was read
// by window oy = (y + ph − ki·dh) / sh when that divides exactly and lands inside [0, oh)
// (likewise ox), and that window's gradient comes here when its tap is (ki, kj). Summed in
// (ki, kj) order, so the result is deterministic.
// Parameters: ConvParams (kernels/conv.rs; `pad` unused), `x` and `t`, the bases of the
// gradient's and the taps' layout blocks (rank 4).
// The generator fills T (storage: f32 or f16) and C (compute: f32).

{{PARAMS}}
@group(0) @binding(1) var<storage, read> grad: array<{{T}}>;
@group(0) @binding(2) var<storage, read> taps: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= p.numel { return; }
    let py = (i / p.w) % p.h + p.ph;
    let px = i % p.w + p.pw;
    let ci = (i / (p.w * p.h)) % p.c;
    let b = i / (p.w * p.h * p.c);
    let g_at = layout_offset(p.x) + b * layout_stride(p.x, 4u, 0u) + ci * layout_stride(p.x, 4u, 1u);
    let t_at = layout_offset(p.t) + b * layout_stride(p.t, 4u, 0u) + ci * layout_stride(p.t, 4u, 1u);
    let g_y = layout_stride(p.x, 4u, 2u);
    let g_x = layout_stride(p.x, 4u, 3u);
    let t_y = layout_stride(p.t, 4u, 2u);
    let t_x = layout_stride(p.t, 4u, 3u);
    var acc = {{C}}(0);
    for (var ki = 0u; ki < p.kh; ki++) {
        // Larger ki only moves further up: once above the padded image, no later tap hits.
        if ki * p.dh > py { break; }
        let ty = py - ki * p.dh;
        let oy = div_window(ty, p.sh);
        if oy * p.sh != ty || oy >= p.oh { continue; }
        for (var kj = 0u; kj < p.kw; kj++) {
            if kj * p.dw > px { break; }
            let tx = px - kj * p.dw;
            let ox = div_window(tx, p.sw);
            if ox * p.sw != tx || ox >= p.ow { continue; }
            let tap = taps[t_at + oy * t_y + ox * t_x];
            if tap == ki * p.kw + kj {
                acc += {{C}}(grad[g_at + oy * g_y + ox * g_x]);
            }
        }
    }
    out[i] = {{T}}(acc);
}
