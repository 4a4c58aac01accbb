//! Kernel families. Each module turns a backend call into a specialisation key, WGSL source
//! (from `shaders/`), metadata words and a dispatch.

pub(crate) mod attention;
pub(crate) mod attention_coop;
pub(crate) mod attention_matmul;
pub(crate) mod attention_path;
pub(crate) mod column_sum;
pub(crate) mod conv;
pub(crate) mod copy_words;
pub(crate) mod cross_entropy;
pub(crate) mod elementwise;
pub(crate) mod fused;
pub(crate) mod index;
pub(crate) mod matmul;
pub(crate) mod matmul_coop;
pub(crate) mod matmul_source;
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod params;
pub(crate) mod reduce;
pub(crate) mod scale_each;
pub(crate) mod sum_squares;

use kiln_backend::{DType, Error, Layout, Result};

/// Threads per workgroup for 1-D kernels.
pub(crate) const WG: u32 = 256;

/// How a dtype is stored in a GPU buffer (WGSL has no 8-bit storage: bool is a u32 word).
pub(crate) fn storage_type(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::I32 => Ok("i32"),
        DType::U32 | DType::Bool => Ok("u32"),
        DType::F64 => {
            Err(Error::UnsupportedDType { op, dtype, why: " on the GPU (f64 lives on the CPU backend)".into() })
        }
    }
}

/// The type arithmetic happens in: f16 is widened to f32 so transcendental helpers are shared.
pub(crate) fn compute_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 | DType::F16 | DType::F64 => "f32",
        DType::I32 => "i32",
        DType::U32 => "u32",
        DType::Bool => "bool",
    }
}

/// Bytes one element takes in a GPU buffer.
pub(crate) fn gpu_size(dtype: DType) -> u64 {
    match dtype {
        DType::F16 => 2,
        DType::F64 => 8,
        _ => 4,
    }
}

/// WGSL that reads `access` (a storage element) as the compute type.
pub(crate) fn load(dtype: DType, access: &str) -> String {
    match dtype {
        DType::F16 => format!("f32({access})"),
        DType::Bool => format!("({access} != 0u)"),
        _ => access.to_string(),
    }
}

/// WGSL that turns a compute-type `value` into the storage type.
pub(crate) fn store(dtype: DType, value: &str) -> String {
    match dtype {
        DType::F16 => format!("f16({value})"),
        DType::Bool => format!("select(0u, 1u, {value})"),
        _ => value.to_string(),
    }
}

/// `enable f16;` when any dtype involved is f16.
pub(crate) fn enables(dtypes: &[DType]) -> &'static str {
    if dtypes.contains(&DType::F16) { "enable f16;\n" } else { "" }
}

/// Appends a layout block `[offset, rank, shape.., strides..]`; errors past u32 indexing.
pub(crate) fn push_layout(op: &'static str, meta: &mut Vec<u32>, layout: &Layout) -> Result<()> {
    let too_big = || Error::OutOfMemory { op, msg: format!("layout {layout:?} needs indices past u32") };
    let extent = layout.storage_extent();
    if extent > u32::MAX as usize || layout.numel() > u32::MAX as usize {
        return Err(too_big());
    }
    meta.push(layout.offset() as u32);
    meta.push(layout.rank() as u32);
    meta.extend(layout.shape().iter().map(|&d| d as u32));
    meta.extend(layout.strides().iter().map(|&s| s.min(u32::MAX as usize) as u32));
    Ok(())
}

/// Bit pattern of a scalar parameter in `dtype`'s compute type.
pub(crate) fn param_bits(value: f64, dtype: DType) -> u32 {
    match dtype {
        DType::I32 => (value as i32) as u32,
        DType::U32 => value as u32,
        DType::Bool => (value != 0.0) as u32,
        _ => (value as f32).to_bits(),
    }
}

/// WGSL reading the parameter word `meta[index]` as `dtype`'s compute type.
pub(crate) fn param(dtype: DType, index: usize) -> String {
    param_word(dtype, &format!("{index}u"))
}

/// [`param`] at a word index given as a WGSL `u32` expression.
pub(crate) fn param_word(dtype: DType, index: &str) -> String {
    match dtype {
        DType::U32 => format!("info[{index}]"),
        DType::Bool => format!("(info[{index}] != 0u)"),
        DType::I32 => format!("bitcast<i32>(info[{index}])"),
        _ => format!("bitcast<f32>(info[{index}])"),
    }
}

/// Joins the shared prelude, optional math helpers and a kernel body into one module.
pub(crate) fn module(enable: &str, with_math: bool, body: &str) -> String {
    let math = if with_math { crate::shaders::MATH } else { "" };
    format!("{enable}{}\n{math}\n{body}", crate::shaders::PRELUDE)
}

/// Specialisations of the families other than elementwise.
pub(crate) fn extra_specialisations() -> Vec<(String, String)> {
    let mut all = reduce::specialisations();
    all.extend(matmul_source::specialisations());
    all.extend(matmul_coop::specialisations());
    all.extend(index::specialisations());
    all.extend(conv::specialisations());
    all.extend(norm::specialisations());
    all.extend(cross_entropy::specialisations());
    all.extend(attention::specialisations());
    all.extend(attention_coop::specialisations());
    all.extend(attention_matmul::specialisations());
    all.extend(optim::specialisations());
    all.extend(sum_squares::specialisations());
    all.extend(scale_each::specialisations());
    all.extend(column_sum::specialisations());
    all.extend(copy_words::specialisations());
    all
}
