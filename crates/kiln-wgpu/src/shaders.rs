//! The WGSL sources, embedded at build time from the workspace's `shaders/` folder, and the
//! list of every specialisation the backend can generate (validated by naga in tests).

mod template;
pub(crate) use template::Template;

pub const PRELUDE: &str = include_str!("../shaders/prelude.wgsl");
pub const MATH: &str = include_str!("../shaders/math.wgsl");
pub const ELEMENTWISE: &str = include_str!("../shaders/elementwise.wgsl");
pub const FUSED: &str = include_str!("../shaders/fused.wgsl");
pub const PHILOX: &str = include_str!("../shaders/philox.wgsl");
pub const REDUCE: &str = include_str!("../shaders/reduce.wgsl");
pub const SOFTMAX: &str = include_str!("../shaders/softmax.wgsl");
pub const CUMSUM: &str = include_str!("../shaders/cumsum.wgsl");
pub const MATMUL: &str = include_str!("../shaders/matmul.wgsl");
pub const MATMUL_SMALL: &str = include_str!("../shaders/matmul_small.wgsl");
pub const MATMUL_LOAD: &str = include_str!("../shaders/matmul_load.wgsl");
pub const MATMUL_COOP: &str = include_str!("../shaders/matmul_coop.wgsl");
pub const MATMUL_COOP_SPLITK: &str = include_str!("../shaders/matmul_coop_splitk.wgsl");
pub const MATMUL_LOAD_VEC4: &str = include_str!("../shaders/matmul_load_vec4.wgsl");
pub const MATMUL_SPLITK_SUM: &str = include_str!("../shaders/matmul_splitk_sum.wgsl");
pub const INDEX_SELECT: &str = include_str!("../shaders/index_select.wgsl");
pub const GATHER: &str = include_str!("../shaders/gather.wgsl");
pub const SCATTER_ADD: &str = include_str!("../shaders/scatter_add.wgsl");
pub const SCATTER_SITE: &str = include_str!("../shaders/scatter_site.wgsl");
pub const TOPK: &str = include_str!("../shaders/topk.wgsl");
pub const TOPK_SELECT: &str = include_str!("../shaders/topk_select.wgsl");
pub const TOPK_STEP: &str = include_str!("../shaders/topk_step.wgsl");
pub const TOPK_OUT: &str = include_str!("../shaders/topk_out.wgsl");
pub const IM2COL: &str = include_str!("../shaders/im2col.wgsl");
pub const COL2IM: &str = include_str!("../shaders/col2im.wgsl");
pub const MAX_POOL: &str = include_str!("../shaders/max_pool.wgsl");
pub const MAX_POOL_BACKWARD: &str = include_str!("../shaders/max_pool_backward.wgsl");
pub const LAYER_NORM: &str = include_str!("../shaders/layer_norm.wgsl");
pub const LAYER_NORM_BACKWARD: &str = include_str!("../shaders/layer_norm_backward.wgsl");
pub const NORM_PARAMS_GRAD: &str = include_str!("../shaders/norm_params_grad.wgsl");
pub const CROSS_ENTROPY: &str = include_str!("../shaders/cross_entropy.wgsl");
pub const CROSS_ENTROPY_BACKWARD: &str = include_str!("../shaders/cross_entropy_backward.wgsl");
pub const ATTENTION: &str = include_str!("../shaders/attention.wgsl");
pub const ATTENTION_BACKWARD_DQ: &str = include_str!("../shaders/attention_backward_dq.wgsl");
pub const ATTENTION_BACKWARD_DKV: &str = include_str!("../shaders/attention_backward_dkv.wgsl");
pub const ATTENTION_COOP: &str = include_str!("../shaders/attention_coop.wgsl");
pub const ATTENTION_COOP_BACKWARD_DQ: &str = include_str!("../shaders/attention_coop_backward_dq.wgsl");
pub const ATTENTION_COOP_BACKWARD_DKV: &str = include_str!("../shaders/attention_coop_backward_dkv.wgsl");
pub const ATTENTION_ROWS: &str = include_str!("../shaders/attention_rows.wgsl");
pub const ATTENTION_PROBS: &str = include_str!("../shaders/attention_probs.wgsl");
pub const ATTENTION_PROBS_BACKWARD: &str = include_str!("../shaders/attention_probs_backward.wgsl");
pub const ATTENTION_PROBS_HELD: &str = include_str!("../shaders/attention_probs_held.wgsl");
pub const ATTENTION_PROBS_BACKWARD_HELD: &str = include_str!("../shaders/attention_probs_backward_held.wgsl");
pub const ADAM: &str = include_str!("../shaders/adam.wgsl");
pub const UNSCALE_CHECK: &str = include_str!("../shaders/unscale_check.wgsl");
pub const COLUMN_SUM: &str = include_str!("../shaders/column_sum.wgsl");
pub const COLUMN_SUM_FINISH: &str = include_str!("../shaders/column_sum_finish.wgsl");
pub const SCALE_EACH: &str = include_str!("../shaders/scale_each.wgsl");
pub const SUM_SQUARES: &str = include_str!("../shaders/sum_squares.wgsl");
pub const SUM_SQUARES_FINISH: &str = include_str!("../shaders/sum_squares_finish.wgsl");
pub const SCATTER_REDUCE: &str = include_str!("../shaders/scatter_reduce.wgsl");
pub const ATTENTION_EXTRAS: &str = include_str!("../shaders/attention_extras.wgsl");

/// `wgsl` as the kernel cache builds it while the pool lends blocks of shared buffers: every
/// storage binding but the metadata declared `read_write` (see `cache::writable_inputs`).
pub fn writable_inputs(wgsl: &str) -> String {
    crate::cache::writable_inputs(wgsl)
}

/// Every kernel source the backend can build, with its cache key. Each kernel family adds
/// its own list; a test compiles all of them with naga (WGSL → IR → validation → SPIR-V).
pub fn all_specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    all.extend(crate::kernels::elementwise::specialisations());
    all.extend(crate::fusion::codegen::specialisations());
    all.extend(crate::kernels::extra_specialisations());
    all
}
