//! Op descriptions passed from the core to a backend. Parameters (alphas, bounds, exponents)
//! travel as data, so a backend can keep one compiled kernel per op, not one per value.

/// Elementwise ops of one input. Output dtype equals input dtype, except `IsNan`/`IsInf`
/// (→ bool). `Not` is logical not on bool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sign,
    Exp,
    Exp2,
    Log,
    Log2,
    Log1p,
    Expm1,
    Logit,
    Sqrt,
    Rsqrt,
    Recip,
    Square,
    Sin,
    Cos,
    Tanh,
    Sigmoid,
    Relu,
    LeakyRelu(f64),
    Elu(f64),
    GeluErf,
    /// The derivative of `GeluErf`, Φ(x) + x·φ(x): GELU's backward in one elementwise pass
    /// (times the incoming gradient) instead of a chain of a dozen.
    GeluErfGrad,
    GeluTanh,
    Silu,
    Softplus,
    Mish,
    Floor,
    Ceil,
    Round,
    Clamp(f64, f64),
    Powf(f64),
    IsNan,
    IsInf,
    Not,
}

impl UnaryOp {
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "neg",
            Abs => "abs",
            Sign => "sign",
            Exp => "exp",
            Exp2 => "exp2",
            Log => "log",
            Log2 => "log2",
            Log1p => "log1p",
            Expm1 => "expm1",
            Logit => "logit",
            Sqrt => "sqrt",
            Rsqrt => "rsqrt",
            Recip => "recip",
            Square => "square",
            Sin => "sin",
            Cos => "cos",
            Tanh => "tanh",
            Sigmoid => "sigmoid",
            Relu => "relu",
            LeakyRelu(_) => "leaky_relu",
            Elu(_) => "elu",
            GeluErf => "gelu",
            GeluErfGrad => "gelu_grad",
            GeluTanh => "gelu_tanh",
            Silu => "silu",
            Softplus => "softplus",
            Mish => "mish",
            Floor => "floor",
            Ceil => "ceil",
            Round => "round",
            Clamp(..) => "clamp",
            Powf(_) => "powf",
            IsNan => "isnan",
            IsInf => "isinf",
            Not => "logical_not",
        }
    }

    /// The op's scalar parameters, padded to two.
    pub fn params(self) -> [f64; 2] {
        match self {
            UnaryOp::LeakyRelu(a) | UnaryOp::Elu(a) | UnaryOp::Powf(a) => [a, 0.0],
            UnaryOp::Clamp(lo, hi) => [lo, hi],
            _ => [0.0, 0.0],
        }
    }

    /// Ops defined only for floating-point inputs.
    pub fn float_only(self) -> bool {
        use UnaryOp::*;
        !matches!(self, Neg | Abs | Sign | Square | Relu | Clamp(..) | Not)
    }

    /// Ops whose output is bool.
    pub fn returns_bool(self) -> bool {
        matches!(self, UnaryOp::IsNan | UnaryOp::IsInf | UnaryOp::Not)
    }

    /// Every op, with sample parameters: what shader tests and op tests iterate.
    pub const ALL: [UnaryOp; 35] = {
        use UnaryOp::*;
        [
            Neg,
            Abs,
            Sign,
            Exp,
            Exp2,
            Log,
            Log2,
            Log1p,
            Expm1,
            Sqrt,
            Rsqrt,
            Recip,
            Square,
            Sin,
            Cos,
            Tanh,
            Sigmoid,
            Relu,
            LeakyRelu(0.01),
            Elu(1.0),
            GeluErf,
            GeluErfGrad,
            GeluTanh,
            Silu,
            Softplus,
            Mish,
            Floor,
            Ceil,
            Round,
            Clamp(-0.5, 0.5),
            Powf(2.5),
            IsNan,
            IsInf,
            Not,
            Logit,
        ]
    };
}

/// Elementwise ops of three float inputs of equal shape (the core broadcasts first) and equal
/// dtype, one kernel each (fused with its neighbours on the GPU): `op(a, b, c)`. A new op is a
/// variant here, its f64 formula in `kiln-cpu/src/ternary.rs`, its WGSL expression in
/// `kiln-wgpu/src/kernels/elementwise.rs`, its method and gradient in
/// `kiln-core/src/ops/ternary.rs` and a row in `tests/op_table.rs`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TernaryOp {
    /// `a + value·b·c` (PyTorch's `addcmul`).
    Addcmul(f64),
    /// `a + value·b/c` (PyTorch's `addcdiv`).
    Addcdiv(f64),
}

impl TernaryOp {
    pub fn name(self) -> &'static str {
        match self {
            TernaryOp::Addcmul(_) => "addcmul",
            TernaryOp::Addcdiv(_) => "addcdiv",
        }
    }

    /// The op's scalar parameters, padded to two.
    pub fn params(self) -> [f64; 2] {
        match self {
            TernaryOp::Addcmul(v) | TernaryOp::Addcdiv(v) => [v, 0.0],
        }
    }

    /// Every op, with sample parameters: what shader tests and op tests iterate.
    pub const ALL: [TernaryOp; 2] = [TernaryOp::Addcmul(0.5), TernaryOp::Addcdiv(0.5)];
}

/// Elementwise ops of two inputs of equal shape (the core broadcasts first) and equal dtype.
/// Comparisons return bool; `And`/`Or` take bool.
///
/// Integer semantics (both backends): `Div` floors (Python's `//`), `Rem` takes the divisor's
/// sign (Python's `%`, PyTorch's `remainder`), and dividing by zero gives 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 16] = {
        use BinaryOp::*;
        [Add, Sub, Mul, Div, Pow, Maximum, Minimum, Rem, Eq, Ne, Lt, Le, Gt, Ge, And, Or]
    };

    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Pow => "pow",
            Maximum => "maximum",
            Minimum => "minimum",
            Rem => "rem",
            Eq => "eq",
            Ne => "ne",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
            And => "logical_and",
            Or => "logical_or",
        }
    }

    pub fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge)
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }

    pub fn returns_bool(self) -> bool {
        self.is_comparison() || self.is_logical()
    }
}

/// Reductions over the trailing dims of a layout. `ArgMax`/`ArgMin` return u32 positions in the
/// flattened reduced dims and pick the first of ties, as PyTorch does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
    ArgMax,
    ArgMin,
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 6] =
        [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Max, ReduceOp::Min, ReduceOp::ArgMax, ReduceOp::ArgMin];

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::ArgMax => "argmax",
            ReduceOp::ArgMin => "argmin",
        }
    }

    pub fn is_arg(self) -> bool {
        matches!(self, ReduceOp::ArgMax | ReduceOp::ArgMin)
    }
}

/// How `scatter_reduce` combines the source values that land on one element: PyTorch's
/// `Tensor.scatter_reduce` reductions, and `Replace` for plain `Tensor.scatter` (the last value
/// in row-major order of the index wins, so the result is deterministic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScatterOp {
    Replace,
    Sum,
    Prod,
    Mean,
    Amax,
    Amin,
}

impl ScatterOp {
    pub const ALL: [ScatterOp; 6] =
        [ScatterOp::Replace, ScatterOp::Sum, ScatterOp::Prod, ScatterOp::Mean, ScatterOp::Amax, ScatterOp::Amin];

    /// PyTorch's name of the reduction (`"scatter"` for `Replace`).
    pub fn name(self) -> &'static str {
        match self {
            ScatterOp::Replace => "scatter",
            ScatterOp::Sum => "sum",
            ScatterOp::Prod => "prod",
            ScatterOp::Mean => "mean",
            ScatterOp::Amax => "amax",
            ScatterOp::Amin => "amin",
        }
    }
}

/// Geometry of a 2-D sliding window over `[n, c, h, w]` (convolution via im2col, pooling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
}

impl ConvGeometry {
    /// Output height, or `None` when the (dilated) window does not fit the padded input.
    pub fn out_h(&self) -> Option<usize> {
        out_len(self.h, self.kh, self.stride.0, self.padding.0, self.dilation.0)
    }

    pub fn out_w(&self) -> Option<usize> {
        out_len(self.w, self.kw, self.stride.1, self.padding.1, self.dilation.1)
    }

    /// Shape of the im2col matrix: `[n, c·kh·kw, oh·ow]`, or `None` when the window does not
    /// fit or the matrix's element count would not fit a `usize`.
    pub fn cols_shape(&self) -> Option<[usize; 3]> {
        let rows = self.c.checked_mul(self.kh)?.checked_mul(self.kw)?;
        let cols = self.out_h()?.checked_mul(self.out_w()?)?;
        let shape = [self.n, rows, cols];
        crate::checked_numel(&shape)?;
        Some(shape)
    }
}

fn out_len(input: usize, k: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    let span = dil.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = pad.checked_mul(2)?.checked_add(input)?;
    if stride == 0 || padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// Which pooling an op performs (both are built on im2col; kept here for error messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    Avg,
}

/// Kernel, stride and padding of a 2-D pooling op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolGeometry {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}
