// Kiln's random stream on the GPU: Philox 4x32-10, bit-identical to kiln-backend's philox.rs.
// A random op receives its key as `rng = (seed_lo, seed_hi, counter_lo, counter_hi)`; element
// e = 4q + l is lane l of block q, `kiln_philox_block(q, rng)`. A kernel computes the block once
// per four elements (vec4 kernels: once per invocation) and picks lanes with `kiln_lane`.
// Any kernel may include this file (attention dropout, say) and draw from a key it was given.

// The high and low words of the 64-bit product a·b (WGSL has no 64-bit integers).
fn kiln_mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return vec2<u32>(a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u), a * b);
}

fn kiln_philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var r = 0u; r < 10u; r += 1u) {
        if r > 0u {
            k += vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
        }
        let p0 = kiln_mulhilo(0xD2511F53u, c.x);
        let p1 = kiln_mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// Block `q` of the op keyed by `rng`: counter = rng.zw + q (64-bit, wrapping).
fn kiln_philox_block(q: u32, rng: vec4<u32>) -> vec4<u32> {
    let lo = rng.z + q;
    let hi = rng.w + select(0u, 1u, lo < q);
    return kiln_philox4x32_10(vec4<u32>(lo, hi, 0u, 0u), rng.xy);
}

fn kiln_lane(b: vec4<u32>, l: u32) -> u32 {
    return select(select(b.x, b.y, l == 1u), select(b.z, b.w, l == 3u), l >= 2u);
}

// Uniform in [0, 1): the top 24 bits times 2^-24 (exact).
fn kiln_uniform(w: u32) -> f32 {
    return f32(w >> 8u) * 5.9604644775390625e-8;
}

// For f16 outputs: the top 11 bits times 2^-11, exact in f16 and below 1.
fn kiln_uniform_f16(w: u32) -> f32 {
    return f32(w >> 21u) * 4.8828125e-4;
}

// ln(n · 2^-24) for an integer 1 <= n <= 2^24, from +, −, ×, ÷ only: accurate to a few ulps
// everywhere, also next to 1 where a GPU's log() may carry an absolute error of 2^-21 (which
// would make −2 ln u1 negative and the radius NaN). n = 2^e·f with f in [√½, √2);
// ln f = 2 atanh(s), s = (f − 1)/(f + 1), |s| < 0.172, series to s^11.
fn kiln_ln_unit(n: u32) -> f32 {
    let bits = bitcast<u32>(f32(n));
    var e = i32(bits >> 23u) - 127;
    var f = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
    if f > 1.41421356 {
        f *= 0.5;
        e += 1;
    }
    let s = (f - 1.0) / (f + 1.0);
    let s2 = s * s;
    let series = 1.0 + s2 * (0.33333333 + s2 * (0.2 + s2 * (0.14285714 + s2 * (0.11111111 + s2 * 0.09090909))));
    return f32(e - 24) * 0.69314718 + 2.0 * s * series;
}

// (cos θ, sin θ) for θ = 2π·m·2^-24, m a 24-bit integer: the top two bits pick the quadrant,
// the rest give φ in [0, π/2), where Taylor series to degree 13/12 are within 1e-8 (nested:
// sin φ = φ(1 − φ²/(2·3)(1 − φ²/(4·5)(…))), cos φ = 1 − φ²/(1·2)(1 − φ²/(3·4)(…))).
// Unlike sin()/cos(), whose error Vulkan bounds only by 2^-11, these are a few ulps anywhere.
fn kiln_turn(m: u32) -> vec2<f32> {
    let phi = f32(m & 0x3fffffu) * 3.7450703e-7; // (π/2)·2^-22
    let p2 = phi * phi;
    let s = phi * (1.0 - p2 * 0.16666667 * (1.0 - p2 * 0.05 * (1.0 - p2 * 0.023809524 * (1.0 - p2 * 0.013888889
        * (1.0 - p2 * 0.0090909091 * (1.0 - p2 * 0.0064102564))))));
    let c = 1.0 - p2 * 0.5 * (1.0 - p2 * 0.083333333 * (1.0 - p2 * 0.033333333 * (1.0 - p2 * 0.017857143
        * (1.0 - p2 * 0.011111111 * (1.0 - p2 * 0.0075757576)))));
    switch m >> 22u {
        case 0u: { return vec2<f32>(c, s); }
        case 1u: { return vec2<f32>(-s, c); }
        case 2u: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}

// Standard normal (Box–Muller) for lane l: lanes 0, 1 use words x, y; lanes 2, 3 words z, w;
// even lanes take r·cos θ, odd lanes r·sin θ (philox.rs `normal`, which is the f64 reference).
fn kiln_normal(b: vec4<u32>, l: u32) -> f32 {
    let pair = select(b.xy, b.zw, l >= 2u);
    let r = sqrt(-2.0 * kiln_ln_unit((pair.x >> 8u) + 1u));
    let t = kiln_turn(pair.y >> 8u);
    return r * select(t.x, t.y, (l & 1u) == 1u);
}
