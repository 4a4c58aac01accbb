//! Tensor constructors.

use crate::storage::Storage;
use crate::{Device, Element, Tensor, rng};
use kiln_backend::{DType, Distribution, Error, HostData, Result};

/// Creation ops that build their values on the host refuse counts no machine could hold, rather
/// than letting the allocator abort (on 32-bit targets such as wasm32, no count passes it).
const MAX_HOST_ELEMENTS: u64 = 1 << 34;

fn host_count(op: &'static str, n: usize) -> Result<usize> {
    if n as u64 > MAX_HOST_ELEMENTS {
        return Err(Error::OutOfMemory { op, msg: format!("{n} elements is more than the host can build") });
    }
    Ok(n)
}

fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::OutOfMemory { op, msg: format!("shape {shape:?} has more elements than fit in memory") })
}

/// `0..n` (or `n-1..=0` when `reversed`) as a u32 tensor, built in a fallible host allocation:
/// `n` past 2^32 cannot be u32 indices, and one too large for the host is `OutOfMemory`.
pub(crate) fn u32_range(op: &'static str, n: usize, reversed: bool, device: &Device) -> Result<Tensor> {
    if n as u64 > u32::MAX as u64 + 1 {
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
            return Err(Error::OutOfMemory {
                op: "arange",
                msg: format!("{count} elements (start {start}, end {end}, step {step})"),
            });
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

    /// Uniform in [0, 1) (f32) from Kiln's generator (see [`crate::manual_seed`]): generated on
    /// `device` from the Philox stream (`(w >> 8)·2^-24` of each 32-bit word), so the same seed
    /// gives the same numbers, bit for bit, on every device.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// kiln_core::manual_seed(3);
    /// let a = Tensor::rand(&[5], &Device::cpu()).unwrap().to_vec::<f32>().unwrap();
    /// kiln_core::manual_seed(3);
    /// assert_eq!(a, Tensor::rand(&[5], &Device::cpu()).unwrap().to_vec::<f32>().unwrap());
    /// assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
    /// ```
    pub fn rand(shape: &[usize], device: &Device) -> Result<Tensor> {
        random(shape, Distribution::Uniform, DType::F32, device)
    }

    /// Standard normal (f32) from Kiln's generator, by Box–Muller on the device. Equal across
    /// devices to a few f32 ulps (each device's own log and sin/cos; see `kiln_backend::philox`).
    pub fn randn(shape: &[usize], device: &Device) -> Result<Tensor> {
        random(shape, Distribution::Normal, DType::F32, device)
    }

    /// Uniform in [lo, hi) (f32): `rand · (hi − lo) + lo`, each step rounded in f32 (for extreme
    /// ranges the rounding can reach `hi`).
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, device: &Device) -> Result<Tensor> {
        Tensor::rand(shape, device)?.mul_scalar(hi - lo)?.add_scalar(lo)
    }

    /// 1 with probability `p`, else 0 (f32): a Bernoulli mask, drawn where the tensor lives
    /// (`uniform < p`, compared in f32).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let m = Tensor::bernoulli(&[1000], 0.25, &Device::cpu()).unwrap().to_vec::<f32>().unwrap();
    /// assert!(m.iter().all(|&v| v == 0.0 || v == 1.0));
    /// assert!(Tensor::bernoulli(&[3], 1.5, &Device::cpu()).is_err());
    /// ```
    pub fn bernoulli(shape: &[usize], p: f64, device: &Device) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid("bernoulli", format!("p = {p} is not a probability")));
        }
        random(shape, Distribution::Bernoulli { keep: p, value: 1.0 }, DType::F32, device)
    }

    /// The generator's raw 32-bit words (u32), as Philox 4x32-10 makes them.
    pub fn random_bits(shape: &[usize], device: &Device) -> Result<Tensor> {
        random(shape, Distribution::Bits, DType::U32, device)
    }

    /// Uniform in [0, 1) with `t`'s shape, float dtype and device (f16 takes the top 11 bits of
    /// each word, `(w >> 21)·2^-11`, so that it stays below 1).
    pub fn rand_like(t: &Tensor) -> Result<Tensor> {
        random(t.shape(), Distribution::Uniform, float_dtype("rand_like", t)?, t.device())
    }

    /// Standard normal with `t`'s shape, float dtype and device.
    pub fn randn_like(t: &Tensor) -> Result<Tensor> {
        random(t.shape(), Distribution::Normal, float_dtype("randn_like", t)?, t.device())
    }
}

fn float_dtype(op: &'static str, t: &Tensor) -> Result<DType> {
    if t.dtype().is_float() {
        Ok(t.dtype())
    } else {
        Err(Error::UnsupportedDType { op, dtype: t.dtype(), why: " (random values are floats)".into() })
    }
}

/// A tensor of `shape` drawn from `dist` at the generator's next blocks, computed on `device`.
fn random(shape: &[usize], dist: Distribution, dtype: DType, device: &Device) -> Result<Tensor> {
    let op = dist.name();
    let n = checked_numel(op, shape)?;
    if matches!(device, Device::Cpu) {
        host_count(op, n)?;
    }
    let key = rng::reserve(n);
    Ok(Tensor::leaf(Storage::random(device, n, dist, key, dtype)?, shape, device))
}
