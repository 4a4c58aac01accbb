//! `CpuStorage`: a tensor's elements in host memory, and the `BackendStorage` implementation
//! that routes each op to its kernel module.

use kiln_backend::{AdamParams, AttentionParams, CrossEntropyParams, NormParams};
use kiln_backend::{
    BackendStorage, BinaryOp, ConvGeometry, DType, Distribution, HostData, Layout, PhiloxKey, ReduceOp, Result,
    ScatterOp, TernaryOp, UnaryOp,
};

use crate::elem::Elem;
use crate::kernel::alloc;
use crate::strided::read;
use crate::{binary, cast, conv, index, matmul, reduce, ternary, topk, unary};

/// The CPU "device": there is one, and it holds no state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuDevice;

/// Elements in host memory, one `Vec` of the tensor's dtype. Layouts (offset, strides) live in
/// the core; storage is just the flat buffer they index.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuStorage {
    data: HostData,
}

impl CpuStorage {
    /// Wraps host data without copying.
    pub fn from_host_data(data: HostData) -> Self {
        CpuStorage { data }
    }

    /// The flat buffer, in storage order (not layout order).
    pub fn as_host(&self) -> &HostData {
        &self.data
    }

    /// The flat buffer, for kernels that update it in place.
    pub(crate) fn host_mut(&mut self) -> &mut HostData {
        &mut self.data
    }

    pub fn into_host(self) -> HostData {
        self.data
    }

    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl From<HostData> for CpuStorage {
    fn from(data: HostData) -> Self {
        CpuStorage { data }
    }
}

fn wrap(data: HostData) -> CpuStorage {
    CpuStorage { data }
}

impl BackendStorage for CpuStorage {
    type Device = CpuDevice;

    fn dtype(&self) -> DType {
        self.data.dtype()
    }

    fn from_host(_device: &CpuDevice, data: &HostData) -> Result<Self> {
        crate::pool::join_main_thread();
        Ok(wrap(data.clone()))
    }

    /// `value` is cast as `cast` would (truncating and saturating for integers, `!= 0` for bool).
    fn full(_device: &CpuDevice, numel: usize, value: f64, dtype: DType) -> Result<Self> {
        const OP: &str = "full";
        crate::pool::join_main_thread();
        Ok(wrap(match dtype {
            DType::F32 => HostData::F32(alloc(OP, numel, f32::from_f64(value))?),
            DType::F16 => HostData::F16(alloc(OP, numel, half::f16::from_f64(value))?),
            DType::F64 => HostData::F64(alloc(OP, numel, value)?),
            DType::I32 => HostData::I32(alloc(OP, numel, i32::from_f64(value))?),
            DType::U32 => HostData::U32(alloc(OP, numel, u32::from_f64(value))?),
            DType::Bool => HostData::Bool(alloc(OP, numel, bool::from_f64(value))?),
        }))
    }

    fn random(_device: &CpuDevice, numel: usize, dist: Distribution, key: PhiloxKey, dtype: DType) -> Result<Self> {
        crate::pool::join_main_thread();
        crate::random::random(numel, dist, key, dtype).map(wrap)
    }

    fn to_host(&self, layout: &Layout) -> Result<HostData> {
        dispatch!(&self.data, v => Ok(Elem::wrap(read("to_host", v, layout)?.into_owned())))
    }

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self> {
        unary::unary(&self.data, layout, op).map(wrap)
    }

    fn binary(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, op: BinaryOp) -> Result<Self> {
        binary::binary(&self.data, layout, &rhs.data, rhs_layout, op).map(wrap)
    }

    fn where_cond(
        &self,
        layout: &Layout,
        on_true: &Self,
        t_layout: &Layout,
        on_false: &Self,
        f_layout: &Layout,
    ) -> Result<Self> {
        binary::where_cond(&self.data, layout, &on_true.data, t_layout, &on_false.data, f_layout).map(wrap)
    }

    fn ternary(&self, layout: &Layout, b: &Self, bl: &Layout, c: &Self, cl: &Layout, op: TernaryOp) -> Result<Self> {
        ternary::ternary(&self.data, layout, &b.data, bl, &c.data, cl, op).map(wrap)
    }

    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        cast::cast(&self.data, layout, dtype).map(wrap)
    }

    fn copy_into(&self, layout: &Layout, dst: &mut Self, dst_layout: &Layout) -> Result<()> {
        cast::copy_into(&self.data, layout, &mut dst.data, dst_layout)
    }

    fn reduce(&self, layout: &Layout, op: ReduceOp, reduced_dims: usize) -> Result<Self> {
        reduce::reduce(&self.data, layout, op, reduced_dims).map(wrap)
    }

    fn softmax_last(&self, layout: &Layout, log: bool) -> Result<Self> {
        reduce::softmax_last(&self.data, layout, log).map(wrap)
    }

    fn cumsum(&self, layout: &Layout, dim: usize) -> Result<Self> {
        reduce::cumsum(&self.data, layout, dim).map(wrap)
    }

    fn matmul(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout) -> Result<Self> {
        matmul::matmul(&self.data, layout, &rhs.data, rhs_layout).map(wrap)
    }

    fn index_select_impl(&self, layout: &Layout, ids: &Self, ids_layout: &Layout, dim: usize) -> Result<Self> {
        index::index_select(&self.data, layout, &ids.data, ids_layout, dim).map(wrap)
    }

    fn gather_impl(&self, layout: &Layout, ids: &Self, ids_layout: &Layout, dim: usize) -> Result<Self> {
        index::gather(&self.data, layout, &ids.data, ids_layout, dim).map(wrap)
    }

    fn scatter_add_impl(
        &self,
        layout: &Layout,
        ids: &Self,
        ids_layout: &Layout,
        src: &Self,
        src_layout: &Layout,
        dim: usize,
    ) -> Result<Self> {
        index::scatter_add(&self.data, layout, &ids.data, ids_layout, &src.data, src_layout, dim).map(wrap)
    }

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
    ) -> Result<Self> {
        index::scatter_reduce(&self.data, layout, &ids.data, ids_layout, &src.data, src_layout, dim, op, include_self)
            .map(wrap)
    }

    fn im2col(&self, layout: &Layout, geometry: &ConvGeometry, pad_value: f64) -> Result<Self> {
        conv::im2col(&self.data, layout, geometry, pad_value).map(wrap)
    }

    fn col2im(&self, layout: &Layout, geometry: &ConvGeometry) -> Result<Self> {
        conv::col2im(&self.data, layout, geometry).map(wrap)
    }

    fn max_pool(&self, layout: &Layout, geometry: &ConvGeometry) -> Result<(Self, Self)> {
        conv::max_pool(&self.data, layout, geometry).map(|(v, t)| (wrap(v), wrap(t)))
    }

    fn max_pool_backward(
        &self,
        layout: &Layout,
        taps: &Self,
        taps_layout: &Layout,
        geometry: &ConvGeometry,
    ) -> Result<Self> {
        conv::max_pool_backward(&self.data, layout, &taps.data, taps_layout, geometry).map(wrap)
    }

    fn topk(&self, layout: &Layout, k: usize, largest: bool) -> Result<(Self, Self)> {
        topk::topk(&self.data, layout, k, largest).map(|(v, i)| (wrap(v), wrap(i)))
    }

    fn norm_forward(&self, weight: Option<&Self>, bias: Option<&Self>, p: &NormParams) -> Result<(Self, Self)> {
        crate::fused::norm_forward(self, weight, bias, p)
    }

    fn norm_backward(
        &self,
        dy: &Self,
        stats: &Self,
        weight: Option<&Self>,
        p: &NormParams,
    ) -> Result<(Self, Self, Self)> {
        crate::fused::norm_backward(self, dy, stats, weight, p)
    }

    fn cross_entropy_forward_impl(&self, targets: &Self, p: &CrossEntropyParams) -> Result<(Self, Self)> {
        crate::fused::cross_entropy_forward(self, targets, p)
    }

    fn cross_entropy_backward_impl(
        &self,
        targets: &Self,
        lse: &Self,
        grad: &Self,
        p: &CrossEntropyParams,
    ) -> Result<Self> {
        crate::fused::cross_entropy_backward(self, targets, lse, grad, p)
    }

    fn attention_forward(
        &self,
        k: &Self,
        v: &Self,
        key_mask: Option<&Self>,
        bias: Option<&Self>,
        p: &AttentionParams,
    ) -> Result<(Self, Self)> {
        crate::fused::attention_forward(self, k, v, key_mask, bias, p)
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
        crate::fused::attention_backward(self, k, v, key_mask, bias, o, lse, dout, p)
    }

    fn adam_step(&mut self, grad: &Self, m: &mut Self, v: &mut Self, p: &AdamParams) -> Result<()> {
        crate::fused::adam_step(&mut self.data, &grad.data, &mut m.data, &mut v.data, p)
    }

    fn scale_in_place(parts: &mut [(&mut Self, usize)], factor: &Self) -> Result<()> {
        crate::fused::scale_in_place(parts, factor)
    }

    fn sum_squares(parts: &[(&Self, usize)], dtype: DType) -> Result<Self> {
        crate::fused::sum_squares(parts, dtype)
    }

    fn unscale_check(&mut self, inv_scale: f64, found_inf: &mut Self) -> Result<()> {
        crate::fused::unscale_check(&mut self.data, inv_scale, &mut found_inf.data)
    }

    fn unscale_check_by(&mut self, scale: &Self, found_inf: &mut Self) -> Result<()> {
        let inv = crate::fused::inv_scale_of(&scale.data)?;
        crate::fused::unscale_check(&mut self.data, inv, &mut found_inf.data)
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
        crate::fused::adam_step_gated(self, grad, m, v, steps, found_inf, p)
    }
}
