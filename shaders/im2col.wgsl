// im2col: [n, c, h, w] (strided) → contiguous [n, c·kh·kw, oh·ow]. Row r = (ci·kh + ki)·kw + kj
// and column oy·ow + ox read x[ci, oy·sh − ph + ki·dh, ox·sw − pw + kj·dw], or the pad value
// outside the image.
// One thread per (image, channel, output position), looping over the kh·kw taps: the index
// arithmetic (divisions by run-time sizes, the costly part of a pure copy) is done once per
// position instead of once per entry. A 3x3 convolution writes 9 entries per thread, each
// store coalesced across the threads of a row of positions. (One thread per entry made the
// H100 spend 240 µs on W7's 116 MB column matrix, a quarter of the step.)
// Parameters: ConvParams (kernels/conv.rs): the geometry, `numel` the thread count n·c·oh·ow,
// the pad value's bits and `x`, the base of x's layout block (rank 4).
// Pure data movement: T is the storage word (4-byte dtypes travel as u32) and PAD reads the
// pad value's bits, already converted to the dtype on the host. Positions are compared
// against the padding unsigned: oy·sh + ki·dh stays below h + 2·ph, which the host checks
// fits in u32.

{{PARAMS}}
@group(0) @binding(1) var<storage, read> x: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> out: array<{{T}}>;

fn pad_value(bits: u32) -> {{T}} {
{{PAD}}
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= p.numel { return; }
    let cols = p.oh * p.ow;
    let col = i % cols;
    let t = i / cols;
    let ci = t % p.c;
    let b = t / p.c;
    let oy = col / p.ow;
    let ox = col - oy * p.ow;
    let taps = p.kh * p.kw;
    let sy = layout_stride(p.x, 4u, 2u);
    let sx = layout_stride(p.x, 4u, 3u);
    let base = layout_offset(p.x) + b * layout_stride(p.x, 4u, 0u) + ci * layout_stride(p.x, 4u, 1u);
    let pad = pad_value(p.pad);
    // Row (ci·kh + ki)·kw + kj of image b starts at (b·c·kh·kw + ci·kh·kw + ki·kw + kj)·cols.
    var o = (t * taps) * cols + col;
    for (var ki = 0u; ki < p.kh; ki++) {
        let py = oy * p.sh + ki * p.dh;
        let row_inside = py >= p.ph && py - p.ph < p.h;
        let row_at = base + (py - p.ph) * sy;
        for (var kj = 0u; kj < p.kw; kj++) {
            let px = ox * p.sw + kj * p.dw;
            var v = pad;
            if row_inside && px >= p.pw && px - p.pw < p.w {
                v = x[row_at + (px - p.pw) * sx];
            }
            out[o] = v;
            o += cols;
        }
    }
}
