// col2im, the adjoint of im2col: [n, c·kh·kw, oh·ow] (strided) → contiguous [n, c, h, w].
// One thread per pixel (no atomics): for each tap (ki, kj) the pixel was read by output
// position oy = (y + ph − ki·dh) / sh when that divides exactly and lands inside [0, oh), and
// likewise for ox. Taps are summed in (ki, kj) order, so the result is deterministic.
// Parameters: ConvParams (kernels/conv.rs; `pad` unused) and `x`, the base of the cols
// layout block (rank 3).
// The generator fills T (storage) and C (compute: f16 accumulates in f32; integers wrap).

{{PARAMS}}
@group(0) @binding(1) var<storage, read> cols: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> out: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= p.numel { return; }
    let c = p.c;
    let h = p.h;
    let w = p.w;
    let kh = p.kh;
    let kw = p.kw;
    let sh = p.sh;
    let sw = p.sw;
    let dh = p.dh;
    let dw = p.dw;
    let oh = p.oh;
    let ow = p.ow;
    let py = (i / w) % h + p.ph;
    let px = i % w + p.pw;
    let ci = (i / (w * h)) % c;
    let b = i / (w * h * c);
    let base = layout_offset(p.x) + b * layout_stride(p.x, 3u, 0u);
    let row_step = layout_stride(p.x, 3u, 1u);
    let col_step = layout_stride(p.x, 3u, 2u);
    var acc = {{C}}(0);
    for (var ki = 0u; ki < kh; ki++) {
        // Larger ki only moves further up: once above the padded image, no later tap hits.
        if ki * dh > py { break; }
        let ty = py - ki * dh;
        let oy = div_window(ty, sh);
        if oy * sh != ty || oy >= oh { continue; }
        for (var kj = 0u; kj < kw; kj++) {
            if kj * dw > px { break; }
            let tx = px - kj * dw;
            let ox = div_window(tx, sw);
            if ox * sw != tx || ox >= ow { continue; }
            let row = (ci * kh + ki) * kw + kj;
            acc += {{C}}(cols[base + row * row_step + (oy * ow + ox) * col_step]);
        }
    }
    out[i] = {{T}}(acc);
}
