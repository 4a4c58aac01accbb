//! One enum over the backends' storages: each call forwards to the backend that holds the data.

use crate::Device;
use kiln_backend::{AdamParams, AttentionParams, CrossEntropyParams, NormParams};
use kiln_backend::{
    BackendStorage, BinaryOp, ConvGeometry, DType, Distribution, Error, HostData, Layout, PhiloxKey, ReduceOp, Result,
    ScatterOp, TernaryOp, UnaryOp,
};
use kiln_cpu::{CpuDevice, CpuStorage};
use kiln_wgpu::GpuStorage;

pub(crate) enum Storage {
    Cpu(CpuStorage),
    Gpu(GpuStorage),
}

macro_rules! each {
    ($s:expr, $x:ident => $e:expr) => {
        match $s {
            Storage::Cpu($x) => Storage::Cpu($e?),
            Storage::Gpu($x) => Storage::Gpu($e?),
        }
    };
}

macro_rules! pair {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $e:expr) => {
        match ($a, $b) {
            (Storage::Cpu($x), Storage::Cpu($y)) => Storage::Cpu($e?),
            (Storage::Gpu($x), Storage::Gpu($y)) => Storage::Gpu($e?),
            (a, b) => return Err(mismatch($op, a, b)),
        }
    };
}

fn mismatch(op: &'static str, a: &Storage, b: &Storage) -> Error {
    Error::DeviceMismatch { op, lhs: a.kind().into(), rhs: b.kind().into() }
}

impl Storage {
    fn kind(&self) -> &'static str {
        match self {
            Storage::Cpu(_) => "cpu",
            Storage::Gpu(_) => "gpu",
        }
    }

    pub(crate) fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Gpu(s) => s.dtype(),
        }
    }

    pub(crate) fn from_host(device: &Device, data: &HostData) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::from_host(&CpuDevice, data)?),
            Device::Gpu(g) => Storage::Gpu(GpuStorage::from_host(g, data)?),
        })
    }

    pub(crate) fn full(device: &Device, numel: usize, value: f64, dtype: DType) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::full(&CpuDevice, numel, value, dtype)?),
            Device::Gpu(g) => Storage::Gpu(GpuStorage::full(g, numel, value, dtype)?),
        })
    }

    pub(crate) fn random(
        device: &Device,
        numel: usize,
        dist: Distribution,
        key: PhiloxKey,
        dtype: DType,
    ) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::random(&CpuDevice, numel, dist, key, dtype)?),
            Device::Gpu(g) => Storage::Gpu(GpuStorage::random(g, numel, dist, key, dtype)?),
        })
    }

    pub(crate) fn to_host(&self, l: &Layout) -> Result<HostData> {
        match self {
            Storage::Cpu(s) => s.to_host(l),
            Storage::Gpu(s) => s.to_host(l),
        }
    }

    pub(crate) async fn to_host_async(&self, l: &Layout) -> Result<HostData> {
        match self {
            Storage::Cpu(s) => s.to_host(l),
            Storage::Gpu(s) => s.to_host_async(l).await,
        }
    }

    pub(crate) fn unary(&self, l: &Layout, op: UnaryOp) -> Result<Storage> {
        Ok(each!(self, s => s.unary(l, op)))
    }

    pub(crate) fn binary(&self, l: &Layout, rhs: &Storage, rl: &Layout, op: BinaryOp) -> Result<Storage> {
        Ok(pair!(op.name(), self, rhs, (a, b) => a.binary(l, b, rl, op)))
    }

    pub(crate) fn where_cond(&self, l: &Layout, t: &Storage, tl: &Layout, f: &Storage, fl: &Layout) -> Result<Storage> {
        Ok(match (self, t, f) {
            (Storage::Cpu(c), Storage::Cpu(t), Storage::Cpu(f)) => Storage::Cpu(c.where_cond(l, t, tl, f, fl)?),
            (Storage::Gpu(c), Storage::Gpu(t), Storage::Gpu(f)) => Storage::Gpu(c.where_cond(l, t, tl, f, fl)?),
            (c, t, f) => return Err(mismatch("where", c, if c.kind() == t.kind() { f } else { t })),
        })
    }

    pub(crate) fn ternary(
        &self,
        l: &Layout,
        b: &Storage,
        bl: &Layout,
        c: &Storage,
        cl: &Layout,
        op: TernaryOp,
    ) -> Result<Storage> {
        Ok(match (self, b, c) {
            (Storage::Cpu(a), Storage::Cpu(b), Storage::Cpu(c)) => Storage::Cpu(a.ternary(l, b, bl, c, cl, op)?),
            (Storage::Gpu(a), Storage::Gpu(b), Storage::Gpu(c)) => Storage::Gpu(a.ternary(l, b, bl, c, cl, op)?),
            (a, b, c) => return Err(mismatch(op.name(), a, if a.kind() == b.kind() { c } else { b })),
        })
    }

    pub(crate) fn cast(&self, l: &Layout, dtype: DType) -> Result<Storage> {
        Ok(each!(self, s => s.cast(l, dtype)))
    }

    pub(crate) fn copy_into(&self, l: &Layout, dst: &mut Storage, dl: &Layout) -> Result<()> {
        match (self, dst) {
            (Storage::Cpu(s), Storage::Cpu(d)) => s.copy_into(l, d, dl),
            (Storage::Gpu(s), Storage::Gpu(d)) => s.copy_into(l, d, dl),
            (s, d) => Err(mismatch("copy_into", s, d)),
        }
    }

    pub(crate) fn reduce(&self, l: &Layout, op: ReduceOp, dims: usize) -> Result<Storage> {
        Ok(each!(self, s => s.reduce(l, op, dims)))
    }

    pub(crate) fn softmax_last(&self, l: &Layout, log: bool) -> Result<Storage> {
        Ok(each!(self, s => s.softmax_last(l, log)))
    }

    pub(crate) fn cumsum(&self, l: &Layout, dim: usize) -> Result<Storage> {
        Ok(each!(self, s => s.cumsum(l, dim)))
    }

    pub(crate) fn matmul(&self, l: &Layout, rhs: &Storage, rl: &Layout) -> Result<Storage> {
        Ok(pair!("matmul", self, rhs, (a, b) => a.matmul(l, b, rl)))
    }

    pub(crate) fn index_select(&self, l: &Layout, ids: &Storage, il: &Layout, dim: usize) -> Result<Storage> {
        Ok(pair!("index_select", self, ids, (a, b) => a.index_select(l, b, il, dim)))
    }

    pub(crate) fn gather(&self, l: &Layout, ids: &Storage, il: &Layout, dim: usize) -> Result<Storage> {
        Ok(pair!("gather", self, ids, (a, b) => a.gather(l, b, il, dim)))
    }

    pub(crate) fn scatter_add(
        &self,
        l: &Layout,
        ids: &Storage,
        il: &Layout,
        src: &Storage,
        sl: &Layout,
        dim: usize,
    ) -> Result<Storage> {
        Ok(match (self, ids, src) {
            (Storage::Cpu(a), Storage::Cpu(i), Storage::Cpu(s)) => Storage::Cpu(a.scatter_add(l, i, il, s, sl, dim)?),
            (Storage::Gpu(a), Storage::Gpu(i), Storage::Gpu(s)) => Storage::Gpu(a.scatter_add(l, i, il, s, sl, dim)?),
            (a, i, s) => return Err(mismatch("scatter_add", a, if a.kind() == i.kind() { s } else { i })),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn scatter_reduce(
        &self,
        l: &Layout,
        ids: &Storage,
        il: &Layout,
        src: &Storage,
        sl: &Layout,
        dim: usize,
        op: ScatterOp,
        include_self: bool,
    ) -> Result<Storage> {
        Ok(match (self, ids, src) {
            (Storage::Cpu(a), Storage::Cpu(i), Storage::Cpu(s)) => {
                Storage::Cpu(a.scatter_reduce(l, i, il, s, sl, dim, op, include_self)?)
            }
            (Storage::Gpu(a), Storage::Gpu(i), Storage::Gpu(s)) => {
                Storage::Gpu(a.scatter_reduce(l, i, il, s, sl, dim, op, include_self)?)
            }
            (a, i, s) => return Err(mismatch("scatter_reduce", a, if a.kind() == i.kind() { s } else { i })),
        })
    }

    pub(crate) fn im2col(&self, l: &Layout, g: &ConvGeometry, pad: f64) -> Result<Storage> {
        Ok(each!(self, s => s.im2col(l, g, pad)))
    }

    pub(crate) fn col2im(&self, l: &Layout, g: &ConvGeometry) -> Result<Storage> {
        Ok(each!(self, s => s.col2im(l, g)))
    }

    pub(crate) fn max_pool(&self, l: &Layout, g: &ConvGeometry) -> Result<(Storage, Storage)> {
        Ok(match self {
            Storage::Cpu(s) => {
                let (v, t) = s.max_pool(l, g)?;
                (Storage::Cpu(v), Storage::Cpu(t))
            }
            Storage::Gpu(s) => {
                let (v, t) = s.max_pool(l, g)?;
                (Storage::Gpu(v), Storage::Gpu(t))
            }
        })
    }

    pub(crate) fn max_pool_backward(
        &self,
        l: &Layout,
        taps: &Storage,
        tl: &Layout,
        g: &ConvGeometry,
    ) -> Result<Storage> {
        Ok(match (self, taps) {
            (Storage::Cpu(a), Storage::Cpu(t)) => Storage::Cpu(a.max_pool_backward(l, t, tl, g)?),
            (Storage::Gpu(a), Storage::Gpu(t)) => Storage::Gpu(a.max_pool_backward(l, t, tl, g)?),
            (a, t) => return Err(mismatch("max_pool_backward", a, t)),
        })
    }

    pub(crate) fn topk(&self, l: &Layout, k: usize, largest: bool) -> Result<(Storage, Storage)> {
        Ok(match self {
            Storage::Cpu(s) => {
                let (v, i) = s.topk(l, k, largest)?;
                (Storage::Cpu(v), Storage::Cpu(i))
            }
            Storage::Gpu(s) => {
                let (v, i) = s.topk(l, k, largest)?;
                (Storage::Gpu(v), Storage::Gpu(i))
            }
        })
    }

    pub(crate) fn norm_forward(
        &self,
        w: Option<&Storage>,
        b: Option<&Storage>,
        p: &NormParams,
    ) -> Result<(Storage, Storage)> {
        match self {
            Storage::Cpu(x) => {
                let (y, s) = x.norm_forward(cpu_opt("norm", w)?, cpu_opt("norm", b)?, p)?;
                Ok((Storage::Cpu(y), Storage::Cpu(s)))
            }
            Storage::Gpu(x) => {
                let (y, s) = x.norm_forward(gpu_opt("norm", w)?, gpu_opt("norm", b)?, p)?;
                Ok((Storage::Gpu(y), Storage::Gpu(s)))
            }
        }
    }

    pub(crate) fn norm_backward(
        &self,
        dy: &Storage,
        stats: &Storage,
        w: Option<&Storage>,
        p: &NormParams,
    ) -> Result<[Storage; 3]> {
        const OP: &str = "norm_backward";
        match self {
            Storage::Cpu(x) => {
                let (a, b, c) = x.norm_backward(cpu(OP, dy)?, cpu(OP, stats)?, cpu_opt(OP, w)?, p)?;
                Ok([Storage::Cpu(a), Storage::Cpu(b), Storage::Cpu(c)])
            }
            Storage::Gpu(x) => {
                let (a, b, c) = x.norm_backward(gpu(OP, dy)?, gpu(OP, stats)?, gpu_opt(OP, w)?, p)?;
                Ok([Storage::Gpu(a), Storage::Gpu(b), Storage::Gpu(c)])
            }
        }
    }

    pub(crate) fn cross_entropy_forward(&self, ids: &Storage, p: &CrossEntropyParams) -> Result<(Storage, Storage)> {
        const OP: &str = "cross_entropy";
        match self {
            Storage::Cpu(x) => {
                let (l, z) = x.cross_entropy_forward(cpu(OP, ids)?, p)?;
                Ok((Storage::Cpu(l), Storage::Cpu(z)))
            }
            Storage::Gpu(x) => {
                let (l, z) = x.cross_entropy_forward(gpu(OP, ids)?, p)?;
                Ok((Storage::Gpu(l), Storage::Gpu(z)))
            }
        }
    }

    pub(crate) fn cross_entropy_backward(
        &self,
        ids: &Storage,
        lse: &Storage,
        g: &Storage,
        p: &CrossEntropyParams,
    ) -> Result<Storage> {
        const OP: &str = "cross_entropy_backward";
        Ok(match self {
            Storage::Cpu(x) => Storage::Cpu(x.cross_entropy_backward(cpu(OP, ids)?, cpu(OP, lse)?, cpu(OP, g)?, p)?),
            Storage::Gpu(x) => Storage::Gpu(x.cross_entropy_backward(gpu(OP, ids)?, gpu(OP, lse)?, gpu(OP, g)?, p)?),
        })
    }

    pub(crate) fn attention_forward(
        &self,
        k: &Storage,
        v: &Storage,
        mask: Option<&Storage>,
        bias: Option<&Storage>,
        p: &AttentionParams,
    ) -> Result<(Storage, Storage)> {
        const OP: &str = "scaled_dot_product_attention";
        match self {
            Storage::Cpu(q) => {
                let (o, z) =
                    q.attention_forward(cpu(OP, k)?, cpu(OP, v)?, cpu_opt(OP, mask)?, cpu_opt(OP, bias)?, p)?;
                Ok((Storage::Cpu(o), Storage::Cpu(z)))
            }
            Storage::Gpu(q) => {
                let (o, z) =
                    q.attention_forward(gpu(OP, k)?, gpu(OP, v)?, gpu_opt(OP, mask)?, gpu_opt(OP, bias)?, p)?;
                Ok((Storage::Gpu(o), Storage::Gpu(z)))
            }
        }
    }

    /// `[q, k, v, o, lse, dout]` in, `[dq, dk, dv]` out.
    pub(crate) fn attention_backward(
        t: [&Storage; 6],
        mask: Option<&Storage>,
        bias: Option<&Storage>,
        p: &AttentionParams,
    ) -> Result<[Storage; 3]> {
        const OP: &str = "scaled_dot_product_attention_backward";
        match t[0] {
            Storage::Cpu(q) => {
                let c = |i: usize| cpu(OP, t[i]);
                let (a, b, d) =
                    q.attention_backward(c(1)?, c(2)?, cpu_opt(OP, mask)?, cpu_opt(OP, bias)?, c(3)?, c(4)?, c(5)?, p)?;
                Ok([Storage::Cpu(a), Storage::Cpu(b), Storage::Cpu(d)])
            }
            Storage::Gpu(q) => {
                let c = |i: usize| gpu(OP, t[i]);
                let (a, b, d) =
                    q.attention_backward(c(1)?, c(2)?, gpu_opt(OP, mask)?, gpu_opt(OP, bias)?, c(3)?, c(4)?, c(5)?, p)?;
                Ok([Storage::Gpu(a), Storage::Gpu(b), Storage::Gpu(d)])
            }
        }
    }

    pub(crate) fn adam_step(&mut self, g: &Storage, m: &mut Storage, v: &mut Storage, p: &AdamParams) -> Result<()> {
        const OP: &str = "adam_step";
        match (self, m, v) {
            (Storage::Cpu(x), Storage::Cpu(m), Storage::Cpu(v)) => x.adam_step(cpu(OP, g)?, m, v, p),
            (Storage::Gpu(x), Storage::Gpu(m), Storage::Gpu(v)) => x.adam_step(gpu(OP, g)?, m, v, p),
            (x, m, _) => Err(mismatch(OP, x, m)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn adam_step_gated(
        &mut self,
        g: &Storage,
        m: &mut Storage,
        v: &mut Storage,
        steps: &mut Storage,
        found_inf: &Storage,
        p: &AdamParams,
    ) -> Result<()> {
        const OP: &str = "adam_step";
        match (self, m, v, steps) {
            (Storage::Cpu(x), Storage::Cpu(m), Storage::Cpu(v), Storage::Cpu(s)) => {
                x.adam_step_gated(cpu(OP, g)?, m, v, s, cpu(OP, found_inf)?, p)
            }
            (Storage::Gpu(x), Storage::Gpu(m), Storage::Gpu(v), Storage::Gpu(s)) => {
                x.adam_step_gated(gpu(OP, g)?, m, v, s, gpu(OP, found_inf)?, p)
            }
            (x, m, _, _) => Err(mismatch(OP, x, m)),
        }
    }

    pub(crate) fn unscale_check_by(&mut self, scale: &Storage, found_inf: &mut Storage) -> Result<()> {
        const OP: &str = "unscale_check";
        match (self, found_inf) {
            (Storage::Cpu(x), Storage::Cpu(f)) => x.unscale_check_by(cpu(OP, scale)?, f),
            (Storage::Gpu(x), Storage::Gpu(f)) => x.unscale_check_by(gpu(OP, scale)?, f),
            (x, f) => Err(mismatch(OP, x, f)),
        }
    }

    pub(crate) fn unscale_check(&mut self, inv_scale: f64, found_inf: &mut Storage) -> Result<()> {
        const OP: &str = "unscale_check";
        match (self, found_inf) {
            (Storage::Cpu(x), Storage::Cpu(f)) => x.unscale_check(inv_scale, f),
            (Storage::Gpu(x), Storage::Gpu(f)) => x.unscale_check(inv_scale, f),
            (x, f) => Err(mismatch(OP, x, f)),
        }
    }

    /// `Σ x²` of each part (storage, element count of its dense prefix), all on one backend.
    pub(crate) fn sum_squares(parts: &[(&Storage, usize)], dtype: DType) -> Result<Storage> {
        const OP: &str = "sum_squares";
        let first = parts.first().ok_or_else(|| Error::invalid(OP, "no tensors"))?.0;
        match first {
            Storage::Cpu(_) => {
                let p = parts.iter().map(|&(s, n)| Ok((cpu(OP, s)?, n))).collect::<Result<Vec<_>>>()?;
                Ok(Storage::Cpu(CpuStorage::sum_squares(&p, dtype)?))
            }
            Storage::Gpu(_) => {
                let p = parts.iter().map(|&(s, n)| Ok((gpu(OP, s)?, n))).collect::<Result<Vec<_>>>()?;
                Ok(Storage::Gpu(GpuStorage::sum_squares(&p, dtype)?))
            }
        }
    }

    /// Each part's first `n` elements times `factor[0]`, in place, all on one backend.
    pub(crate) fn scale_in_place(parts: &mut [(&mut Storage, usize)], factor: &Storage) -> Result<()> {
        const OP: &str = "scale_in_place";
        match factor {
            Storage::Cpu(f) => {
                let mut p = Vec::with_capacity(parts.len());
                for (s, n) in parts.iter_mut() {
                    match &mut **s {
                        Storage::Cpu(c) => p.push((c, *n)),
                        other => return Err(mismatch(OP, other, factor)),
                    }
                }
                CpuStorage::scale_in_place(&mut p, f)
            }
            Storage::Gpu(f) => {
                let mut p = Vec::with_capacity(parts.len());
                for (s, n) in parts.iter_mut() {
                    match &mut **s {
                        Storage::Gpu(g) => p.push((g, *n)),
                        other => return Err(mismatch(OP, other, factor)),
                    }
                }
                GpuStorage::scale_in_place(&mut p, f)
            }
        }
    }

    /// Elements the storage holds (a view may use fewer).
    pub(crate) fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            Storage::Gpu(s) => s.len(),
        }
    }

    /// The wgpu buffer behind GPU storage.
    pub(crate) fn gpu(&self) -> Option<&GpuStorage> {
        match self {
            Storage::Gpu(g) => Some(g),
            Storage::Cpu(_) => None,
        }
    }
}

fn cpu<'a>(op: &'static str, s: &'a Storage) -> Result<&'a CpuStorage> {
    match s {
        Storage::Cpu(c) => Ok(c),
        Storage::Gpu(_) => Err(Error::DeviceMismatch { op, lhs: "cpu".into(), rhs: "gpu".into() }),
    }
}

fn gpu<'a>(op: &'static str, s: &'a Storage) -> Result<&'a GpuStorage> {
    match s {
        Storage::Gpu(g) => Ok(g),
        Storage::Cpu(_) => Err(Error::DeviceMismatch { op, lhs: "gpu".into(), rhs: "cpu".into() }),
    }
}

fn cpu_opt<'a>(op: &'static str, s: Option<&'a Storage>) -> Result<Option<&'a CpuStorage>> {
    s.map(|s| cpu(op, s)).transpose()
}

fn gpu_opt<'a>(op: &'static str, s: Option<&'a Storage>) -> Result<Option<&'a GpuStorage>> {
    s.map(|s| gpu(op, s)).transpose()
}
