//! One enum over the backends' storages: each call forwards to the backend that holds the data.

use crate::Device;
use kiln_backend::{BackendStorage, BinaryOp, ConvGeometry, DType, Error, HostData, Layout, ReduceOp, Result, UnaryOp};
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

    pub(crate) fn scatter_add(&self, l: &Layout, ids: &Storage, il: &Layout, src: &Storage, sl: &Layout, dim: usize) -> Result<Storage> {
        Ok(match (self, ids, src) {
            (Storage::Cpu(a), Storage::Cpu(i), Storage::Cpu(s)) => Storage::Cpu(a.scatter_add(l, i, il, s, sl, dim)?),
            (Storage::Gpu(a), Storage::Gpu(i), Storage::Gpu(s)) => Storage::Gpu(a.scatter_add(l, i, il, s, sl, dim)?),
            (a, i, s) => return Err(mismatch("scatter_add", a, if a.kind() == i.kind() { s } else { i })),
        })
    }

    pub(crate) fn im2col(&self, l: &Layout, g: &ConvGeometry, pad: f64) -> Result<Storage> {
        Ok(each!(self, s => s.im2col(l, g, pad)))
    }

    pub(crate) fn col2im(&self, l: &Layout, g: &ConvGeometry) -> Result<Storage> {
        Ok(each!(self, s => s.col2im(l, g)))
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

    /// The wgpu buffer behind GPU storage.
    pub(crate) fn gpu(&self) -> Option<&GpuStorage> {
        match self {
            Storage::Gpu(g) => Some(g),
            Storage::Cpu(_) => None,
        }
    }
}
