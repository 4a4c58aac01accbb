// Float helpers shared by elementwise kernels. NaN and inf are tested on the bits: drivers may
// fold `x != x` away under fast-math assumptions.

fn kiln_isnan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn kiln_isinf(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;
}

fn kiln_sign(x: f32) -> f32 {
    if kiln_isnan(x) { return x; }
    return select(select(0.0, 1.0, x > 0.0), -1.0, x < 0.0);
}

// expm1, log1p and tanh are evaluated by short series near 0 rather than from exp/log near 1:
// Vulkan bounds exp's error relative to its result and log's only absolutely (2^-21) on
// [0.5, 2], so exp(x) − 1 or log(1 + x) lose every digit for tiny x on some drivers (lavapipe:
// 1e-2 to 3e-1 relative error at |x| ~ 1e-4). The series keep a few ulps of relative error.

// |x| < 0.5: Taylor to x^10/10! (truncation below 2e-11 relative there); beyond, exp(x) − 1
// has at most 2.5 times exp's relative error.
fn kiln_expm1(x: f32) -> f32 {
    if abs(x) < 0.5 {
        return x * (1.0 + x * (0.5 + x * (1.6666667e-1 + x * (4.1666668e-2 + x * (8.3333338e-3 + x * (1.3888889e-3
            + x * (1.9841270e-4 + x * (2.4801587e-5 + x * (2.7557319e-6 + x * 2.7557319e-7)))))))));
    }
    return exp(x) - 1.0;
}

// On [-0.5, 1]: log1p(x) = 2·atanh(s), s = x/(2 + x) in [-1/3, 1/3], series to s^17
// (truncation below 2e-10 relative). Elsewhere 1 + x is far from 1 and log is accurate there;
// the factor x/(u − 1) corrects the rounding of u = 1 + x.
fn kiln_log1p(x: f32) -> f32 {
    // Below -1 (-inf included) the log is undefined, as Rust's ln_1p says.
    if x < -1.0 { return kiln_f32_bits(0x7fc00000u); }
    if x >= -0.5 && x <= 1.0 {
        let s = x / (2.0 + x);
        let s2 = s * s;
        return 2.0 * s * (1.0 + s2 * (3.3333334e-1 + s2 * (2.0e-1 + s2 * (1.4285715e-1 + s2 * (1.1111111e-1
            + s2 * (9.0909094e-2 + s2 * (7.6923080e-2 + s2 * (6.6666670e-2 + s2 * 5.8823529e-2))))))));
    }
    let u = 1.0 + x;
    if kiln_isinf(u) || kiln_isnan(u) { return u; }
    return log(u) * x / (u - 1.0);
}

// (e^2|x| − 1)/(e^2|x| + 1) from the accurate expm1: a few ulps near 0 too.
fn kiln_tanh(x: f32) -> f32 {
    if kiln_isnan(x) { return x; }
    let a = abs(x);
    if a > 10.0 { return sign(x); }
    let em = kiln_expm1(2.0 * a);
    return sign(x) * em / (em + 2.0);
}

// sin and cos of any finite f32: WGSL's built-ins are only bounded (2^-11 absolute) on
// [-π, π], and drivers reduce large arguments with a short π (an H100 gave sin(2147483647)
// wrong in the first digit). Here |x| is reduced exactly by the nearest multiple of π/2 with
// integer arithmetic (Payne–Hanek: the 24-bit mantissa times a 128-bit window of 2/π's bits,
// chosen by the exponent so that earlier bits only add multiples of 4), then Taylor
// polynomials on [-π/4, π/4] (truncation below 1e-11).

// 2/π as a binary fraction, 32 bits a word, most significant first (224 bits: enough for
// every f32 exponent).
const KILN_TWO_OVER_PI = array<u32, 7>(0xa2f9836eu, 0x4e441529u, 0xfc2757d1u, 0xf534ddc0u, 0xdb629599u, 0x3c439041u, 0xfe5163abu);

// The 64-bit product a·b as (high word, low word).
fn kiln_mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return vec2<u32>(a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u), a * b);
}

// A finite a >= 0 as r + q·π/2 with |r| <= π/4 (a hair more at the rounding boundary):
// returns (r, q mod 4 as a float).
fn kiln_trig_reduce(a: f32) -> vec2<f32> {
    if a < 0.78539816 { return vec2<f32>(a, 0.0); }
    let bits = bitcast<u32>(a);
    let m = (bits & 0x007fffffu) | 0x00800000u;
    // a = m·2^e, e from -24 (a >= π/4) to 104.
    let e = i32(bits >> 23u) - 150;
    // Words of 2/π before `w` contribute m·2^e·2^-j with j <= 32w <= e − 2: multiples of 4.
    let w = u32(max(e - 2, 0)) / 32u;
    let e2 = u32(e - i32(32u * w) + 24);  // e relative to the window, plus 24 (now >= 0)
    // p = m · (words w..w+3 as a 128-bit integer), 152 bits, least significant word first.
    // A local copy: a constant array indexed at run time is not portable.
    var two_over_pi = KILN_TWO_OVER_PI;
    var p: array<u32, 6>;
    var carry = 0u;
    var hi_prev = 0u;
    for (var i = 0u; i < 4u; i++) {
        let t = kiln_mul_wide(m, two_over_pi[w + 3u - i]);
        let s = t.y + hi_prev;
        let c1 = select(0u, 1u, s < t.y);
        let s2 = s + carry;
        let c2 = select(0u, 1u, s2 < carry);
        p[i] = s2;
        carry = c1 + c2;
        hi_prev = t.x;
    }
    p[4] = hi_prev + carry;
    p[5] = 0u;
    // a·2/π ≡ p·2^(e2 − 24 − 128) (mod 4): the units bit of p is b = 152 − e2.
    let b = 152u - e2;
    let int_bits = kiln_bits_at(&p, b) & 3u;
    let frac = kiln_bits_at(&p, b - 32u);
    let frac2 = kiln_bits_at(&p, b - 64u);
    // Round to the nearest quadrant: a fraction >= 1/2 counts as the next one minus the rest,
    // which is what reading the top fraction word as signed does.
    let q = (int_bits + (frac >> 31u)) & 3u;
    let f = f32(bitcast<i32>(frac)) + f32(frac2) * 2.3283064e-10;
    return vec2<f32>(f * 3.6572952e-10, f32(q));  // (π/2)·2^-32
}

// The 32 bits of p starting at bit `at` (31 <= at <= 152).
fn kiln_bits_at(p: ptr<function, array<u32, 6>>, at: u32) -> u32 {
    let i = at / 32u;
    let sh = at % 32u;
    let lo = (*p)[i] >> sh;
    // WGSL takes shift counts mod 32: a zero `sh` must not shift by 32.
    let hi = select(0u, (*p)[min(i + 1u, 5u)] << (32u - sh), sh != 0u);
    return lo | hi;
}

// (sin r, cos r) for |r| <= π/4: Taylor to r^11 and r^12.
fn kiln_sincos_poly(r: f32) -> vec2<f32> {
    let r2 = r * r;
    let s = r * (1.0 - r2 * (1.6666667e-1 - r2 * (8.3333338e-3 - r2 * (1.9841270e-4 - r2 * (2.7557319e-6 - r2 * 2.5052108e-8)))));
    let c = 1.0 - r2 * (0.5 - r2 * (4.1666668e-2 - r2 * (1.3888889e-3 - r2 * (2.4801587e-5 - r2 * (2.7557319e-7 - r2 * 2.0876757e-9)))));
    return vec2<f32>(s, c);
}

fn kiln_sin(x: f32) -> f32 {
    if kiln_isnan(x) || kiln_isinf(x) { return kiln_f32_bits(0x7fc00000u); }
    let red = kiln_trig_reduce(abs(x));
    let sc = kiln_sincos_poly(red.x);
    let q = u32(red.y);
    var y = select(sc.x, sc.y, (q & 1u) == 1u);
    y = select(y, -y, q >= 2u);
    return select(y, -y, x < 0.0);
}

fn kiln_cos(x: f32) -> f32 {
    if kiln_isnan(x) || kiln_isinf(x) { return kiln_f32_bits(0x7fc00000u); }
    let red = kiln_trig_reduce(abs(x));
    let sc = kiln_sincos_poly(red.x);
    let q = u32(red.y);
    let y = select(sc.y, sc.x, (q & 1u) == 1u);
    return select(y, -y, q == 1u || q == 2u);
}

fn kiln_sigmoid(x: f32) -> f32 {
    if x < 0.0 {
        let e = exp(x);
        return e / (1.0 + e);
    }
    return 1.0 / (1.0 + exp(-x));
}

// Abramowitz & Stegun 7.1.26 refined with one Newton step is overkill; a 5-term rational
// approximation (max error 1.5e-7) is below f32 resolution for |erf| near 1.
fn kiln_erf(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
    return select(y, -y, x < 0.0);
}

fn kiln_softplus(x: f32) -> f32 {
    // PyTorch's threshold: past 20, log1p(exp(x)) == x in f32.
    if x > 20.0 { return x; }
    return kiln_log1p(exp(x));
}

// IEEE 754 pow's special cases, as f64::powf on the CPU: WGSL's pow is exp2(y·log2(x)), which
// is undefined for x < 0 and gives NaN for 1^inf (0·inf).
fn kiln_pow(x: f32, y: f32) -> f32 {
    let inf = kiln_f32_bits(0x7f800000u);
    if y == 0.0 || x == 1.0 { return 1.0; }
    if kiln_isnan(x) || kiln_isnan(y) { return x + y; }
    let ax = abs(x);
    if kiln_isinf(y) {
        if ax == 1.0 { return 1.0; }
        return select(0.0, inf, (ax > 1.0) == (y > 0.0));
    }
    let ay = abs(y);
    let integral = floor(y) == y;
    let odd = integral && ay < 16777216.0 && (i32(ay) & 1) == 1;
    // The sign bit, so that -0 and -inf count as negative.
    let negative = (bitcast<u32>(x) & 0x80000000u) != 0u;
    if negative && !integral && ax != 0.0 && !kiln_isinf(x) { return kiln_f32_bits(0x7fc00000u); }
    var r = 0.0;
    if ax == 0.0 || kiln_isinf(x) {
        r = select(0.0, inf, (ax == 0.0) == (y < 0.0));
    } else {
        r = pow(ax, y);
    }
    return select(r, -r, negative && odd);
}

// torch.remainder: fmod, then the divisor's sign. By ±inf, fmod leaves a finite x as it is
// (x − floor(x/inf)·inf would be 0·inf = NaN).
fn kiln_rem_f32(x: f32, y: f32) -> f32 {
    if kiln_isinf(y) && !kiln_isinf(x) && !kiln_isnan(x) {
        if x != 0.0 && ((x < 0.0) != (y < 0.0)) { return y; }
        return x;
    }
    // The quotient is rounded (and GPUs divide to 2.5 ulp), so floor(x / y) can come out one
    // below or above the true floor; x = k·y exactly then gave y instead of 0 on an H100. The
    // CPU takes the exact fmod; these two checks land on its result.
    var q = floor(x / y);
    let up = x - (q + 1.0) * y;
    if up == 0.0 || ((up < 0.0) == (y < 0.0)) { q = q + 1.0; }
    var r = x - q * y;
    if r != 0.0 && ((r < 0.0) != (y < 0.0)) { r = r + y; }
    return r;
}

// The remainders below come from `a - q * b`, not `%`: GLSL leaves `%` undefined for negative
// operands, and Mesa's llvmpipe gives the unsigned remainder (7 % -2 = 7 on wgpu's GL backend).
fn kiln_floordiv_i32(a: i32, b: i32) -> i32 {
    if b == 0 { return 0; }
    if b == -1 { return 0 - a; }
    let q = a / b;
    if (a - q * b != 0) && ((a < 0) != (b < 0)) { return q - 1; }
    return q;
}

fn kiln_rem_i32(a: i32, b: i32) -> i32 {
    if b == 0 || b == -1 { return 0; }
    let r = a - (a / b) * b;
    if r != 0 && ((r < 0) != (b < 0)) { return r + b; }
    return r;
}

fn kiln_div_u32(a: u32, b: u32) -> u32 {
    if b == 0u { return 0u; }
    return a / b;
}

fn kiln_rem_u32(a: u32, b: u32) -> u32 {
    if b == 0u { return 0u; }
    return a % b;
}

// Integer powers by squaring, wrapping; a negative exponent gives 0 unless |base| is 1.
fn kiln_pow_i32(a: i32, b: i32) -> i32 {
    if b < 0 {
        if a == 1 { return 1; }
        if a == -1 { return select(1, -1, (b & 1) == 1); }
        return 0;
    }
    var base = a;
    var e = u32(b);
    var r = 1;
    loop {
        if e == 0u { break; }
        if (e & 1u) == 1u { r = r * base; }
        base = base * base;
        e = e >> 1u;
    }
    return r;
}

fn kiln_pow_u32(a: u32, b: u32) -> u32 {
    var base = a;
    var e = b;
    var r = 1u;
    loop {
        if e == 0u { break; }
        if (e & 1u) == 1u { r = r * base; }
        base = base * base;
        e = e >> 1u;
    }
    return r;
}
