// max_pool: [n, c, h, w] (strided) → contiguous values and u32 taps, both [n, c, oh, ow], one
// thread per window, reading each pixel once (no window buffer, no second pass for the taps).
// The tap is ki·kw + kj of the window's first max, a NaN counting as the max (the first NaN
// wins, as argmax); positions in the padding are skipped, and a window with no pixel inside
// keeps the pad value (−∞) and tap 0. The same rule and order as kiln-cpu's max_pool.
// Parameters: ConvParams (kernels/conv.rs): the geometry, −∞'s bits in `pad` and `x`, the base
// of x's layout block (rank 4). The generator fills T (f32 or f16) and PAD (as im2col.wgsl).

{{PARAMS}}
@group(0) @binding(1) var<storage, read> x: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> values: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> taps: array<u32>;

fn pad_value(bits: u32) -> {{T}} {
{{PAD}}
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= p.numel { return; }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let img = i / (p.ow * p.oh);
    let ci = img % p.c;
    let b = img / p.c;
    let base = layout_offset(p.x) + b * layout_stride(p.x, 4u, 0u) + ci * layout_stride(p.x, 4u, 1u);
    let row_step = layout_stride(p.x, 4u, 2u);
    let col_step = layout_stride(p.x, 4u, 3u);
    var best = pad_value(p.pad);
    var tap = 0u;
    var seen = false;
    for (var ki = 0u; ki < p.kh; ki++) {
        let py = oy * p.sh + ki * p.dh;
        if py < p.ph || py - p.ph >= p.h { continue; }
        for (var kj = 0u; kj < p.kw; kj++) {
            let px = ox * p.sw + kj * p.dw;
            if px < p.pw || px - p.pw >= p.w { continue; }
            let v = x[base + (py - p.ph) * row_step + (px - p.pw) * col_step];
            // NaN is tested on the bits (drivers may fold x != x away).
            let better = select(v > best, !kiln_isnan(f32(best)), kiln_isnan(f32(v)));
            if !seen || better {
                best = v;
                tap = ki * p.kw + kj;
                seen = true;
            }
        }
    }
    values[i] = best;
    taps[i] = tap;
}
