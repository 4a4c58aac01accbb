use crate::DType;
use half::f16;

/// Elements on the host, one variant per dtype. The unit of transfer between backends and the
/// user (`Tensor::from_vec`, `to_vec`).
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    Bool(Vec<bool>),
}

impl HostData {
    pub fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::F16(_) => DType::F16,
            HostData::F64(_) => DType::F64,
            HostData::I32(_) => DType::I32,
            HostData::U32(_) => DType::U32,
            HostData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::F16(v) => v.len(),
            HostData::F64(v) => v.len(),
            HostData::I32(v) => v.len(),
            HostData::U32(v) => v.len(),
            HostData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element as f64 (bool as 0/1): the common currency of tests and the CPU oracle.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            HostData::F64(v) => v.clone(),
            HostData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::U32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }

    /// Builds host data of `dtype` from f64 values, rounding/saturating as a cast would.
    pub fn from_f64(values: &[f64], dtype: DType) -> HostData {
        match dtype {
            DType::F32 => HostData::F32(values.iter().map(|&x| x as f32).collect()),
            DType::F16 => HostData::F16(values.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::F64 => HostData::F64(values.to_vec()),
            DType::I32 => HostData::I32(values.iter().map(|&x| x as i32).collect()),
            DType::U32 => HostData::U32(values.iter().map(|&x| x as u32).collect()),
            DType::Bool => HostData::Bool(values.iter().map(|&x| x != 0.0).collect()),
        }
    }
}

macro_rules! host_from {
    ($t:ty, $v:ident) => {
        impl From<Vec<$t>> for HostData {
            fn from(v: Vec<$t>) -> Self {
                HostData::$v(v)
            }
        }
    };
}
host_from!(f32, F32);
host_from!(f16, F16);
host_from!(f64, F64);
host_from!(i32, I32);
host_from!(u32, U32);
host_from!(bool, Bool);
