// im2col: [n, c, h, w] (strided) → contiguous [n, c·kh·kw, oh·ow], one thread per entry.
// Row r = (ci·kh + ki)·kw + kj and column oy·ow + ox read x[ci, oy·sh − ph + ki·dh,
// ox·sw − pw + kj·dw], or the pad value outside the image.
// Parameters: ConvParams (kernels/conv.rs): the geometry, the pad value's bits and `x`, the
// base of x's layout block (rank 4).
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
    let rows = p.c * p.kh * p.kw;
    let r = t % rows;
    let b = t / rows;
    let kj = r % p.kw;
    let ki = (r / p.kw) % p.kh;
    let ci = r / (p.kw * p.kh);
    let py = (col / p.ow) * p.sh + ki * p.dh;
    let px = (col % p.ow) * p.sw + kj * p.dw;
    if py < p.ph || py - p.ph >= p.h || px < p.pw || px - p.pw >= p.w {
        out[i] = pad_value(p.pad);
        return;
    }
    let x_at = layout_offset(p.x) + b * layout_stride(p.x, 4u, 0u) + ci * layout_stride(p.x, 4u, 1u)
        + (py - p.ph) * layout_stride(p.x, 4u, 2u) + (px - p.pw) * layout_stride(p.x, 4u, 3u);
    out[i] = x[x_at];
}
