//! The op set. Each file holds one family: forward, gradient rule and docs together.

pub(crate) mod activation;
pub(crate) mod attention;
pub(crate) mod binary;
pub(crate) mod conv;
pub(crate) mod dropout;
pub(crate) mod fused;
pub(crate) mod index;
pub(crate) mod matmul;
pub(crate) mod pool;
pub(crate) mod reduce;
pub(crate) mod scatter;
pub(crate) mod ternary;
pub(crate) mod unary;
pub(crate) mod views;
