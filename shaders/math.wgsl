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

// Kahan's trick: accurate near zero without a series.
fn kiln_expm1(x: f32) -> f32 {
    let u = exp(x);
    if u == 1.0 { return x; }
    let um1 = u - 1.0;
    if um1 == -1.0 { return -1.0; }
    if kiln_isinf(u) { return u; }
    return um1 * x / log(u);
}

fn kiln_log1p(x: f32) -> f32 {
    // Below -1 (-inf included) the log is undefined, as Rust's ln_1p says; 1 + x alone would
    // turn -inf into log(-inf) = -inf through the inf shortcut below.
    if x < -1.0 { return bitcast<f32>(0x7fc00000u); }
    let u = 1.0 + x;
    if u == 1.0 { return x; }
    if kiln_isinf(u) { return u; }
    return log(u) * x / (u - 1.0);
}

fn kiln_tanh(x: f32) -> f32 {
    if kiln_isnan(x) { return x; }
    let a = abs(x);
    if a > 10.0 { return sign(x); }
    let em = kiln_expm1(2.0 * a);
    return sign(x) * em / (em + 2.0);
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
    let inf = bitcast<f32>(0x7f800000u);
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
    if negative && !integral && ax != 0.0 && !kiln_isinf(x) { return bitcast<f32>(0x7fc00000u); }
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
    return x - floor(x / y) * y;
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
