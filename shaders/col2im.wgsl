// col2im, the adjoint of im2col: [n, c·kh·kw, oh·ow] (strided) → contiguous [n, c, h, w].
// One thread per pixel (no atomics): for each tap (ki, kj) the pixel was read by output
// position oy = (y + ph − ki·dh) / sh when that divides exactly and lands inside [0, oh), and
// likewise for ox. Taps are summed in (ki, kj) order, so the result is deterministic.
// info: [numel, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0, cols layout block (rank 3)]
// The generator fills T (storage) and C (compute: f16 accumulates in f32; integers wrap).

@group(0) @binding(1) var<storage, read> cols: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> out: array<{{T}}>;

const COLS: u32 = 15u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= info[0] { return; }
    let c = info[1];
    let h = info[2];
    let w = info[3];
    let kh = info[4];
    let kw = info[5];
    let sh = info[6];
    let sw = info[7];
    let dh = info[10];
    let dw = info[11];
    let oh = info[12];
    let ow = info[13];
    let py = (i / w) % h + info[8];
    let px = i % w + info[9];
    let ci = (i / (w * h)) % c;
    let b = i / (w * h * c);
    let base = info[COLS] + b * info[COLS + 5u];
    let row_step = info[COLS + 6u];
    let col_step = info[COLS + 7u];
    var acc = {{C}}(0);
    for (var ki = 0u; ki < kh; ki++) {
        // Larger ki only moves further up: once above the padded image, no later tap hits.
        if ki * dh > py { break; }
        let ty = py - ki * dh;
        let oy = ty / sh;
        if oy * sh != ty || oy >= oh { continue; }
        for (var kj = 0u; kj < kw; kj++) {
            if kj * dw > px { break; }
            let tx = px - kj * dw;
            let ox = tx / sw;
            if ox * sw != tx || ox >= ow { continue; }
            let row = (ci * kh + ki) * kw + kj;
            acc += {{C}}(cols[base + row * row_step + (oy * ow + ox) * col_step]);
        }
    }
    out[i] = {{T}}(acc);
}
