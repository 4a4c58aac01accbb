// Split-k epilogue of the cooperative matmul: out[b, i] = f16(Σ_s part[b, s, i]).
// info: [count (= batch·M·N), S (splits), MN (= M·N)]
// A product with few output blocks and a long k (a weight gradient `xᵀ · g` over b·t rows) runs
// as S independent k ranges that each write f32 partials; this kernel adds them in f32 and
// rounds once, so the result matches the unsplit kernel up to summation order.

@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f16>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = linear_group(wid, nwg) * 256u + lid;
    if e >= info[0] {
        return;
    }
    let splits = info[1];
    let mn = info[2];
    let base = (e / mn) * splits * mn + e % mn;
    var sum = 0.0;
    for (var s = 0u; s < splits; s += 1u) {
        sum += part[base + s * mn];
    }
    out[e] = f16(sum);
}
