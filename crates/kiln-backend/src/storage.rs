use crate::{AdamParams, AttentionParams, CrossEntropyParams, NormParams};
use crate::{
    BinaryOp, ConvGeometry, DType, Distribution, HostData, Layout, PhiloxKey, ReduceOp, Result, ScatterOp, TernaryOp,
    UnaryOp,
};

/// What every backend implements: the primitive ops from which `kiln-core` builds the whole op
/// set. Inputs are strided (`Layout`); outputs are fresh, contiguous, offset 0.
///
/// Shapes and dtypes are validated by the core before a call; a backend still returns errors
/// for what only it can know (adapter limits, unsupported dtypes, device loss).
pub trait BackendStorage: Sized + Send + Sync + 'static {
    type Device: Clone + Send + Sync;

    fn dtype(&self) -> DType;

    /// Uploads host data as a contiguous tensor.
    fn from_host(device: &Self::Device, data: &HostData) -> Result<Self>;

    /// `numel` elements equal to `value` (cast to `dtype`).
    fn full(device: &Self::Device, numel: usize, value: f64, dtype: DType) -> Result<Self>;

    /// `numel` elements drawn from `dist` at `key` (see `philox.rs`: element `i` is a pure
    /// function of the key, `i` and the distribution), generated where the tensor lives. `Bits`
    /// is u32; the others are float dtypes.
    fn random(device: &Self::Device, numel: usize, dist: Distribution, key: PhiloxKey, dtype: DType) -> Result<Self>;

    /// Reads the elements of `layout` back, in row-major order.
    fn to_host(&self, layout: &Layout) -> Result<HostData>;

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self>;

    /// Both layouts have the same shape (broadcast views have stride 0).
    fn binary(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, op: BinaryOp) -> Result<Self>;

    /// `cond ? on_true : on_false`; `self` is the bool condition; all three layouts share a shape.
    fn where_cond(
        &self,
        layout: &Layout,
        on_true: &Self,
        t_layout: &Layout,
        on_false: &Self,
        f_layout: &Layout,
    ) -> Result<Self>;

    /// `op(self, b, c)` elementwise; the three layouts share a shape, the storages a float dtype.
    fn ternary(
        &self,
        layout: &Layout,
        b: &Self,
        b_layout: &Layout,
        c: &Self,
        c_layout: &Layout,
        op: TernaryOp,
    ) -> Result<Self>;

    /// Converts to `dtype` (float → int truncates toward zero and saturates; nonzero → true).
    /// With `dtype == self.dtype()` this is the contiguous copy.
    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Self>;

    /// Writes the elements of `layout` into `dst` at `dst_layout` (same shape and dtype).
    fn copy_into(&self, layout: &Layout, dst: &mut Self, dst_layout: &Layout) -> Result<()>;

    /// Reduces the last `reduced_dims` dims of `layout`; the output has the leading dims' shape.
    fn reduce(&self, layout: &Layout, op: ReduceOp, reduced_dims: usize) -> Result<Self>;

    /// Softmax (or log-softmax) over the last dim.
    fn softmax_last(&self, layout: &Layout, log: bool) -> Result<Self>;

    /// Inclusive prefix sum along `dim`.
    fn cumsum(&self, layout: &Layout, dim: usize) -> Result<Self>;

    /// `[b, m, k] · [b, k, n] → [b, m, n]`, any strides (broadcast batch = stride 0).
    fn matmul(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout) -> Result<Self>;

    // Index ops: the provided methods run the shared argument checks (`checks.rs`) once, for
    // every backend and caller, then call the backend's `*_impl`, which may assume them.

    /// Picks entries of `dim` by `ids` (1-D, u32 or i32, already range-checked).
    fn index_select(&self, layout: &Layout, ids: &Self, ids_layout: &Layout, dim: usize) -> Result<Self> {
        crate::checks::index_select("index_select", layout, ids.dtype(), ids_layout, dim)?;
        self.index_select_impl(layout, ids, ids_layout, dim)
    }

    /// [`index_select`](Self::index_select) after its checks.
    fn index_select_impl(&self, layout: &Layout, ids: &Self, ids_layout: &Layout, dim: usize) -> Result<Self>;

    /// `out[..i..] = self[..ids[..i..]..]` along `dim`; output has the shape of `ids`.
    fn gather(&self, layout: &Layout, ids: &Self, ids_layout: &Layout, dim: usize) -> Result<Self> {
        crate::checks::gather("gather", layout, ids.dtype(), ids_layout, dim)?;
        self.gather_impl(layout, ids, ids_layout, dim)
    }

    /// [`gather`](Self::gather) after its checks.
    fn gather_impl(&self, layout: &Layout, ids: &Self, ids_layout: &Layout, dim: usize) -> Result<Self>;

    /// A copy of `self` with `src` added at the positions `ids` names along `dim`
    /// (`ids` and `src` share a shape, no larger than `self` in the other dims).
    fn scatter_add(
        &self,
        layout: &Layout,
        ids: &Self,
        ids_layout: &Layout,
        src: &Self,
        src_layout: &Layout,
        dim: usize,
    ) -> Result<Self> {
        let (dtype, ids_dtype) = (self.dtype(), ids.dtype());
        crate::checks::scatter("scatter_add", dtype, layout, ids_dtype, ids_layout, src.dtype(), src_layout, dim)?;
        self.scatter_add_impl(layout, ids, ids_layout, src, src_layout, dim)
    }

    /// [`scatter_add`](Self::scatter_add) after its checks.
    fn scatter_add_impl(
        &self,
        layout: &Layout,
        ids: &Self,
        ids_layout: &Layout,
        src: &Self,
        src_layout: &Layout,
        dim: usize,
    ) -> Result<Self>;

    /// A contiguous copy of `self` in which every element `p` named by an index position `q`
    /// (`p` = `q` with `q[dim]` replaced by `ids[q]`) becomes `op` over the `src[q]` landing on
    /// it, taken in row-major order of `q`, and over its own value too when `include_self`
    /// (ignored by `Replace`). Elements no index names keep their value. `Mean` divides by the
    /// number of values combined (floor division for integers). Amax/amin propagate NaN.
    #[allow(clippy::too_many_arguments)]
    fn scatter_reduce(
        &self,
        layout: &Layout,
        ids: &Self,
        ids_layout: &Layout,
        src: &Self,
        src_layout: &Layout,
        dim: usize,
        op: ScatterOp,
        include_self: bool,
    ) -> Result<Self> {
        let (dtype, ids_dtype) = (self.dtype(), ids.dtype());
        crate::checks::scatter("scatter_reduce", dtype, layout, ids_dtype, ids_layout, src.dtype(), src_layout, dim)?;
        self.scatter_reduce_impl(layout, ids, ids_layout, src, src_layout, dim, op, include_self)
    }

    /// [`scatter_reduce`](Self::scatter_reduce) after its checks.
    #[allow(clippy::too_many_arguments)]
    fn scatter_reduce_impl(
        &self,
        layout: &Layout,
        ids: &Self,
        ids_layout: &Layout,
        src: &Self,
        src_layout: &Layout,
        dim: usize,
        op: ScatterOp,
        include_self: bool,
    ) -> Result<Self>;

    /// Unfolds `[n, c, h, w]` into `[n, c·kh·kw, oh·ow]`; positions in the padding read `pad_value`.
    fn im2col(&self, layout: &Layout, geometry: &ConvGeometry, pad_value: f64) -> Result<Self>;

    /// The adjoint of `im2col`: sums `[n, c·kh·kw, oh·ow]` back into `[n, c, h, w]`.
    fn col2im(&self, layout: &Layout, geometry: &ConvGeometry) -> Result<Self>;

    /// Max pooling of `[n, c, h, w]` (floats) over the windows of `geometry`: each window's max
    /// and its tap `ki·kw + kj` (u32), both `[n, c, oh, ow]`. The tap is the first max, a NaN
    /// counting as the max (the first NaN wins), as `argmax`; padding positions are skipped
    /// (they read −∞, which a window with no pixel inside returns, with tap 0).
    fn max_pool(&self, layout: &Layout, geometry: &ConvGeometry) -> Result<(Self, Self)>;

    /// Max pooling's gradient: `self` is the output's gradient `[n, c, oh, ow]`, `taps` the u32
    /// taps `max_pool` returned; each gradient goes to the pixel its window's tap reads, summed
    /// per pixel into `[n, c, h, w]` (taps in the padding are dropped). The same as col2im of
    /// columns that hold the gradient at each window's tap and zero elsewhere, without them.
    fn max_pool_backward(
        &self,
        layout: &Layout,
        taps: &Self,
        taps_layout: &Layout,
        geometry: &ConvGeometry,
    ) -> Result<Self>;

    /// The `k` largest (or smallest) entries of the last dim, sorted, with their u32 positions;
    /// ties keep the lower index first.
    fn topk(&self, layout: &Layout, k: usize, largest: bool) -> Result<(Self, Self)>;

    // Fused primitives (see `fused.rs`): inputs contiguous at offset 0, float dtypes.

    /// Normalises `self: [rows, n]` per row, then scales by `weight` and shifts by `bias`
    /// (both `[n]`, optional). Returns `y` and per-row statistics `[rows, 2]` (mean, rstd) in a
    /// backend-chosen float dtype, only ever handed back to `norm_backward`.
    fn norm_forward(&self, weight: Option<&Self>, bias: Option<&Self>, p: &NormParams) -> Result<(Self, Self)>;

    /// Gradients of `norm_forward` given `dy`: `(dx [rows, n], dweight [n], dbias [n])`
    /// (dweight = Σ_rows dy·x̂, dbias = Σ_rows dy; weight `None` means ones).
    fn norm_backward(
        &self,
        dy: &Self,
        stats: &Self,
        weight: Option<&Self>,
        p: &NormParams,
    ) -> Result<(Self, Self, Self)>;

    /// Per-row loss `[rows]` (dtype of `self`) and log-sum-exp `[rows]` of logits `self`
    /// against class ids `targets` (u32 or i32, in range unless ignored).
    fn cross_entropy_forward(&self, targets: &Self, p: &CrossEntropyParams) -> Result<(Self, Self)> {
        crate::checks::check_ids("cross_entropy", targets.dtype())?;
        self.cross_entropy_forward_impl(targets, p)
    }

    /// [`cross_entropy_forward`](Self::cross_entropy_forward) after its checks.
    fn cross_entropy_forward_impl(&self, targets: &Self, p: &CrossEntropyParams) -> Result<(Self, Self)>;

    /// `grad[r] · (softmax(x_r) − (1 − ε)·onehot(t_r) − ε/C)`, zero for ignored rows.
    fn cross_entropy_backward(&self, targets: &Self, lse: &Self, grad: &Self, p: &CrossEntropyParams) -> Result<Self> {
        crate::checks::check_ids("cross_entropy_backward", targets.dtype())?;
        self.cross_entropy_backward_impl(targets, lse, grad, p)
    }

    /// [`cross_entropy_backward`](Self::cross_entropy_backward) after its checks.
    fn cross_entropy_backward_impl(
        &self,
        targets: &Self,
        lse: &Self,
        grad: &Self,
        p: &CrossEntropyParams,
    ) -> Result<Self>;

    /// Attention output `[batch·heads, q_len, head_dim]` and the row log-sum-exp of the scaled
    /// (and biased) scores `[batch·heads, q_len]` (f32 or wider; +inf for a query that sees no
    /// key; dropout does not change it). `bias` is f32, read at `p.bias_strides`.
    fn attention_forward(
        &self,
        k: &Self,
        v: &Self,
        key_mask: Option<&Self>,
        bias: Option<&Self>,
        p: &AttentionParams,
    ) -> Result<(Self, Self)>;

    /// `(dq, dk, dv)` from the forward's output `o`, its `lse` and the output gradient `dout`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        k: &Self,
        v: &Self,
        key_mask: Option<&Self>,
        bias: Option<&Self>,
        o: &Self,
        lse: &Self,
        dout: &Self,
        p: &AttentionParams,
    ) -> Result<(Self, Self, Self)>;

    /// `Σ x²` of each tensor in `parts` — a storage and the element count of its tensor, which
    /// is contiguous from the storage's first element — as one contiguous `[parts.len()]` tensor
    /// of `dtype` (f32, or f64 where the backend has it), accumulated in f32 or wider. `parts`
    /// is not empty, its storages share a device and a float dtype each. The multi-tensor
    /// kernel of `clip_grad_norm_`: a few dispatches for all gradients instead of a square, a
    /// reduction and an add for each.
    fn sum_squares(parts: &[(&Self, usize)], dtype: DType) -> Result<Self>;

    /// Multiplies the first `n` elements of each part in place by `factor[0]` (a float of at
    /// least one element, read where it lives: no host value), in each part's own dtype. The
    /// parts are distinct storages on `factor`'s device. The multi-tensor scale of
    /// `clip_grad_norm_`: a few dispatches for all gradients instead of one each.
    fn scale_in_place(parts: &mut [(&mut Self, usize)], factor: &Self) -> Result<()>;

    /// One Adam step in place: `self` (the parameter), `m` and `v` are updated; all four share
    /// a dtype and length.
    fn adam_step(&mut self, grad: &Self, m: &mut Self, v: &mut Self, p: &AdamParams) -> Result<()>;

    /// Loss-scaling's unscale in place: every element of `self` (a float gradient) becomes
    /// `x · inv_scale` in its own dtype, and when any *result* is inf or NaN (an inf or NaN
    /// input, or a finite product that overflows the dtype) a 1 is ORed into `found_inf[0]`, a
    /// u32 flag the op never clears, so one flag can gather many gradients before one readback.
    fn unscale_check(&mut self, inv_scale: f64, found_inf: &mut Self) -> Result<()>;

    /// [`unscale_check`](Self::unscale_check) by `inv_scale = 1 / scale[0]`, where `scale` is
    /// one f32 read where it lives (a loss scale kept on the device needs no host value).
    fn unscale_check_by(&mut self, scale: &Self, found_inf: &mut Self) -> Result<()>;

    /// [`adam_step`](Self::adam_step) with the step count on the device, skipped when
    /// `found_inf[0]` (u32) is not 0: GradScaler's overflow flag decides without a readback.
    /// `steps` holds two u32 slots. `p.step` is this call's attempt number (1 on the first
    /// call for this parameter, counting skipped ones): slot `(p.step − 1) % 2` holds the count
    /// of updates so far; the update uses `t` = that count + 1, and `t` (or, when skipped, the
    /// old count) is written to slot `p.step % 2`. A skipped call changes nothing else.
    #[allow(clippy::too_many_arguments)]
    fn adam_step_gated(
        &mut self,
        grad: &Self,
        m: &mut Self,
        v: &mut Self,
        steps: &mut Self,
        found_inf: &Self,
        p: &AdamParams,
    ) -> Result<()>;
}
