//! Automatic mixed precision: [`autocast`] and [`AutocastGuard`], thread-local like
//! [`crate::no_grad`].
//!
//! Inside an f16 autocast region every matrix product whose operands are f32 (or one f32 and
//! one f16) runs on f16 copies of its operands, accumulates in f32 and hands back an **f32**
//! tensor. Everything else (elementwise ops, reductions, softmax, norms, losses) is untouched and
//! stays in f32, which is PyTorch's "autocast to f16" list reduced to the one op family that has
//! it in Kiln: `matmul` and what is built on it (`Linear`, `conv1d`/`conv2d` through im2col,
//! `adaptive_avg_pool2d`'s pooling products, and attention's two products where
//! `MultiHeadAttention` materialises the scores). The fused attention op
//! (`scaled_dot_product_attention`, which `MultiHeadAttention` uses up to its head-dim limit)
//! joins them where it runs on tensor cores: on a GPU with cooperative matrices and a head dim
//! that is a multiple of 16, f32 q, k and v are cast to f16, attention runs with f16 operands and
//! f32 softmax statistics, and the output comes back as f32. Elsewhere it runs in f32 (its f16
//! kernels without tensor cores would only lose precision). The q/k/v/out projections around
//! it are `Linear`s and run in f16 either way.
//!
//! Why f32 outputs, where PyTorch returns f16: Kiln has no type promotion, so an f16 product
//! would make the very next `+ bias` (an f32 parameter) a dtype error; casting back inside the
//! op keeps every model working unchanged under autocast, at the price of one cast kernel per
//! product. The values are those of PyTorch's f16 product cast to f32: operands rounded to f16,
//! products accumulated in f32, the result rounded to f16.
//!
//! Gradients: the casts are ordinary `to_dtype` ops, whose backward casts back, so gradients
//! reach f32 master weights as f32 and the backward products run in f16 too. A tensor that
//! several products of one region read (one input to the q, k and v projections) is cast once
//! while its copy is alive, so one f16 copy is saved for backward, not one per product. f64 operands and
//! integer operands are never cast (as in PyTorch). GELU inside a region keeps an f16 copy of
//! its f32 input for backward, not the input itself: PyTorch's GELU there reads the f16 product
//! before it and saves that, half the bytes of a transformer MLP's largest activation; its
//! gradient is computed in f32 from the copy.
//!
//! Where it runs: on a GPU, f16 products take the tensor-core (cooperative-matrix) kernel where
//! the adapter has one and the tiled f16 kernel (f16 storage, f32 accumulation) otherwise. On the
//! CPU backend they are emulated: operands rounded to f16, f32 accumulation, the result rounded
//! to f16, so a CPU run shows the same rounding a GPU run does (and is no faster than f32). An
//! adapter without `SHADER_F16` cannot hold f16 tensors: there the products run in f32 and a
//! one-line note says so on stderr, once per process.

use crate::storage::Storage;
use crate::tensor::Inner;
use crate::{Device, Tensor};
use kiln_backend::{DType, Error, Result};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
    /// Tests force the no-`SHADER_F16` fallback with this (lavapipe has f16).
    static PRETEND_NO_F16: Cell<bool> = const { Cell::new(false) };
    /// The low-precision copies made in this region, while their sources live (see [`cast`]).
    static CASTS: RefCell<Vec<CachedCast>> = const { RefCell::new(Vec::new()) };
}

/// One operand cast: the source tensor (and the storage it had when cast, and whether the copy
/// records history) and the copy.
struct CachedCast {
    source: Weak<Inner>,
    storage: Weak<Storage>,
    dtype: DType,
    recorded: bool,
    copy: Tensor,
}

/// How many casts the region remembers: a tensor is read again by the next few products (the
/// q, k and v projections of one input), not across a model.
const CAST_CACHE: usize = 4;

/// `t` in `low`, the copy an earlier product of this region made of the same tensor if that
/// tensor is still alive. A tensor fed to several products (the q, k and v projections of one
/// layer-norm output) is then cast once, and one copy is saved for backward instead of one per
/// product: on the char transformer's attention, two `[tokens, d]` f16 copies less per block,
/// and two cast kernels less each way. The copy's gradient is the sum of its users', cast back
/// once. The cache holds a copy only while its source lives (a product keeps its operands as
/// views, so the copy's own handle is gone once the product returns), and at most
/// `CAST_CACHE` of them: under `no_grad` a copy outlives its product only that long.
fn cast(t: &Tensor, low: DType) -> Result<Tensor> {
    if t.dtype() == low {
        return Ok(t.clone());
    }
    let recorded = crate::is_grad_enabled() && t.requires_grad();
    let source = Arc::downgrade(&t.0);
    let storage = Arc::downgrade(&t.storage());
    let hit = CASTS.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|e| e.source.strong_count() > 0);
        c.iter()
            .find(|e| {
                e.source.ptr_eq(&source) && e.storage.ptr_eq(&storage) && e.dtype == low && e.recorded == recorded
            })
            .map(|e| e.copy.clone())
    });
    if let Some(copy) = hit {
        return Ok(copy);
    }
    let copy = t.to_dtype(low)?;
    CASTS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CAST_CACHE {
            c.remove(0);
        }
        c.push(CachedCast { source, storage, dtype: low, recorded, copy: copy.clone() });
    });
    Ok(copy)
}

/// The low-precision dtype of the autocast region this thread is in, if any.
pub fn autocast_dtype() -> Option<DType> {
    AUTOCAST.with(|a| a.get())
}

/// Turns autocast on (`DType::F16`) or off (`DType::F32`, for an f32 island inside an autocast
/// region) until dropped, then restores what was there before.
pub struct AutocastGuard {
    previous: Option<DType>,
}

impl AutocastGuard {
    /// `DType::F16` starts mixed precision; `DType::F32` turns it off. Other dtypes are an error.
    pub fn new(dtype: DType) -> Result<Self> {
        let region = match dtype {
            DType::F16 => Some(DType::F16),
            DType::F32 => None,
            other => {
                return Err(Error::invalid(
                    "autocast",
                    format!("dtype {other} is not supported: use F16 (mixed precision) or F32 (off)"),
                ));
            }
        };
        Ok(AutocastGuard { previous: AUTOCAST.with(|a| a.replace(region)) })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.previous));
        // Sources may change once the region ends (an optimizer step writes weights in place).
        CASTS.with(|c| c.borrow_mut().clear());
    }
}

/// Runs `f` with matrix products in `dtype` (see the module docs); `DType::F32` runs it with
/// autocast off.
///
/// ```
/// # use kiln_core::{Tensor, Device, DType};
/// let d = Device::cpu();
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2], &d).unwrap();
/// let w = Tensor::from_vec(vec![0.1f32, 0.2, 0.3, 0.4], &[2, 2], &d).unwrap().with_grad();
/// let y = kiln_core::autocast(DType::F16, || x.matmul(&w)).unwrap();
/// assert_eq!(y.dtype(), DType::F32);
/// y.sum_all().unwrap().backward().unwrap();
/// assert_eq!(w.grad().unwrap().dtype(), DType::F32);
/// ```
pub fn autocast<T>(dtype: DType, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let _guard = AutocastGuard::new(dtype)?;
    f()
}

/// Makes this thread behave as if every GPU lacked `SHADER_F16`, so tests can exercise the f32
/// fallback on adapters that have f16. Not for applications.
#[doc(hidden)]
pub fn pretend_no_f16_for_tests(on: bool) {
    PRETEND_NO_F16.with(|p| p.set(on));
}

/// Can `device` hold f16 tensors?
fn has_f16(device: &Device) -> bool {
    if PRETEND_NO_F16.with(|p| p.get()) && device.is_gpu() {
        return false;
    }
    device.gpu_context().is_none_or(|g| g.has_f16())
}

/// The low dtype of this thread's autocast region when `t`'s device can hold it: what an op
/// that keeps a lower-precision copy of an f32 input for backward (GELU) keeps it in.
pub(crate) fn low_copy_dtype(t: &Tensor) -> Option<DType> {
    autocast_dtype().filter(|_| has_f16(t.device()))
}

/// The dtype an autocast region wants a product of `a` and `b` computed in, if it differs from
/// theirs.
pub(crate) fn product_dtype(a: &Tensor, b: &Tensor) -> Option<DType> {
    let low = autocast_dtype()?;
    let eligible = |t: DType| t == DType::F32 || t == low;
    if !(eligible(a.dtype()) && eligible(b.dtype())) || (a.dtype() == low && b.dtype() == low) {
        return None;
    }
    if !has_f16(a.device()) {
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            eprintln!(
                "kiln: autocast: {} lacks SHADER_F16; matrix products under autocast run in f32 on it",
                a.device().describe()
            );
        }
        return None;
    }
    Some(low)
}

/// The autocast version of `product(a, b)`, or `None` when autocast leaves this product alone
/// (off, ineligible dtypes, or an adapter without f16).
pub(crate) fn product(
    a: &Tensor,
    b: &Tensor,
    product: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Option<Result<Tensor>> {
    let low = product_dtype(a, b)?;
    Some((|| product(&cast(a, low)?, &cast(b, low)?)?.to_dtype(DType::F32))())
}

/// The autocast version of attention `attend(q, k, v)`, or `None` when autocast leaves it alone:
/// off, inputs not f32, or no tensor-core kernel for it (see the module docs).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    attend: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
) -> Option<Result<Tensor>> {
    let low = autocast_dtype()?;
    if [q, k, v].iter().any(|t| t.dtype() != DType::F32) || q.rank() != 4 || !q.shape()[3].is_multiple_of(16) {
        return None;
    }
    let ctx = q.device().gpu_context()?;
    if !ctx.uses_cooperative_matrices() || !has_f16(q.device()) {
        return None;
    }
    Some((|| attend(&q.to_dtype(low)?, &k.to_dtype(low)?, &v.to_dtype(low)?)?.to_dtype(DType::F32))())
}
