//! Loss functions with PyTorch's semantics and numbers.
//!
//! Classification losses take logits `[n, c]` (or `[n, c, d1, ...]` for per-position classes,
//! or unbatched `[c]`) and class ids of the batch shape; regression losses take two tensors of
//! the same shape (unlike PyTorch, a shape mismatch is an error rather than a broadcast).

use kiln_core::{DType, Error, Result, Tensor};

/// How per-element losses are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reduction {
    /// The mean (for cross-entropy with `ignore_index`: over the targets not ignored).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// No reduction: one loss per element (per sample for classification losses).
    None,
    /// The sum divided by the batch size (dim 0): `kl_div` only, PyTorch's `'batchmean'`.
    BatchMean,
}

/// The target of [`cross_entropy`].
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// Class ids (u32 or i32) with the batch shape: `[n]` or `[n, d1, ...]`.
    Indices(&'a Tensor),
    /// Class probabilities with the logits' shape.
    Probs(&'a Tensor),
}

/// Options of [`cross_entropy`]; `Default` is PyTorch's (mean, no class weights, no ignored
/// index, no smoothing).
#[derive(Clone, Debug, Default)]
pub struct CrossEntropyOptions {
    pub reduction: Reduction,
    /// Targets equal to this id contribute nothing and are left out of the mean's denominator.
    pub ignore_index: Option<u32>,
    /// ε in `[0, 1]`: the target becomes `(1 − ε)·onehot + ε/C`.
    pub label_smoothing: f64,
    /// Per-class weights `[C]` (the logits' dtype and device), PyTorch's `weight`: class `c`'s
    /// term is scaled by `weight[c]`, and with class-id targets the mean divides by the sum of
    /// the weights of the targets not ignored instead of by their count.
    pub weight: Option<Tensor>,
}

/// Moves the class dim (1, or 0 for an unbatched `[c]`) last and flattens the rest:
/// `[n, c, d...] → [m, c]`, returning the batch shape `[n, d...]` too.
fn classes_last(op: &'static str, x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
    match x.rank() {
        0 => Err(Error::shape(op, "expects [c], [n, c] or [n, c, d...] scores, got a scalar")),
        1 => Ok((x.unsqueeze(0)?, Vec::new())),
        2 => Ok((x.clone(), vec![x.shape()[0]])),
        r => {
            let mut order = vec![0];
            order.extend(2..r);
            order.push(1);
            let batch: Vec<usize> = order[..r - 1].iter().map(|&d| x.shape()[d]).collect();
            let m: usize = batch.iter().product();
            Ok((x.permute(&order)?.reshape(&[m, x.shape()[1]])?, batch))
        }
    }
}

fn check_float(op: &'static str, x: &Tensor) -> Result<()> {
    if !x.dtype().is_float() {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype(), why: " (needs float scores)".into() });
    }
    Ok(())
}

fn check_same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(op, format!("input {:?} vs target {:?}", a.shape(), b.shape())));
    }
    Ok(())
}

/// Reduces elementwise losses; `BatchMean` only where `allow_batchmean`.
fn reduce(op: &'static str, loss: Tensor, reduction: Reduction, allow_batchmean: bool) -> Result<Tensor> {
    match reduction {
        Reduction::Mean => loss.mean_all(),
        Reduction::Sum => loss.sum_all(),
        Reduction::None => Ok(loss),
        Reduction::BatchMean if allow_batchmean => {
            let n = if loss.rank() == 0 { 1 } else { loss.shape()[0] };
            loss.sum_all()?.div_scalar(n as f64)
        }
        Reduction::BatchMean => Err(Error::invalid(op, "Reduction::BatchMean is only defined for kl_div")),
    }
}

/// The index-target loss shared by `cross_entropy` and `nll_loss`, from log-probabilities `[m, c]`.
fn nll_core(
    op: &'static str,
    log_probs: &Tensor,
    batch: &[usize],
    ids: &Tensor,
    ignore_index: Option<u32>,
    smoothing: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    if !matches!(ids.dtype(), DType::U32 | DType::I32) {
        return Err(Error::dtype(op, "u32 or i32 class ids", ids.dtype()));
    }
    if ids.shape() != batch && !(batch.is_empty() && ids.numel() == 1) {
        return Err(Error::shape(op, format!("targets {:?} for batch shape {batch:?}", ids.shape())));
    }
    let (m, c) = (log_probs.shape()[0], log_probs.shape()[1]);
    let ids = ids.reshape(&[m])?;
    let valid = match ignore_index {
        Some(ii) => Some(ids.ne_scalar(ii as f64)?),
        None => None,
    };
    // Ignored targets may be out of range (e.g. a padding id): gather row 0 there, then mask.
    let safe = match &valid {
        Some(v) => Tensor::where_(v, &ids, &Tensor::zeros_like(&ids)?)?,
        None => ids,
    };
    let nll = log_probs.gather(1, &safe.reshape(&[m, 1])?)?.reshape(&[m])?.neg()?;
    let mut per = if smoothing > 0.0 {
        let uniform = log_probs.sum(&[-1], false)?.neg()?.mul_scalar(smoothing / c as f64)?;
        (&nll.mul_scalar(1.0 - smoothing)? + &uniform)?
    } else {
        nll
    };
    if let Some(v) = &valid {
        per = Tensor::where_(v, &per, &Tensor::zeros_like(&per)?)?;
    }
    match reduction {
        Reduction::Mean => match &valid {
            Some(v) => &per.sum_all()? / &v.to_dtype(per.dtype())?.sum_all()?,
            None => per.mean_all(),
        },
        Reduction::Sum => per.sum_all(),
        Reduction::None => per.reshape(batch),
        Reduction::BatchMean => Err(Error::invalid(op, "Reduction::BatchMean is only defined for kl_div")),
    }
}

/// Cross-entropy of scores `[m, c]` against class ids with the batch shape, through the fused
/// per-row kernel (log-sum-exp and the target's logit in one pass; `softmax − onehot` back).
fn fused_cross_entropy(scores: &Tensor, batch: &[usize], ids: &Tensor, opts: &CrossEntropyOptions) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    if !matches!(ids.dtype(), DType::U32 | DType::I32) {
        return Err(Error::dtype(OP, "u32 or i32 class ids", ids.dtype()));
    }
    if ids.shape() != batch && !(batch.is_empty() && ids.numel() == 1) {
        return Err(Error::shape(OP, format!("targets {:?} for batch shape {batch:?}", ids.shape())));
    }
    let m = scores.shape()[0];
    let ids = ids.reshape(&[m])?;
    if let Some(w) = &opts.weight {
        return weighted_cross_entropy(scores, batch, &ids, w, opts);
    }
    let per = scores.cross_entropy_rows(&ids, opts.ignore_index, opts.label_smoothing)?;
    match opts.reduction {
        Reduction::Mean => match opts.ignore_index {
            Some(ii) => &per.sum_all()? / &ids.ne_scalar(ii as f64)?.to_dtype(per.dtype())?.sum_all()?,
            None => per.mean_all(),
        },
        Reduction::Sum => per.sum_all(),
        Reduction::None => per.reshape(batch),
        Reduction::BatchMean => Err(Error::invalid(OP, "Reduction::BatchMean is only defined for kl_div")),
    }
}

/// `weight [C]` must be a float vector of the scores' dtype and device, one entry per class.
fn check_weight(op: &'static str, scores: &Tensor, w: &Tensor) -> Result<()> {
    if scores.device() != w.device() {
        return Err(Error::DeviceMismatch { op, lhs: scores.device().name(), rhs: w.device().name() });
    }
    let c = scores.shape()[1];
    if w.shape() != [c] {
        return Err(Error::shape(op, format!("weight {:?} for {c} classes (expected [{c}])", w.shape())));
    }
    if w.dtype() != scores.dtype() {
        return Err(Error::dtype(op, scores.dtype(), w.dtype()));
    }
    Ok(())
}

/// Class-weighted cross-entropy with PyTorch's formula, per row
/// `(1 − ε)·w[t]·(lse − x[t]) + (ε/C)·Σ_c w_c·(lse − x_c)` (0 for ignored rows), the mean
/// dividing by `Σ w[t]` over the rows not ignored. A composed path: the target term is the
/// fused per-row kernel (no smoothing) scaled by `w[t]`, the smoothing term one log-softmax and
/// one matrix-vector product.
fn weighted_cross_entropy(
    scores: &Tensor,
    batch: &[usize],
    ids: &Tensor,
    w: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    check_weight(OP, scores, w)?;
    let (m, c) = (scores.shape()[0], scores.shape()[1]);
    let eps = opts.label_smoothing;
    // The fused kernel checks the ids (ignored ones may be out of range) and zeroes ignored rows.
    let nll = scores.cross_entropy_rows(ids, opts.ignore_index, 0.0)?;
    let valid = match opts.ignore_index {
        Some(ii) => Some(ids.ne_scalar(ii as f64)?),
        None => None,
    };
    let safe = match &valid {
        Some(v) => Tensor::where_(v, ids, &Tensor::zeros_like(ids)?)?,
        None => ids.clone(),
    };
    let mut w_t = w.index_select(0, &safe)?;
    if let Some(v) = &valid {
        w_t = (&w_t * &v.to_dtype(w_t.dtype())?)?;
    }
    let mut per = (&nll * &w_t)?;
    if eps > 0.0 {
        let smooth = scores.log_softmax(-1)?.matmul(&w.reshape(&[c, 1])?)?.reshape(&[m])?.neg()?;
        let smooth = match &valid {
            Some(v) => (&smooth * &v.to_dtype(smooth.dtype())?)?,
            None => smooth,
        };
        per = (&per.mul_scalar(1.0 - eps)? + &smooth.mul_scalar(eps / c as f64)?)?;
    }
    match opts.reduction {
        Reduction::Mean => &per.sum_all()? / &w_t.sum_all()?,
        Reduction::Sum => per.sum_all(),
        Reduction::None => per.reshape(batch),
        Reduction::BatchMean => Err(Error::invalid(OP, "Reduction::BatchMean is only defined for kl_div")),
    }
}

/// Cross-entropy between softmax(logits) over dim 1 and the target, PyTorch's
/// `F.cross_entropy`: with class ids, `−log p[target]`, label smoothing ε giving
/// `(1 − ε)·nll + ε·mean_c(−log p_c)`, and ignored targets left out of the mean's denominator;
/// with probabilities, `−Σ_c y_c log p_c` (smoothed the same way). `opts.weight` scales each
/// class's terms as PyTorch's `weight` does.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// # use kiln_nn::loss::{cross_entropy, CrossEntropyOptions, Target};
/// let cpu = Device::cpu();
/// let logits = Tensor::zeros(&[2, 4], &cpu).unwrap();
/// let target = Tensor::from_vec(vec![1u32, 3], &[2], &cpu).unwrap();
/// let loss = cross_entropy(&logits, &Target::Indices(&target), &CrossEntropyOptions::default()).unwrap();
/// assert!((loss.item().unwrap() - 4f64.ln()).abs() < 1e-6);
/// ```
pub fn cross_entropy(logits: &Tensor, target: &Target, opts: &CrossEntropyOptions) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    check_float(OP, logits)?;
    let eps = opts.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::invalid(OP, format!("label_smoothing {eps} is not in [0, 1]")));
    }
    let (scores, batch) = classes_last(OP, logits)?;
    match *target {
        Target::Indices(ids) => fused_cross_entropy(&scores, &batch, ids, opts),
        Target::Probs(p) => {
            let log_probs = scores.log_softmax(-1)?;
            if opts.ignore_index.is_some() {
                return Err(Error::invalid(OP, "ignore_index needs class-id targets, not probabilities"));
            }
            check_same_shape(OP, logits, p)?;
            let (p, _) = classes_last(OP, p)?;
            let c = p.shape()[1] as f64;
            let p = if eps > 0.0 { p.mul_scalar(1.0 - eps)?.add_scalar(eps / c)? } else { p };
            // Class weights scale each class's term; the mean stays over the rows (PyTorch).
            let p = match &opts.weight {
                Some(w) => {
                    check_weight(OP, &scores, w)?;
                    (&p * w)?
                }
                None => p,
            };
            let per = (&p * &log_probs)?.sum(&[-1], false)?.neg()?;
            match opts.reduction {
                Reduction::None => per.reshape(&batch),
                r => reduce(OP, per, r, false),
            }
        }
    }
}

/// Mean cross-entropy of logits `[n, c]` against u32/i32 class ids `[n]`: the common case of
/// [`cross_entropy`].
pub fn cross_entropy_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    cross_entropy(logits, &Target::Indices(targets), &CrossEntropyOptions::default())
}

/// Negative log-likelihood of log-probabilities `[n, c]` (or `[n, c, d...]`, or `[c]`) at the
/// class ids `targets`, PyTorch's `F.nll_loss`.
pub fn nll_loss(log_probs: &Tensor, targets: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const OP: &str = "nll_loss";
    check_float(OP, log_probs)?;
    let (lp, batch) = classes_last(OP, log_probs)?;
    nll_core(OP, &lp, &batch, targets, None, 0.0, reduction)
}

/// Binary cross-entropy on logits, PyTorch's `F.binary_cross_entropy_with_logits`, in the
/// stable form `max(x, 0) − x·y + log(1 + e^−|x|)` (its gradient is `σ(x) − y` everywhere,
/// x = 0 included, because `max` splits ties evenly).
pub fn binary_cross_entropy_with_logits(logits: &Tensor, targets: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const OP: &str = "binary_cross_entropy_with_logits";
    check_float(OP, logits)?;
    check_same_shape(OP, logits, targets)?;
    let tail = logits.abs()?.neg()?.exp()?.log1p()?;
    let loss = (&(&logits.maximum_scalar(0.0)? - &(logits * targets)?)? + &tail)?;
    reduce(OP, loss, reduction, false)
}

/// Mean squared error `(x − y)²`.
pub fn mse_loss(pred: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    check_same_shape("mse_loss", pred, target)?;
    reduce("mse_loss", (pred - target)?.square()?, reduction, false)
}

/// Mean absolute error `|x − y|`.
pub fn l1_loss(pred: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    check_same_shape("l1_loss", pred, target)?;
    reduce("l1_loss", (pred - target)?.abs()?, reduction, false)
}

/// `0.5·d²/β` where `|d| < β`, else `|d| − 0.5·β` (PyTorch's `F.smooth_l1_loss`; β = 0 is L1).
pub fn smooth_l1_loss(pred: &Tensor, target: &Tensor, beta: f64, reduction: Reduction) -> Result<Tensor> {
    const OP: &str = "smooth_l1_loss";
    check_same_shape(OP, pred, target)?;
    if !(beta >= 0.0 && beta.is_finite()) {
        return Err(Error::invalid(OP, format!("beta {beta} must be a finite number ≥ 0")));
    }
    let d = (pred - target)?.abs()?;
    if beta == 0.0 {
        return reduce(OP, d, reduction, false);
    }
    let quad = d.square()?.mul_scalar(0.5 / beta)?;
    let lin = d.add_scalar(-0.5 * beta)?;
    reduce(OP, Tensor::where_(&d.lt_scalar(beta)?, &quad, &lin)?, reduction, false)
}

/// `0.5·d²` where `|d| < δ`, else `δ·(|d| − 0.5·δ)` (PyTorch's `F.huber_loss`).
pub fn huber_loss(pred: &Tensor, target: &Tensor, delta: f64, reduction: Reduction) -> Result<Tensor> {
    const OP: &str = "huber_loss";
    check_same_shape(OP, pred, target)?;
    if !(delta > 0.0 && delta.is_finite()) {
        return Err(Error::invalid(OP, format!("delta {delta} must be a finite number > 0")));
    }
    let d = (pred - target)?.abs()?;
    let quad = d.square()?.mul_scalar(0.5)?;
    let lin = d.add_scalar(-0.5 * delta)?.mul_scalar(delta)?;
    reduce(OP, Tensor::where_(&d.lt_scalar(delta)?, &quad, &lin)?, reduction, false)
}

/// Kullback–Leibler divergence `Σ y·(log y − x)` of `input` log-probabilities from `target`
/// probabilities, PyTorch's `F.kl_div(input, target, log_target=False)` (terms with `y = 0`
/// count 0). PyTorch's `'mean'` averages over every element; use [`Reduction::BatchMean`] for
/// the true KL divergence per sample.
pub fn kl_div(input_log_probs: &Tensor, target_probs: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const OP: &str = "kl_div";
    check_float(OP, input_log_probs)?;
    check_same_shape(OP, input_log_probs, target_probs)?;
    let y = target_probs;
    let zero = y.eq_scalar(0.0)?;
    let safe = Tensor::where_(&zero, &Tensor::ones_like(y)?, y)?;
    let ylogy = (y * &safe.log()?)?;
    reduce(OP, (&ylogy - &(y * input_log_probs)?)?, reduction, true)
}
