//! The element types the CPU backend stores, and the few numeric facts the kernels need about
//! them. Kernels are generic over these traits so each op is written once, not once per dtype.

use half::f16;
use kiln_backend::{DType, HostData};

/// Any storable element.
pub(crate) trait Elem: Copy + Send + Sync + PartialOrd + Default + 'static {
    const DTYPE: DType;

    /// Conversion with `cast` semantics: floats round to nearest, float → int truncates toward
    /// zero and saturates (NaN → 0), anything → bool is `!= 0`.
    fn from_f64(v: f64) -> Self;

    /// Exact for every dtype except f64 → f64 (trivially exact too); bool is 0/1.
    fn to_f64(self) -> f64;

    fn is_nan(self) -> bool {
        false
    }

    fn slice(data: &HostData) -> Option<&[Self]>;

    fn slice_mut(data: &mut HostData) -> Option<&mut [Self]>;

    fn wrap(v: Vec<Self>) -> HostData;
}

/// Numeric elements (everything but bool), with an accumulator type: f64 for floats, so sums and
/// products of f32/f16 do not lose precision; the type itself for ints, with wrapping arithmetic
/// (an overflowing integer sum wraps, as it does in the GPU kernels, instead of panicking).
pub(crate) trait Num: Elem {
    type Acc: Copy + Send + Sync;
    const ACC_ZERO: Self::Acc;
    const ACC_ONE: Self::Acc;
    fn widen(self) -> Self::Acc;
    fn narrow(a: Self::Acc) -> Self;
    fn acc_add(a: Self::Acc, b: Self::Acc) -> Self::Acc;
    fn acc_mul(a: Self::Acc, b: Self::Acc) -> Self::Acc;
    /// The accumulator's value (exact: f64 itself, or a 32-bit integer).
    fn acc_f64(a: Self::Acc) -> f64;
}

/// f32, f16, f64. Float kernels compute in f64 and round once: for +, −, ×, ÷ and sqrt that is
/// bit-identical to native f32/f16 arithmetic (f64 carries more than 2p+2 bits), and for
/// transcendental functions it is at least as accurate.
pub(crate) trait Float: Num<Acc = f64> {}

/// i32 and u32, with the integer semantics of `BinaryOp` (floor division, divisor-signed
/// remainder, zero for division by zero) and wrapping overflow.
pub(crate) trait Int: Num<Acc = Self> + Ord {
    const SIGNED: bool;
    const ZERO: Self;
    fn wadd(self, o: Self) -> Self;
    fn wsub(self, o: Self) -> Self;
    fn wmul(self, o: Self) -> Self;
    fn floor_div(self, o: Self) -> Self;
    fn floor_rem(self, o: Self) -> Self;
    fn wpow(self, e: Self) -> Self;
    fn wabs(self) -> Self;
    fn wneg(self) -> Self;
    fn sign(self) -> Self;
}

macro_rules! storable {
    ($variant:ident) => {
        fn slice(data: &HostData) -> Option<&[Self]> {
            match data {
                HostData::$variant(v) => Some(v),
                _ => None,
            }
        }

        fn slice_mut(data: &mut HostData) -> Option<&mut [Self]> {
            match data {
                HostData::$variant(v) => Some(v),
                _ => None,
            }
        }

        fn wrap(v: Vec<Self>) -> HostData {
            HostData::$variant(v)
        }
    };
}

impl Elem for f32 {
    const DTYPE: DType = DType::F32;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    storable!(F32);
}

impl Elem for f16 {
    const DTYPE: DType = DType::F16;
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn is_nan(self) -> bool {
        f16::is_nan(self)
    }
    storable!(F16);
}

impl Elem for f64 {
    const DTYPE: DType = DType::F64;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    storable!(F64);
}

impl Elem for i32 {
    const DTYPE: DType = DType::I32;
    fn from_f64(v: f64) -> Self {
        // Rust's float → int `as` truncates, saturates and maps NaN to 0: exactly the cast contract.
        v as i32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    storable!(I32);
}

impl Elem for u32 {
    const DTYPE: DType = DType::U32;
    fn from_f64(v: f64) -> Self {
        v as u32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    storable!(U32);
}

impl Elem for bool {
    const DTYPE: DType = DType::Bool;
    fn from_f64(v: f64) -> Self {
        // NaN != 0, so NaN is true, as in PyTorch.
        v != 0.0
    }
    fn to_f64(self) -> f64 {
        if self { 1.0 } else { 0.0 }
    }
    storable!(Bool);
}

macro_rules! float_num {
    ($t:ty) => {
        impl Num for $t {
            type Acc = f64;
            const ACC_ZERO: f64 = 0.0;
            const ACC_ONE: f64 = 1.0;
            fn widen(self) -> f64 {
                Elem::to_f64(self)
            }
            fn narrow(a: f64) -> Self {
                <$t as Elem>::from_f64(a)
            }
            fn acc_add(a: f64, b: f64) -> f64 {
                a + b
            }
            fn acc_mul(a: f64, b: f64) -> f64 {
                a * b
            }
            fn acc_f64(a: f64) -> f64 {
                a
            }
        }
        impl Float for $t {}
    };
}
float_num!(f32);
float_num!(f16);
float_num!(f64);

macro_rules! int_num {
    ($t:ty) => {
        impl Num for $t {
            type Acc = $t;
            const ACC_ZERO: $t = 0;
            const ACC_ONE: $t = 1;
            fn widen(self) -> $t {
                self
            }
            fn narrow(a: $t) -> Self {
                a
            }
            fn acc_add(a: $t, b: $t) -> $t {
                a.wrapping_add(b)
            }
            fn acc_mul(a: $t, b: $t) -> $t {
                a.wrapping_mul(b)
            }
            fn acc_f64(a: $t) -> f64 {
                f64::from(a)
            }
        }
    };
}
int_num!(i32);
int_num!(u32);

impl Int for i32 {
    const SIGNED: bool = true;
    const ZERO: i32 = 0;
    fn wadd(self, o: i32) -> i32 {
        self.wrapping_add(o)
    }
    fn wsub(self, o: i32) -> i32 {
        self.wrapping_sub(o)
    }
    fn wmul(self, o: i32) -> i32 {
        self.wrapping_mul(o)
    }
    /// Python's `//`; `x // 0 = 0`; `i32::MIN // -1` wraps to `i32::MIN`.
    fn floor_div(self, o: i32) -> i32 {
        if o == 0 {
            return 0;
        }
        let q = self.wrapping_div(o);
        if self.wrapping_rem(o) != 0 && ((self < 0) != (o < 0)) { q - 1 } else { q }
    }
    /// Python's `%`: the result has the divisor's sign; `x % 0 = 0`.
    fn floor_rem(self, o: i32) -> i32 {
        if o == 0 {
            return 0;
        }
        let r = self.wrapping_rem(o);
        // r and o have opposite signs here, so the sum cannot overflow.
        if r != 0 && ((r < 0) != (o < 0)) { r + o } else { r }
    }
    /// Repeated wrapping multiplication. A negative exponent gives the truncated real result:
    /// 1 for base 1, ±1 for base −1 by parity, and 0 otherwise (including base 0, where PyTorch
    /// raises an error and a GPU kernel cannot).
    fn wpow(self, e: i32) -> i32 {
        if e < 0 {
            return match self {
                1 => 1,
                -1 => {
                    if e % 2 == 0 {
                        1
                    } else {
                        -1
                    }
                }
                _ => 0,
            };
        }
        self.wrapping_pow(e as u32)
    }
    /// `|i32::MIN|` wraps to `i32::MIN`, as in PyTorch.
    fn wabs(self) -> i32 {
        self.wrapping_abs()
    }
    fn wneg(self) -> i32 {
        self.wrapping_neg()
    }
    fn sign(self) -> i32 {
        self.signum()
    }
}

impl Int for u32 {
    const SIGNED: bool = false;
    const ZERO: u32 = 0;
    fn wadd(self, o: u32) -> u32 {
        self.wrapping_add(o)
    }
    fn wsub(self, o: u32) -> u32 {
        self.wrapping_sub(o)
    }
    fn wmul(self, o: u32) -> u32 {
        self.wrapping_mul(o)
    }
    fn floor_div(self, o: u32) -> u32 {
        self.checked_div(o).unwrap_or(0)
    }
    fn floor_rem(self, o: u32) -> u32 {
        self.checked_rem(o).unwrap_or(0)
    }
    fn wpow(self, e: u32) -> u32 {
        self.wrapping_pow(e)
    }
    fn wabs(self) -> u32 {
        self
    }
    fn wneg(self) -> u32 {
        self.wrapping_neg()
    }
    fn sign(self) -> u32 {
        u32::from(self != 0)
    }
}
