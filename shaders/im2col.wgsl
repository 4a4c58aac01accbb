// im2col: [n, c, h, w] (strided) → contiguous [n, c·kh·kw, oh·ow], one thread per entry.
// Row r = (ci·kh + ki)·kw + kj and column oy·ow + ox read x[ci, oy·sh − ph + ki·dh,
// ox·sw − pw + kj·dw], or the pad value outside the image.
// info: [numel, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, pad, x layout block (rank 4)]
// Pure data movement: T is the storage word (4-byte dtypes travel as u32) and PAD reads the
// pad value's bits, already converted to the dtype on the host. Positions are compared
// against the padding unsigned: oy·sh + ki·dh stays below h + 2·ph, which the host checks
// fits in u32.

@group(0) @binding(1) var<storage, read> x: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> out: array<{{T}}>;

const X: u32 = 15u;

fn pad_value() -> {{T}} {
{{PAD}}
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= info[0] { return; }
    let c = info[1];
    let h = info[2];
    let w = info[3];
    let kh = info[4];
    let kw = info[5];
    let oh = info[12];
    let ow = info[13];
    let cols = oh * ow;
    let col = i % cols;
    let t = i / cols;
    let rows = c * kh * kw;
    let r = t % rows;
    let b = t / rows;
    let kj = r % kw;
    let ki = (r / kw) % kh;
    let ci = r / (kw * kh);
    let py = (col / ow) * info[6] + ki * info[10];
    let px = (col % ow) * info[7] + kj * info[11];
    let ph = info[8];
    let pw = info[9];
    if py < ph || py - ph >= h || px < pw || px - pw >= w {
        out[i] = pad_value();
        return;
    }
    out[i] = x[info[X] + b * info[X + 6u] + ci * info[X + 7u] + (py - ph) * info[X + 8u] + (px - pw) * info[X + 9u]];
}
