use crate::DType;

/// Every error Kiln returns. Each message names the op and the shapes or dtypes involved.
/// New kinds may be added: match with a `_` arm.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    #[error("{op}: shape mismatch: {msg}")]
    ShapeMismatch { op: &'static str, msg: String },

    #[error("{op}: dtype mismatch: expected {expected}, got {got}")]
    DTypeMismatch { op: &'static str, expected: String, got: String },

    #[error("{op}: dtype {dtype} is not supported{why}")]
    UnsupportedDType { op: &'static str, dtype: DType, why: String },

    #[error("{op}: device mismatch: {lhs} vs {rhs}")]
    DeviceMismatch { op: &'static str, lhs: String, rhs: String },

    #[error("{op}: index {index} out of range for {what} of size {size}")]
    IndexOutOfRange { op: &'static str, index: i64, size: usize, what: String },

    #[error("{op}: not supported on this adapter: {msg}")]
    Unsupported { op: &'static str, msg: String },

    #[error("{op}: out of memory: {msg}")]
    OutOfMemory { op: &'static str, msg: String },

    #[error("device lost: {msg}")]
    DeviceLost { msg: String },

    #[error("{op}: invalid argument: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    #[error("{op}: autograd: {msg}")]
    Autograd { op: &'static str, msg: String },

    #[error("{op}: anomaly: {msg}")]
    Anomaly { op: &'static str, msg: String },

    #[error("no device available: {msg}")]
    NoDevice { msg: String },

    #[error("gpu error in {op}: {msg}")]
    Backend { op: &'static str, msg: String },

    #[error("io error on {path}: {msg}")]
    Io { path: String, msg: String },

    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: String, msg: String },

    /// A state dict that does not fit a module (`kiln_nn::torch::load_state_dict`): every
    /// problem at once, by key. `mismatched` pairs a key with what differs (shape or dtype).
    #[error("state dict does not fit the module: {}", state_dict_summary(missing, unexpected, mismatched))]
    StateDict { missing: Vec<String>, unexpected: Vec<String>, mismatched: Vec<(String, String)> },

    /// A call that would wait for the GPU where waiting is not allowed: in a browser
    /// (wasm32) nothing may block the page's event loop, so GPU readbacks, `sync` and device
    /// creation have async forms, which this error names.
    #[error("{op}: would block waiting for the GPU, which a browser does not allow; use {alternative} instead")]
    WouldBlock { op: &'static str, alternative: &'static str },
}

fn state_dict_summary(missing: &[String], unexpected: &[String], mismatched: &[(String, String)]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing keys {missing:?}"));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected keys {unexpected:?}"));
    }
    for (key, what) in mismatched {
        parts.push(format!("{key:?}: {what}"));
    }
    parts.join("; ")
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::ShapeMismatch { op, msg: msg.into() }
    }

    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }

    pub fn dtype(op: &'static str, expected: impl ToString, got: impl ToString) -> Self {
        Error::DTypeMismatch { op, expected: expected.to_string(), got: got.to_string() }
    }

    pub fn unsupported_dtype(op: &'static str, dtype: DType) -> Self {
        Error::UnsupportedDType { op, dtype, why: String::new() }
    }
}
