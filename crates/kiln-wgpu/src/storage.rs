//! `GpuStorage`: a pooled buffer plus its dtype, and the `BackendStorage` impl that routes each
//! primitive to its kernel family.

use crate::chunked;
use crate::context::GpuDevice;
use crate::kernels::{self, elementwise as ew, gpu_size, param_bits};
use crate::pool::PooledBuffer;
use kiln_backend::{AdamParams, AttentionParams, CrossEntropyParams, NormParams};
use kiln_backend::{
    BackendStorage, BinaryOp, ConvGeometry, DType, Distribution, Error, HostData, Layout, PhiloxKey, ReduceOp, Result,
    ScatterOp, TernaryOp, UnaryOp,
};
use std::sync::Arc;

/// Elements of one dtype in a GPU buffer (bool as u32 words, f16 packed two to a word).
pub struct GpuStorage {
    /// Shared with pending fused ops: they read it strongly and track their output weakly.
    buf: Arc<PooledBuffer>,
    dtype: DType,
    len: usize,
    ctx: GpuDevice,
    /// Integer data uploaded from the host: its smallest and largest value, so that index
    /// checks need no readback (a readback is a host sync in the middle of a training step).
    known_range: Option<(i64, i64)>,
    /// Set once the raw buffer went to the application, whose own passes may write it: the
    /// known range is no longer trusted.
    handed_out: std::sync::atomic::AtomicBool,
}

impl GpuStorage {
    /// A fresh buffer for `len` elements (contents undefined).
    pub(crate) fn alloc(ctx: &GpuDevice, op: &'static str, dtype: DType, len: usize) -> Result<Self> {
        kernels::storage_type(op, dtype)?;
        check_f16(ctx, op, dtype)?;
        let bytes = (len as u64).checked_mul(gpu_size(dtype)).ok_or_else(|| Error::OutOfMemory {
            op,
            msg: format!("{len} elements of {dtype} overflow the address space"),
        })?;
        let buf = ctx.pool.storage(&ctx.device, op, bytes)?;
        Ok(GpuStorage {
            buf: Arc::new(buf),
            dtype,
            len,
            ctx: ctx.clone(),
            known_range: None,
            handed_out: Default::default(),
        })
    }

    /// The smallest and largest value of integer data uploaded from the host, while nothing
    /// else can have written the buffer; `None` for everything else.
    pub fn known_range(&self) -> Option<(i64, i64)> {
        self.known_range.filter(|_| !self.handed_out.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The buffer for an application's own passes ([`buffer`](Self::buffer)), which may write
    /// it: the known range is dropped.
    pub fn buffer_for_app(&self) -> &wgpu::Buffer {
        self.handed_out.store(true, std::sync::atomic::Ordering::Release);
        self.buffer()
    }

    /// The underlying wgpu buffer, for binding a tensor in an application's own passes. The
    /// storage starts [`offset`](Self::offset) bytes into it (the pool lends blocks of shared
    /// buffers) and its elements at the tensor layout's offset × element size after that.
    /// Pending fused work is recorded first, so the buffer's contents are defined once the
    /// recorded work is submitted.
    pub fn buffer(&self) -> &wgpu::Buffer {
        let _ = self.ctx.flush_fusion();
        self.buf.buffer()
    }

    /// Where this storage's bytes start in [`buffer`](Self::buffer).
    pub fn offset(&self) -> u64 {
        self.buf.offset()
    }

    /// Bytes of [`buffer`](Self::buffer) from [`offset`](Self::offset) on that are this storage's
    /// (its elements, rounded up).
    pub fn byte_size(&self) -> u64 {
        self.buf.size()
    }

    /// The storage's bytes as a kernel binds them or a copy addresses them; like
    /// [`buffer`](Self::buffer), records pending fused work first.
    pub(crate) fn binding(&self) -> crate::pool::Span<'_> {
        let _ = self.ctx.flush_fusion();
        self.buf.binding()
    }

    pub(crate) fn shared_buffer(&self) -> &Arc<PooledBuffer> {
        &self.buf
    }

    /// Identifies the buffer while any pending op refers to it.
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.buf) as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn context(&self) -> &GpuDevice {
        &self.ctx
    }

    /// Reads the layout's elements asynchronously (no thread blocks on the GPU).
    pub async fn to_host_async(&self, layout: &Layout) -> Result<HostData> {
        let flat = self.contiguous_for_read(layout)?;
        let src = flat.as_ref().unwrap_or(self);
        let bytes = gpu_size(self.dtype) * layout.numel() as u64;
        let (dtype, n) = (self.dtype, layout.numel());
        self.ctx.read_with_async("to_vec_async", src.binding(), bytes, |raw| decode(dtype, raw, n)).await?
    }

    /// A contiguous copy when `layout` is not already the buffer's prefix.
    fn contiguous_for_read(&self, layout: &Layout) -> Result<Option<GpuStorage>> {
        if layout.is_contiguous() && layout.offset() == 0 { Ok(None) } else { Ok(Some(self.cast(layout, self.dtype)?)) }
    }
}

fn check_f16(ctx: &GpuDevice, op: &'static str, dtype: DType) -> Result<()> {
    if dtype == DType::F16 && !ctx.has_f16() {
        return Err(Error::Unsupported { op, msg: format!("f16 needs SHADER_F16, which {} lacks", ctx.summary.name) });
    }
    Ok(())
}

fn same_device(op: &'static str, a: &GpuStorage, b: &GpuStorage) -> Result<()> {
    if std::sync::Arc::ptr_eq(&a.ctx, &b.ctx) {
        Ok(())
    } else {
        Err(Error::DeviceMismatch { op, lhs: a.ctx.summary.name.clone(), rhs: b.ctx.summary.name.clone() })
    }
}

/// The bytes a GPU buffer holds for `data`: borrowed where the host layout already matches
/// (every dtype but bool), so an upload copies once, into the staging memory.
fn encode(data: &HostData) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    match data {
        HostData::F32(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
        HostData::F16(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
        HostData::F64(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
        HostData::I32(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
        HostData::U32(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
        HostData::Bool(v) => Cow::Owned(v.iter().flat_map(|&b| (b as u32).to_le_bytes()).collect()),
    }
}

fn decode(dtype: DType, raw: &[u8], n: usize) -> Result<HostData> {
    let need = gpu_size(dtype) as usize * n;
    if raw.len() < need {
        return Err(Error::Backend { op: "to_vec", msg: format!("readback returned {} of {need} bytes", raw.len()) });
    }
    let raw = &raw[..need];
    let words = || raw.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
    // GPUs and the hosts Kiln runs on are little-endian: the mapped bytes are the values, and
    // one memcpy (alignment-safe) moves them.
    Ok(match dtype {
        DType::F32 => HostData::F32(bytemuck::pod_collect_to_vec(raw)),
        DType::I32 => HostData::I32(bytemuck::pod_collect_to_vec(raw)),
        DType::U32 => HostData::U32(bytemuck::pod_collect_to_vec(raw)),
        DType::Bool => HostData::Bool(words().map(|w| u32::from_le_bytes(w) != 0).collect()),
        DType::F16 => HostData::F16(bytemuck::pod_collect_to_vec(raw)),
        DType::F64 => return Err(Error::unsupported_dtype("to_vec", dtype)),
    })
}

impl BackendStorage for GpuStorage {
    type Device = GpuDevice;

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn from_host(device: &GpuDevice, data: &HostData) -> Result<Self> {
        let dtype = data.dtype();
        kernels::storage_type("from_vec", dtype)?;
        check_f16(device, "from_vec", dtype)?;
        let buf = device.upload("from_vec", &encode(data))?;
        Ok(GpuStorage {
            buf: Arc::new(buf),
            dtype,
            len: data.len(),
            ctx: device.clone(),
            known_range: int_range(data),
            handed_out: Default::default(),
        })
    }

    fn full(device: &GpuDevice, numel: usize, value: f64, dtype: DType) -> Result<Self> {
        if let Some(out) =
            chunked::elementwise(device, "full", &[], numel, &|_, n| Self::full(device, n, value, dtype))?
        {
            return Ok(out);
        }
        device.elementwise("full", &ew::fill_spec(dtype), &[], [param_bits(value, dtype), 0], numel)
    }

    /// A random leaf: no upload, no input; fused with its consumers like a fill (a dropout
    /// mask that only a product reads is never stored).
    fn random(device: &GpuDevice, numel: usize, dist: Distribution, key: PhiloxKey, dtype: DType) -> Result<Self> {
        let spec = ew::random_spec(dist, key, dtype)?;
        if let Some(out) = chunked::generate(device, dist.name(), dtype, numel, &|start, n| {
            Self::random(device, n, dist, key.skip(start), dtype)
        })? {
            return Ok(out);
        }
        device.elementwise(dist.name(), &spec, &[], ew::random_params(dist, dtype), numel)
    }

    fn to_host(&self, layout: &Layout) -> Result<HostData> {
        let flat = self.contiguous_for_read(layout)?;
        let src = flat.as_ref().unwrap_or(self);
        let bytes = gpu_size(self.dtype) * layout.numel() as u64;
        let (dtype, n) = (self.dtype, layout.numel());
        self.ctx.read_with("to_vec", src.binding(), bytes, |raw| decode(dtype, raw, n))?
    }

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self> {
        if let Some(out) = chunked::elementwise(&self.ctx, op.name(), &[(self, layout)], layout.numel(), &|p, _| {
            p[0].0.unary(p[0].1, op)
        })? {
            return Ok(out);
        }
        let spec = ew::unary_spec(op, self.dtype, layout.is_contiguous())?;
        let [a, b] = op.params();
        let params = [param_bits(a, self.dtype), param_bits(b, self.dtype)];
        self.ctx.elementwise(op.name(), &spec, &[(self, layout)], params, layout.numel())
    }

    fn binary(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, op: BinaryOp) -> Result<Self> {
        same_device(op.name(), self, rhs)?;
        let piece = |p: &[(&GpuStorage, &Layout)], _: usize| p[0].0.binary(p[0].1, p[1].0, p[1].1, op);
        if let Some(out) =
            chunked::elementwise(&self.ctx, op.name(), &[(self, layout), (rhs, rhs_layout)], layout.numel(), &piece)?
        {
            return Ok(out);
        }
        let spec = ew::binary_spec(op, self.dtype, layout.is_contiguous(), rhs_layout.is_contiguous())?;
        self.ctx.elementwise(op.name(), &spec, &[(self, layout), (rhs, rhs_layout)], [0, 0], layout.numel())
    }

    fn where_cond(&self, layout: &Layout, t: &Self, tl: &Layout, f: &Self, fl: &Layout) -> Result<Self> {
        same_device("where", self, t)?;
        same_device("where", self, f)?;
        let piece = |p: &[(&GpuStorage, &Layout)], _: usize| p[0].0.where_cond(p[0].1, p[1].0, p[1].1, p[2].0, p[2].1);
        if let Some(out) =
            chunked::elementwise(&self.ctx, "where", &[(self, layout), (t, tl), (f, fl)], layout.numel(), &piece)?
        {
            return Ok(out);
        }
        let flags = ew::layout_flags(&[layout, tl, fl]);
        let spec = ew::where_spec(t.dtype, [flags[0], flags[1], flags[2]]);
        self.ctx.elementwise("where", &spec, &[(self, layout), (t, tl), (f, fl)], [0, 0], layout.numel())
    }

    fn ternary(&self, layout: &Layout, b: &Self, bl: &Layout, c: &Self, cl: &Layout, op: TernaryOp) -> Result<Self> {
        same_device(op.name(), self, b)?;
        same_device(op.name(), self, c)?;
        let piece = |p: &[(&GpuStorage, &Layout)], _: usize| p[0].0.ternary(p[0].1, p[1].0, p[1].1, p[2].0, p[2].1, op);
        let inputs = [(self, layout), (b, bl), (c, cl)];
        if let Some(out) = chunked::elementwise(&self.ctx, op.name(), &inputs, layout.numel(), &piece)? {
            return Ok(out);
        }
        let flags = ew::layout_flags(&[layout, bl, cl]);
        let spec = ew::ternary_spec(op, self.dtype, [flags[0], flags[1], flags[2]])?;
        let [p0, p1] = op.params();
        let params = [param_bits(p0, self.dtype), param_bits(p1, self.dtype)];
        self.ctx.elementwise(op.name(), &spec, &inputs, params, layout.numel())
    }

    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        if let Some(out) = chunked::elementwise(&self.ctx, "cast", &[(self, layout)], layout.numel(), &|p, _| {
            p[0].0.cast(p[0].1, dtype)
        })? {
            return Ok(out);
        }
        let spec = ew::cast_spec(self.dtype, dtype, layout.is_contiguous());
        self.ctx.elementwise("cast", &spec, &[(self, layout)], [0, 0], layout.numel())
    }

    fn copy_into(&self, layout: &Layout, dst: &mut Self, dst_layout: &Layout) -> Result<()> {
        dst.known_range = None;
        same_device("copy_into", self, dst)?;
        let spec = ew::copy_into_spec(self.dtype, layout.is_contiguous());
        let ctx = self.ctx.clone();
        ctx.elementwise_into("copy_into", &spec, &[(self, layout)], [0, 0], layout.numel(), dst, Some(dst_layout))
    }

    fn reduce(&self, layout: &Layout, op: ReduceOp, reduced_dims: usize) -> Result<Self> {
        if let Some(out) =
            chunked::reduce(self, layout, op, reduced_dims, &|s, l, r| kernels::reduce::reduce(s, l, op, r))?
        {
            return Ok(out);
        }
        kernels::reduce::reduce(self, layout, op, reduced_dims)
    }

    fn softmax_last(&self, layout: &Layout, log: bool) -> Result<Self> {
        kernels::reduce::softmax_last(self, layout, log)
    }

    fn cumsum(&self, layout: &Layout, dim: usize) -> Result<Self> {
        kernels::reduce::cumsum(self, layout, dim)
    }

    fn matmul(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout) -> Result<Self> {
        same_device("matmul", self, rhs)?;
        if let Some(out) = chunked::matmul(self, layout, rhs, rhs_layout, &kernels::matmul::matmul)? {
            return Ok(out);
        }
        kernels::matmul::matmul(self, layout, rhs, rhs_layout)
    }

    fn index_select_impl(&self, layout: &Layout, ids: &Self, il: &Layout, dim: usize) -> Result<Self> {
        same_device("index_select", self, ids)?;
        kernels::index::index_select(self, layout, ids, il, dim)
    }

    fn gather_impl(&self, layout: &Layout, ids: &Self, il: &Layout, dim: usize) -> Result<Self> {
        same_device("gather", self, ids)?;
        kernels::index::gather(self, layout, ids, il, dim)
    }

    fn scatter_add_impl(
        &self,
        layout: &Layout,
        ids: &Self,
        il: &Layout,
        src: &Self,
        sl: &Layout,
        dim: usize,
    ) -> Result<Self> {
        same_device("scatter_add", self, ids)?;
        same_device("scatter_add", self, src)?;
        kernels::index::scatter_add(self, layout, ids, il, src, sl, dim)
    }

    fn scatter_reduce_impl(
        &self,
        layout: &Layout,
        ids: &Self,
        il: &Layout,
        src: &Self,
        sl: &Layout,
        dim: usize,
        op: ScatterOp,
        include_self: bool,
    ) -> Result<Self> {
        same_device("scatter_reduce", self, ids)?;
        same_device("scatter_reduce", self, src)?;
        kernels::index::scatter_reduce(self, layout, ids, il, src, sl, dim, op, include_self)
    }

    fn im2col(&self, layout: &Layout, g: &ConvGeometry, pad_value: f64) -> Result<Self> {
        kernels::conv::im2col(self, layout, g, pad_value)
    }

    fn col2im(&self, layout: &Layout, g: &ConvGeometry) -> Result<Self> {
        kernels::conv::col2im(self, layout, g)
    }

    fn max_pool(&self, layout: &Layout, g: &ConvGeometry) -> Result<(Self, Self)> {
        kernels::conv::max_pool(self, layout, g)
    }

    fn max_pool_backward(&self, layout: &Layout, taps: &Self, taps_layout: &Layout, g: &ConvGeometry) -> Result<Self> {
        same_device("max_pool_backward", self, taps)?;
        kernels::conv::max_pool_backward(self, layout, taps, taps_layout, g)
    }

    fn topk(&self, layout: &Layout, k: usize, largest: bool) -> Result<(Self, Self)> {
        kernels::index::topk(self, layout, k, largest)
    }

    fn norm_forward(&self, weight: Option<&Self>, bias: Option<&Self>, p: &NormParams) -> Result<(Self, Self)> {
        for t in weight.iter().chain(bias.iter()) {
            same_device("norm", self, t)?;
        }
        kernels::norm::forward(self, weight, bias, p)
    }

    fn norm_backward(
        &self,
        dy: &Self,
        stats: &Self,
        weight: Option<&Self>,
        p: &NormParams,
    ) -> Result<(Self, Self, Self)> {
        for t in [dy, stats].into_iter().chain(weight) {
            same_device("norm_backward", self, t)?;
        }
        kernels::norm::backward(self, dy, stats, weight, p)
    }

    fn cross_entropy_forward_impl(&self, targets: &Self, p: &CrossEntropyParams) -> Result<(Self, Self)> {
        same_device("cross_entropy", self, targets)?;
        kernels::cross_entropy::forward(self, targets, p)
    }

    fn cross_entropy_backward_impl(
        &self,
        targets: &Self,
        lse: &Self,
        grad: &Self,
        p: &CrossEntropyParams,
    ) -> Result<Self> {
        for t in [targets, lse, grad] {
            same_device("cross_entropy_backward", self, t)?;
        }
        kernels::cross_entropy::backward(self, targets, lse, grad, p)
    }

    fn attention_forward(
        &self,
        k: &Self,
        v: &Self,
        key_mask: Option<&Self>,
        bias: Option<&Self>,
        p: &AttentionParams,
    ) -> Result<(Self, Self)> {
        for t in [k, v].into_iter().chain(key_mask).chain(bias) {
            same_device("scaled_dot_product_attention", self, t)?;
        }
        kernels::attention::forward(self, k, v, key_mask, bias, p)
    }

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
    ) -> Result<(Self, Self, Self)> {
        for t in [k, v, o, lse, dout].into_iter().chain(key_mask).chain(bias) {
            same_device("scaled_dot_product_attention_backward", self, t)?;
        }
        kernels::attention::backward(self, k, v, key_mask, bias, o, lse, dout, p)
    }

    fn scale_in_place(parts: &mut [(&mut Self, usize)], factor: &Self) -> Result<()> {
        for (s, _) in parts.iter_mut() {
            s.known_range = None;
        }
        kernels::scale_each::scale_in_place(parts, factor)
    }

    fn sum_squares(parts: &[(&Self, usize)], dtype: DType) -> Result<Self> {
        kernels::sum_squares::sum_squares(parts, dtype)
    }

    fn adam_step(&mut self, grad: &Self, m: &mut Self, v: &mut Self, p: &AdamParams) -> Result<()> {
        self.known_range = None;
        for t in [grad, &*m, &*v] {
            same_device("adam_step", self, t)?;
        }
        kernels::optim::adam_step(self, grad, m, v, p)
    }

    fn unscale_check(&mut self, inv_scale: f64, found_inf: &mut Self) -> Result<()> {
        same_device("unscale_check", self, found_inf)?;
        // The flag is written by the kernel: a range known from its upload no longer holds.
        found_inf.known_range = None;
        kernels::optim::unscale_check(self, inv_scale, found_inf)
    }

    fn unscale_check_by(&mut self, scale: &Self, found_inf: &mut Self) -> Result<()> {
        same_device("unscale_check", self, found_inf)?;
        same_device("unscale_check", self, scale)?;
        found_inf.known_range = None;
        kernels::optim::unscale_check_by(self, scale, found_inf)
    }

    fn adam_step_gated(
        &mut self,
        grad: &Self,
        m: &mut Self,
        v: &mut Self,
        steps: &mut Self,
        found_inf: &Self,
        p: &AdamParams,
    ) -> Result<()> {
        self.known_range = None;
        steps.known_range = None;
        for t in [grad, &*m, &*v, &*steps, found_inf] {
            same_device("adam_step", self, t)?;
        }
        kernels::optim::adam_step_gated(self, grad, m, v, steps, found_inf, p)
    }
}

/// Smallest and largest value of integer host data (`None` for other dtypes and no data).
fn int_range(data: &HostData) -> Option<(i64, i64)> {
    fn span(v: impl Iterator<Item = i64>) -> Option<(i64, i64)> {
        v.fold(None, |r, x| Some(r.map_or((x, x), |(lo, hi): (i64, i64)| (lo.min(x), hi.max(x)))))
    }
    match data {
        HostData::U32(v) => span(v.iter().map(|&x| x as i64)),
        HostData::I32(v) => span(v.iter().map(|&x| x as i64)),
        _ => None,
    }
}
