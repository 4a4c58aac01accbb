//! The part of the examples' `common` module that `char/train.rs` uses (`memlog`), for W10
//! (`w10.rs`), which includes that file by path.

pub type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[path = "../../examples/common/memlog.rs"]
pub mod memlog;
