//! Host element types that tensors can be built from and read into.

use kiln_backend::{DType, Error, HostData, Result};

/// A Rust type with a Kiln dtype: f32, f16, f64, i32, u32, bool.
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn into_host(v: Vec<Self>) -> HostData;
    fn from_host(data: HostData, op: &'static str) -> Result<Vec<Self>>;
}

macro_rules! element {
    ($t:ty, $v:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$v;
            fn into_host(v: Vec<Self>) -> HostData {
                HostData::$v(v)
            }
            fn from_host(data: HostData, op: &'static str) -> Result<Vec<Self>> {
                match data {
                    HostData::$v(v) => Ok(v),
                    other => Err(Error::dtype(op, DType::$v, other.dtype())),
                }
            }
        }
    };
}
element!(f32, F32);
element!(half::f16, F16);
element!(f64, F64);
element!(i32, I32);
element!(u32, U32);
element!(bool, Bool);
