// Attention's optional extras, shared by the attention kernels (flash and materialised): an
// additive f32 bias broadcast to [batch, heads, q_len, kv_len] (PyTorch's attn_mask: a bool mask
// arrives as 0 / -inf; -inf hides the key), and attention dropout whose mask is computed where
// it is needed, never stored. Score (row, j), row = (b·heads + h)·q_len + i, is kept when the
// uniform of lane j % 4 of Philox block row·⌈kv_len/4⌉ + j/4 of the op's key is below `keep`
// (kiln_backend's AttentionDropout::kept is the definition; needs philox.wgsl), and a kept
// probability is scaled by 1/keep.
//
// info words 8..17 (after each kernel's own eight): bias strides over (b, h, i, j), has_bias,
// keep (f32 bits; exactly 1.0: no dropout), the Philox key (seed_lo, seed_hi, counter_lo,
// counter_hi). The `bias` binding (f32) is declared with the kernel's others.

fn attn_has_bias() -> bool {
    return info[12u] != 0u;
}

// The bias of score (b, h, i, j); 0 without one.
fn attn_bias(b: u32, h: u32, i: u32, j: u32) -> f32 {
    if !attn_has_bias() {
        return 0.0;
    }
    return bias[b * info[8u] + h * info[9u] + i * info[10u] + j * info[11u]];
}

fn attn_dropping() -> bool {
    return info[13u] != 0x3f800000u;
}

// The Philox words of the block holding score (row, j): block row·⌈kv_len/4⌉ + j/4, as a
// 64-bit count added to the key's counter.
fn attn_drop_block(row: u32, j: u32, kv_len: u32) -> vec4<u32> {
    let wide = kiln_mulhilo(row, (kv_len + 3u) / 4u);
    let lo = wide.y + j / 4u;
    let hi = wide.x + select(0u, 1u, lo < wide.y);
    let c_lo = info[16u] + lo;
    let c_hi = info[17u] + hi + select(0u, 1u, c_lo < lo);
    return kiln_philox4x32_10(vec4<u32>(c_lo, c_hi, 0u, 0u), vec2<u32>(info[14u], info[15u]));
}

// Dropout's factor for score (row, j): 1/keep where kept, 0 where dropped, 1 without dropout.
fn attn_drop(row: u32, j: u32, kv_len: u32) -> f32 {
    if !attn_dropping() {
        return 1.0;
    }
    let keep = bitcast<f32>(info[13u]);
    let w = kiln_lane(attn_drop_block(row, j, kv_len), j % 4u);
    return select(0.0, 1.0 / keep, kiln_uniform(w) < keep);
}

// The factors of four consecutive keys j4..j4+3 (j4 a multiple of 4) of one row: one block.
fn attn_drop4(row: u32, j4: u32, kv_len: u32) -> vec4<f32> {
    if !attn_dropping() {
        return vec4<f32>(1.0);
    }
    let keep = bitcast<f32>(info[13u]);
    let b = attn_drop_block(row, j4, kv_len);
    let u = vec4<f32>(kiln_uniform(b.x), kiln_uniform(b.y), kiln_uniform(b.z), kiln_uniform(b.w));
    return select(vec4<f32>(0.0), vec4<f32>(1.0 / keep), u < vec4<f32>(keep));
}
