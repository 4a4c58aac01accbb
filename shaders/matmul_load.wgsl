// Fetches from matmul operand {{X}} through a scalar view: any strides.

@group(0) @binding({{BINDING}}) var<storage, read> {{X}}: array<{{T}}>;

fn {{X}}_one(p: u32, ok: bool) -> {{C}} {
    if ok { return {{C}}({{X}}[p]); }
    return {{C}}(0);
}

// The quad x..x+3 along m (a) or n (b) at one k, `step` apart from p; zeros past the matrix's
// edge `lim` (M or N, the caller's: no metadata read in the k loop) or when !ok (past K).
fn {{X}}_quad(p: u32, step: u32, x: u32, lim: u32, ok: bool) -> vec4<{{C}}> {
    return vec4<{{C}}>({{X}}_one(p, ok && x < lim), {{X}}_one(p + step, ok && x + 1u < lim),
        {{X}}_one(p + 2u * step, ok && x + 2u < lim), {{X}}_one(p + 3u * step, ok && x + 3u < lim));
}
