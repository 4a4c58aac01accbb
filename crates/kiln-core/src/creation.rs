//! Tensor constructors.

use crate::storage::Storage;
use crate::{Device, Element, Tensor, rng};
use kiln_backend::{DType, Error, HostData, Result};

/// Creation ops that build their values on the host refuse counts no machine could hold, rather
/// than letting the allocator abort.
const MAX_HOST_ELEMENTS: usize = 1 << 34;

fn host_count(op: &'static str, n: usize) -> Result<usize> {
    if n > MAX_HOST_ELEMENTS {
        return Err(Error::OutOfMemory { op, msg: format!("{n} elements is more than the host can build") });
    }
    Ok(n)
}

fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| Error::OutOfMemory {
        op,
        msg: format!("shape {shape:?} has more elements than fit in memory"),
    })
}

/// `0..n` (or `n-1..=0` when `reversed`) as a u32 tensor, built in a fallible host allocation:
/// `n` past 2^32 cannot be u32 indices, and one too large for the host is `OutOfMemory`.
pub(crate) fn u32_range(op: &'static str, n: usize, reversed: bool, device: &Device) -> Result<Tensor> {
    if n > u32::MAX as usize + 1 {
        return Err(Error::invalid(op, format!("{n} positions do not fit u32 indices")));
    }
    let mut v: Vec<u32> = Vec::new();
    v.try_reserve_exact(host_count(op, n)?)
        .map_err(|_| Error::OutOfMemory { op, msg: format!("{n} u32 indices do not fit in host memory") })?;
    // `as u32` is exact: i < n <= 2^32.
    if reversed {
        v.extend((0..n).rev().map(|i| i as u32));
    } else {
        v.extend((0..n).map(|i| i as u32));
    }
    Tensor::from_vec(v, &[n], device)
}

impl Tensor {
    /// A tensor from host values, checked against `shape`.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::from_vec(vec![1i32, 2, 3, 4, 5, 6], &[2, 3], &Device::cpu()).unwrap();
    /// assert_eq!(t.shape(), &[2, 3]);
    /// assert!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3], &Device::cpu()).is_err());
    /// ```
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::from_host(T::into_host(data), shape, device)
    }

    /// Like [`from_vec`](Self::from_vec) from a slice.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A tensor from host data of any dtype.
    pub fn from_host(data: HostData, shape: &[usize], device: &Device) -> Result<Tensor> {
        let n = checked_numel("from_vec", shape)?;
        if n != data.len() {
            return Err(Error::shape("from_vec", format!("{} values for shape {shape:?} ({n} elements)", data.len())));
        }
        Ok(Tensor::leaf(Storage::from_host(device, &data)?, shape, device))
    }

    /// A 0-d tensor holding `value` as f32.
    pub fn scalar(value: f64, device: &Device) -> Result<Tensor> {
        Tensor::full(&[], value, device)
    }

    /// Every element `value` (f32).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::full(&[2, 2], 7.0, &Device::cpu()).unwrap();
    /// assert_eq!(t.to_vec::<f32>().unwrap(), vec![7.0; 4]);
    /// ```
    pub fn full(shape: &[usize], value: f64, device: &Device) -> Result<Tensor> {
        Tensor::full_dtype(shape, value, DType::F32, device)
    }

    /// Every element `value`, of `dtype`.
    pub fn full_dtype(shape: &[usize], value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        let n = checked_numel("full", shape)?;
        Ok(Tensor::leaf(Storage::full(device, n, value, dtype)?, shape, device))
    }

    /// Zeros (f32).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// assert_eq!(Tensor::zeros(&[3], &Device::cpu()).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 3]);
    /// ```
    pub fn zeros(shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 0.0, device)
    }

    /// Ones (f32).
    pub fn ones(shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, device)
    }

    /// Zeros with this tensor's shape, dtype and device.
    pub fn zeros_like(t: &Tensor) -> Result<Tensor> {
        Tensor::full_dtype(t.shape(), 0.0, t.dtype(), t.device())
    }

    /// Ones with this tensor's shape, dtype and device.
    pub fn ones_like(t: &Tensor) -> Result<Tensor> {
        Tensor::full_dtype(t.shape(), 1.0, t.dtype(), t.device())
    }

    /// `start, start + step, ...` below `end` (f32), like `torch.arange`.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::arange(0.0, 5.0, 2.0, &Device::cpu()).unwrap();
    /// assert_eq!(t.to_vec::<f32>().unwrap(), vec![0.0, 2.0, 4.0]);
    /// ```
    pub fn arange(start: f64, end: f64, step: f64, device: &Device) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid("arange", format!("start {start}, end {end}, step {step}")));
        }
        let count = ((end - start) / step).ceil().max(0.0);
        if count > MAX_HOST_ELEMENTS as f64 {
            return Err(Error::OutOfMemory { op: "arange", msg: format!("{count} elements (start {start}, end {end}, step {step})") });
        }
        let n = count as usize;
        let v: Vec<f32> = (0..n).map(|i| (start + i as f64 * step) as f32).collect();
        Tensor::from_vec(v, &[n], device)
    }

    /// `n` integers `0..n` as u32 (indices).
    pub fn arange_u32(n: usize, device: &Device) -> Result<Tensor> {
        u32_range("arange_u32", n, false, device)
    }

    /// `steps` evenly spaced values from `start` to `end` inclusive (f32).
    pub fn linspace(start: f64, end: f64, steps: usize, device: &Device) -> Result<Tensor> {
        host_count("linspace", steps)?;
        let v: Vec<f32> = match steps {
            0 => vec![],
            1 => vec![start as f32],
            _ => (0..steps).map(|i| (start + (end - start) * i as f64 / (steps - 1) as f64) as f32).collect(),
        };
        Tensor::from_vec(v, &[steps], device)
    }

    /// The `n × n` identity (f32).
    pub fn eye(n: usize, device: &Device) -> Result<Tensor> {
        let mut v = vec![0f32; host_count("eye", checked_numel("eye", &[n, n])?)?];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        Tensor::from_vec(v, &[n, n], device)
    }

    /// Uniform in [0, 1) from Kiln's seeded generator (see [`crate::manual_seed`]): the same
    /// numbers on every device.
    pub fn rand(shape: &[usize], device: &Device) -> Result<Tensor> {
        let n = host_count("rand", checked_numel("rand", shape)?)?;
        Tensor::from_host(HostData::from_f64(&rng::uniform(n), DType::F32), shape, device)
    }

    /// Standard normal from Kiln's seeded generator.
    pub fn randn(shape: &[usize], device: &Device) -> Result<Tensor> {
        let n = host_count("randn", checked_numel("randn", shape)?)?;
        Tensor::from_host(HostData::from_f64(&rng::normal(n), DType::F32), shape, device)
    }

    /// Uniform in [lo, hi).
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, device: &Device) -> Result<Tensor> {
        let n = host_count("rand_uniform", checked_numel("rand_uniform", shape)?)?;
        let v: Vec<f64> = rng::uniform(n).into_iter().map(|u| lo + (hi - lo) * u).collect();
        Tensor::from_host(HostData::from_f64(&v, DType::F32), shape, device)
    }
}
