//! Pooling: max and average over sliding windows (1-D and 2-D) with PyTorch's options and
//! output sizes, and adaptive pooling to a fixed output size. Windows come from im2col (and,
//! for adaptive max pooling, an index_select), so the gradients are those of im2col, pad,
//! index_select and the reductions. Max pooling of floats has its own kernels (the backend's
//! `max_pool` and `max_pool_backward`): its gradient goes to each window's first max (as
//! PyTorch's), from the taps saved in the forward instead of the windows.

use crate::Tensor;
use kiln_backend::{ConvGeometry, DType, Error, HostData, Result};

/// PyTorch's `nn.MaxPool2d` arguments. [`new`](Self::new) has PyTorch's defaults; change the
/// rest with struct update syntax:
/// `MaxPool2dOptions { ceil_mode: true, ..MaxPool2dOptions::new((3, 3)) }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2dOptions {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    /// Implicit −∞ on both sides of each dim; at most half the kernel, as in PyTorch.
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    /// Round the output size up: the last window may hang over the end (never starting past
    /// the input and its left padding).
    pub ceil_mode: bool,
}

impl MaxPool2dOptions {
    /// `kernel` with stride = kernel, no padding, dilation 1, floor mode.
    pub fn new(kernel: (usize, usize)) -> Self {
        MaxPool2dOptions { kernel, stride: kernel, padding: (0, 0), dilation: (1, 1), ceil_mode: false }
    }
}

/// PyTorch's `nn.AvgPool2d` arguments; [`new`](Self::new) has its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool2dOptions {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    /// Implicit zeros on both sides of each dim; at most half the kernel.
    pub padding: (usize, usize),
    pub ceil_mode: bool,
    /// Divide by the window's size counting the zero padding (PyTorch's default), else by the
    /// number of input elements it covers. A ceil-mode overhang past the padding never counts.
    pub count_include_pad: bool,
    /// Divide every window's sum by this instead.
    pub divisor_override: Option<usize>,
}

impl AvgPool2dOptions {
    /// `kernel` with stride = kernel, no padding, floor mode, `count_include_pad`.
    pub fn new(kernel: (usize, usize)) -> Self {
        AvgPool2dOptions {
            kernel,
            stride: kernel,
            padding: (0, 0),
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
        }
    }
}

/// PyTorch's `nn.MaxPool1d` arguments (see [`MaxPool2dOptions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool1dOptions {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub ceil_mode: bool,
}

impl MaxPool1dOptions {
    /// `kernel` with stride = kernel, no padding, dilation 1, floor mode.
    pub fn new(kernel: usize) -> Self {
        MaxPool1dOptions { kernel, stride: kernel, padding: 0, dilation: 1, ceil_mode: false }
    }

    fn to_2d(self) -> MaxPool2dOptions {
        let o = self;
        MaxPool2dOptions {
            kernel: (1, o.kernel),
            stride: (1, o.stride),
            padding: (0, o.padding),
            dilation: (1, o.dilation),
            ceil_mode: o.ceil_mode,
        }
    }
}

/// PyTorch's `nn.AvgPool1d` arguments (see [`AvgPool2dOptions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool1dOptions {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

impl AvgPool1dOptions {
    /// `kernel` with stride = kernel, no padding, floor mode, `count_include_pad`.
    pub fn new(kernel: usize) -> Self {
        AvgPool1dOptions { kernel, stride: kernel, padding: 0, ceil_mode: false, count_include_pad: true }
    }

    fn to_2d(self) -> AvgPool2dOptions {
        let o = self;
        AvgPool2dOptions {
            kernel: (1, o.kernel),
            stride: (1, o.stride),
            padding: (0, o.padding),
            ceil_mode: o.ceil_mode,
            count_include_pad: o.count_include_pad,
            divisor_override: None,
        }
    }
}

/// One dim of a pooling window: PyTorch's output length (`pooling_output_shape`), and how far
/// the last window reaches past the padded input in ceil mode (filled like the padding).
#[allow(clippy::too_many_arguments)]
fn window_len(
    op: &'static str,
    shape: &[usize],
    input: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    ceil: bool,
) -> Result<(usize, usize)> {
    if k == 0 || s == 0 || d == 0 {
        return Err(Error::invalid(op, format!("kernel {k}, stride {s} and dilation {d} must be positive")));
    }
    if p > k / 2 {
        return Err(Error::invalid(op, format!("padding {p} must be at most half of kernel {k}")));
    }
    if input == 0 {
        return Err(Error::shape(op, format!("input {shape:?} has an empty spatial dim")));
    }
    let too_big =
        || Error::shape(op, format!("window (kernel {k}, dilation {d}) larger than input {shape:?} padded by {p}"));
    let span = d.checked_mul(k - 1).and_then(|v| v.checked_add(1)).ok_or_else(too_big)?;
    let padded = p.checked_mul(2).and_then(|v| v.checked_add(input)).ok_or_else(too_big)?;
    let room = padded.checked_sub(span).ok_or_else(too_big)?;
    let mut out = if ceil { room.div_ceil(s) } else { room / s } + 1;
    // PyTorch drops a last window that would start past the input and its left padding.
    if ceil && (out - 1).checked_mul(s).is_none_or(|start| start >= input + p) {
        out -= 1;
    }
    // (out − 1)·s ≤ room here, or ceil made it at most room + s − 1 and it started inside.
    let reach = (out - 1).checked_mul(s).and_then(|v| v.checked_add(span)).ok_or_else(too_big)?;
    Ok((out, reach.saturating_sub(padded)))
}

/// Each adaptive window along one dim as `(start, len)`: PyTorch's `⌊i·in/out⌋ .. ⌈(i+1)·in/out⌉`.
pub(crate) fn adaptive_windows(op: &'static str, out: usize, input: usize) -> Result<Vec<(usize, usize)>> {
    let mut v = Vec::new();
    v.try_reserve_exact(out)
        .map_err(|_| Error::OutOfMemory { op, msg: format!("{out} output positions do not fit in memory") })?;
    for i in 0..out {
        // In u128: (i + 1)·input may pass usize when both are large.
        let (iu, n, o) = (i as u128, input as u128, out as u128);
        let start = (iu * n / o) as usize;
        let end = ((iu + 1) * n).div_ceil(o) as usize;
        v.push((start, end - start));
    }
    Ok(v)
}

/// The divisor of each average-pooling window along one dim (PyTorch's `avg_pool2d` rule).
fn avg_divisors(input: usize, out: usize, k: usize, s: usize, p: usize, include_pad: bool) -> Vec<usize> {
    (0..out)
        .map(|i| {
            // window_len bounds every start by input + p, so these fit.
            let start = (i * s) as i128 - p as i128;
            let end = (start + k as i128).min((input + p) as i128);
            let len = if include_pad { end - start } else { end.min(input as i128) - start.max(0) };
            len.max(1) as usize
        })
        .collect()
}

/// A flat position `row·w + col` for every output position, as an i32 tensor `[rows, cols]`.
fn positions(op: &'static str, rows: &[i64], cols: &[i64], w: usize, like: &Tensor) -> Result<Tensor> {
    let mut v: Vec<i32> = Vec::new();
    let oom = || Error::OutOfMemory {
        op,
        msg: format!("{}×{} index positions do not fit in memory", rows.len(), cols.len()),
    };
    v.try_reserve_exact(rows.len().checked_mul(cols.len()).ok_or_else(oom)?).map_err(|_| oom())?;
    for &r in rows {
        for &c in cols {
            let flat = r * w as i64 + c;
            v.push(i32::try_from(flat).map_err(|_| {
                Error::invalid(op, format!("indices into input {:?} do not fit 32 bits", like.shape()))
            })?);
        }
    }
    Tensor::from_vec(v, &[rows.len(), cols.len()], like.device())
}

/// `base + (tap / kw)·row_step + (tap % kw)·col_step` as u32: the input position each window's
/// argmax tap reads (all i32 elementwise ops, so they fuse).
fn tap_positions(tap: &Tensor, base: &Tensor, kw: usize, row_step: usize, col_step: usize) -> Result<Tensor> {
    let tap = tap.to_dtype(DType::I32)?;
    let rows = tap.div_scalar(kw as f64)?.mul_scalar(row_step as f64)?;
    let cols = tap.rem_scalar(kw as f64)?.mul_scalar(col_step as f64)?;
    (&(base + &rows)? + &cols)?.to_dtype(DType::U32)
}

impl Tensor {
    fn check_rank(&self, op: &'static str, rank: usize, names: &str) -> Result<()> {
        if self.rank() != rank {
            return Err(Error::shape(op, format!("expects {names} input, got {:?}", self.shape())));
        }
        Ok(())
    }

    /// Windows as `[n, c, kh·kw, oh, ow]`; positions outside the input read `fill`.
    #[allow(clippy::too_many_arguments)]
    fn pool_cols(
        &self,
        op: &'static str,
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
        d: (usize, usize),
        ceil: bool,
        fill: f64,
    ) -> Result<Tensor> {
        self.check_rank(op, 4, "[n, c, h, w]")?;
        let (n, c, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        let (oh, eh) = window_len(op, self.shape(), h, k.0, s.0, p.0, d.0, ceil)?;
        let (ow, ew) = window_len(op, self.shape(), w, k.1, s.1, p.1, d.1, ceil)?;
        let flat = self.reshape(&[n * c, 1, h, w])?;
        let flat = if eh > 0 || ew > 0 { flat.pad(&[(0, eh), (0, ew)], fill)? } else { flat };
        let geo =
            ConvGeometry { n: n * c, c: 1, h: h + eh, w: w + ew, kh: k.0, kw: k.1, stride: s, padding: p, dilation: d };
        if geo.out_h() != Some(oh) || geo.out_w() != Some(ow) {
            return Err(Error::invalid(op, format!("internal: windows {geo:?} disagree with output {oh}×{ow}")));
        }
        let cols = flat.im2col(&geo, fill)?;
        cols.reshape(&[n, c, cols.shape()[1], oh, ow])
    }

    /// One kernel reads each window once and writes its max and its tap (`ki·kw + kj`, u32),
    /// with no window buffer; the gradient needs only the taps, not the input or the windows,
    /// as PyTorch keeps its indices, and sends each output's gradient to its tap in one pass
    /// over the input's pixels (max_pool_backward, a gather: no zero fill, no scatter).
    /// Integer inputs take the windows path (no gradient there).
    fn max_pool(&self, op: &'static str, o: MaxPool2dOptions, with_indices: bool) -> Result<(Tensor, Option<Tensor>)> {
        let (values, tap) = if self.dtype().is_float() {
            self.max_pool_taps(op, o)?
        } else {
            let cols = self.pool_cols(op, o.kernel, o.stride, o.padding, o.dilation, o.ceil_mode, f64::NEG_INFINITY)?;
            let tap = if with_indices { Some(cols.argmax(2, false)?) } else { None };
            (cols.max(&[2], false)?, tap)
        };
        let Some(tap) = tap.filter(|_| with_indices) else { return Ok((values, None)) };
        let (oh, ow, w) = (values.shape()[2], values.shape()[3], self.shape()[3]);
        let rows: Vec<i64> = (0..oh).map(|i| (i * o.stride.0) as i64 - o.padding.0 as i64).collect();
        let cols_at: Vec<i64> = (0..ow).map(|j| (j * o.stride.1) as i64 - o.padding.1 as i64).collect();
        let last = (self.shape()[2] as i64) * w as i64;
        i32::try_from(last)
            .map_err(|_| Error::invalid(op, format!("indices into input {:?} do not fit 32 bits", self.shape())))?;
        let base = positions(op, &rows, &cols_at, w, self)?;
        let idx = tap_positions(&tap, &base, o.kernel.1, o.dilation.0 * w, o.dilation.1)?;
        Ok((values, Some(idx)))
    }

    /// Float max pooling through the backend's `max_pool`: the values (with max pooling's
    /// gradient) and the taps. A ceil-mode overhang is read as padding: the input grows by −∞
    /// rows and columns first, and the gradient is cut back to the input.
    fn max_pool_taps(&self, op: &'static str, o: MaxPool2dOptions) -> Result<(Tensor, Option<Tensor>)> {
        self.check_rank(op, 4, "[n, c, h, w]")?;
        let (n, c, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        let (oh, eh) = window_len(op, self.shape(), h, o.kernel.0, o.stride.0, o.padding.0, o.dilation.0, o.ceil_mode)?;
        let (ow, ew) = window_len(op, self.shape(), w, o.kernel.1, o.stride.1, o.padding.1, o.dilation.1, o.ceil_mode)?;
        let x = if eh > 0 || ew > 0 {
            crate::no_grad(|| self.pad(&[(0, eh), (0, ew)], f64::NEG_INFINITY))?
        } else {
            self.clone()
        };
        let (kh, kw) = o.kernel;
        let geo = ConvGeometry {
            n,
            c,
            h: h + eh,
            w: w + ew,
            kh,
            kw,
            stride: o.stride,
            padding: o.padding,
            dilation: o.dilation,
        };
        if geo.out_h() != Some(oh) || geo.out_w() != Some(ow) {
            return Err(Error::invalid(op, format!("internal: windows {geo:?} disagree with output {oh}×{ow}")));
        }
        let (values, taps) = x.storage().max_pool(x.layout(), &geo)?;
        drop(x);
        let taps = Tensor::leaf(taps, &[n, c, oh, ow], self.device());
        let saved = taps.clone();
        let values = Tensor::from_op(values, &[n, c, oh, ow], self.device(), op, &[self], move |g| {
            let grad = g.storage().max_pool_backward(g.layout(), &saved.storage(), saved.layout(), &geo)?;
            let grad = Tensor::leaf(grad, &[n, c, h + eh, w + ew], g.device());
            if (eh, ew) == (0, 0) {
                return Ok(vec![Some(grad)]);
            }
            Ok(vec![Some(grad.narrow(2, 0, h)?.narrow(3, 0, w)?.contiguous()?)])
        })?;
        Ok((values, Some(taps)))
    }

    fn avg_pool(&self, op: &'static str, o: AvgPool2dOptions) -> Result<Tensor> {
        if o.divisor_override == Some(0) {
            return Err(Error::invalid(op, "divisor_override must be positive"));
        }
        let cols = self.pool_cols(op, o.kernel, o.stride, o.padding, (1, 1), o.ceil_mode, 0.0)?;
        let sums = cols.sum(&[2], false)?;
        if let Some(d) = o.divisor_override {
            return sums.div_scalar(d as f64);
        }
        let (h, w, oh, ow) = (self.shape()[2], self.shape()[3], sums.shape()[2], sums.shape()[3]);
        let rows = avg_divisors(h, oh, o.kernel.0, o.stride.0, o.padding.0, o.count_include_pad);
        let cols = avg_divisors(w, ow, o.kernel.1, o.stride.1, o.padding.1, o.count_include_pad);
        if rows.iter().all(|&r| r == rows[0]) && cols.iter().all(|&c| c == cols[0]) {
            return sums.div_scalar((rows[0] * cols[0]) as f64);
        }
        // Windows that cover less (padding not counted, or a ceil-mode overhang) divide by less.
        let div: Vec<f64> = rows.iter().flat_map(|&r| cols.iter().map(move |&c| (r * c) as f64)).collect();
        let div = Tensor::from_host(HostData::from_f64(&div, self.dtype()), &[oh, ow], self.device())?;
        &sums / &div
    }

    /// 2-D max pooling (padding reads −∞). `stride` defaults to the kernel in PyTorch; pass it.
    /// [`max_pool2d_opts`](Self::max_pool2d_opts) has dilation and ceil mode.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::arange(0.0, 16.0, 1.0, &Device::cpu()).unwrap().reshape(&[1, 1, 4, 4]).unwrap();
    /// let y = x.max_pool2d((2, 2), (2, 2), (0, 0)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![5.0, 7.0, 13.0, 15.0]);
    /// ```
    pub fn max_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        self.max_pool2d_opts(MaxPool2dOptions { kernel, stride, padding, dilation: (1, 1), ceil_mode: false })
    }

    /// 2-D max pooling over `[n, c, h, w]` with all of PyTorch's options.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device, MaxPool2dOptions};
    /// let x = Tensor::arange(0.0, 9.0, 1.0, &Device::cpu()).unwrap().reshape(&[1, 1, 3, 3]).unwrap();
    /// let o = MaxPool2dOptions { ceil_mode: true, ..MaxPool2dOptions::new((2, 2)) };
    /// assert_eq!(x.max_pool2d_opts(o).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 5.0, 7.0, 8.0]);
    /// ```
    pub fn max_pool2d_opts(&self, o: MaxPool2dOptions) -> Result<Tensor> {
        Ok(self.max_pool("max_pool2d", o, false)?.0)
    }

    /// [`max_pool2d_opts`](Self::max_pool2d_opts) and, for each output, the u32 position
    /// `row·w + col` of its max in the input plane (PyTorch's `return_indices=True`; the first
    /// of ties).
    pub fn max_pool2d_with_indices(&self, o: MaxPool2dOptions) -> Result<(Tensor, Tensor)> {
        let (v, i) = self.max_pool("max_pool2d", o, true)?;
        Ok((v, i.ok_or_else(|| Error::invalid("max_pool2d", "internal: no indices"))?))
    }

    /// 1-D max pooling over `[n, c, l]`.
    pub fn max_pool1d(&self, o: MaxPool1dOptions) -> Result<Tensor> {
        Ok(self.max_pool1d_inner(o, false)?.0)
    }

    /// [`max_pool1d`](Self::max_pool1d) and the u32 position of each max along `l`.
    pub fn max_pool1d_with_indices(&self, o: MaxPool1dOptions) -> Result<(Tensor, Tensor)> {
        let (v, i) = self.max_pool1d_inner(o, true)?;
        Ok((v, i.ok_or_else(|| Error::invalid("max_pool1d", "internal: no indices"))?))
    }

    fn max_pool1d_inner(&self, o: MaxPool1dOptions, with_indices: bool) -> Result<(Tensor, Option<Tensor>)> {
        self.check_rank("max_pool1d", 3, "[n, c, l]")?;
        let (v, i) = self.unsqueeze(2)?.max_pool("max_pool1d", o.to_2d(), with_indices)?;
        Ok((v.squeeze(2)?, i.map(|i| i.squeeze(2)).transpose()?))
    }

    /// 2-D average pooling (padding counts as zeros, PyTorch's `count_include_pad=True`).
    /// [`avg_pool2d_opts`](Self::avg_pool2d_opts) has the other options.
    pub fn avg_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        self.avg_pool2d_opts(AvgPool2dOptions { stride, padding, ..AvgPool2dOptions::new(kernel) })
    }

    /// 2-D average pooling over `[n, c, h, w]` with all of PyTorch's options.
    pub fn avg_pool2d_opts(&self, o: AvgPool2dOptions) -> Result<Tensor> {
        self.avg_pool("avg_pool2d", o)
    }

    /// 1-D average pooling over `[n, c, l]`.
    pub fn avg_pool1d(&self, o: AvgPool1dOptions) -> Result<Tensor> {
        self.check_rank("avg_pool1d", 3, "[n, c, l]")?;
        self.unsqueeze(2)?.avg_pool("avg_pool1d", o.to_2d())?.squeeze(2)
    }

    /// Average pooling to a fixed output size with PyTorch's window rule
    /// (`start = ⌊i·in/out⌋`, `end = ⌈(i+1)·in/out⌉`), as two small matrix products.
    pub fn adaptive_avg_pool2d(&self, out: (usize, usize)) -> Result<Tensor> {
        self.adaptive_check("adaptive_avg_pool2d", 4, out)?;
        let (h, w) = (self.shape()[2], self.shape()[3]);
        let ph = pooling_matrix(out.0, h, self)?; // [oh, h]
        let pw = pooling_matrix(out.1, w, self)?; // [ow, w]
        ph.matmul(self)?.matmul(&pw.t()?)
    }

    /// [`adaptive_avg_pool2d`](Self::adaptive_avg_pool2d) over `[n, c, l]`.
    pub fn adaptive_avg_pool1d(&self, out: usize) -> Result<Tensor> {
        self.adaptive_check("adaptive_avg_pool1d", 3, (1, out))?;
        self.matmul(&pooling_matrix(out, self.shape()[2], self)?.t()?)
    }

    /// Max pooling to a fixed output size (PyTorch's adaptive window rule).
    pub fn adaptive_max_pool2d(&self, out: (usize, usize)) -> Result<Tensor> {
        self.adaptive_check("adaptive_max_pool2d", 4, out)?;
        Ok(self.adaptive_max("adaptive_max_pool2d", out, false)?.0)
    }

    /// [`adaptive_max_pool2d`](Self::adaptive_max_pool2d) and the u32 position `row·w + col`
    /// of each max in the input plane.
    pub fn adaptive_max_pool2d_with_indices(&self, out: (usize, usize)) -> Result<(Tensor, Tensor)> {
        const OP: &str = "adaptive_max_pool2d";
        self.adaptive_check(OP, 4, out)?;
        let (v, i) = self.adaptive_max(OP, out, true)?;
        Ok((v, i.ok_or_else(|| Error::invalid(OP, "internal: no indices"))?))
    }

    /// Adaptive max pooling over `[n, c, l]`.
    pub fn adaptive_max_pool1d(&self, out: usize) -> Result<Tensor> {
        self.adaptive_check("adaptive_max_pool1d", 3, (1, out))?;
        self.unsqueeze(2)?.adaptive_max("adaptive_max_pool1d", (1, out), false)?.0.squeeze(2)
    }

    /// [`adaptive_max_pool1d`](Self::adaptive_max_pool1d) and the u32 position of each max.
    pub fn adaptive_max_pool1d_with_indices(&self, out: usize) -> Result<(Tensor, Tensor)> {
        const OP: &str = "adaptive_max_pool1d";
        self.adaptive_check(OP, 3, (1, out))?;
        let (v, i) = self.unsqueeze(2)?.adaptive_max(OP, (1, out), true)?;
        Ok((v.squeeze(2)?, i.ok_or_else(|| Error::invalid(OP, "internal: no indices"))?.squeeze(2)?))
    }

    fn adaptive_check(&self, op: &'static str, rank: usize, out: (usize, usize)) -> Result<()> {
        if self.rank() != rank || out.0 == 0 || out.1 == 0 {
            return Err(Error::shape(op, format!("input {:?} (needs {rank} dims), output size {out:?}", self.shape())));
        }
        if self.shape()[2..].contains(&0) {
            return Err(Error::shape(
                op,
                format!("input {:?} has an empty spatial dim (as PyTorch refuses)", self.shape()),
            ));
        }
        Ok(())
    }

    /// Gathers every window's elements into `[n, c, oh, ow, kh·kw]` with one index_select (a
    /// window shorter than the longest repeats its first element, which changes neither the max
    /// nor, through the tie sharing of `max`, the gradient) and reduces the last dim.
    fn adaptive_max(
        &self,
        op: &'static str,
        out: (usize, usize),
        with_indices: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (n, c, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        let hs = adaptive_windows(op, out.0, h)?;
        let ws = adaptive_windows(op, out.1, w)?;
        let kh = hs.iter().map(|p| p.1).max().unwrap_or(1);
        let kw = ws.iter().map(|p| p.1).max().unwrap_or(1);
        let oom = || Error::OutOfMemory {
            op,
            msg: format!("windows of input {:?} pooled to {out:?} do not fit in memory", self.shape()),
        };
        let len = kiln_backend::checked_numel(&[out.0, out.1, kh, kw]).ok_or_else(oom)?;
        if h.checked_mul(w).is_none_or(|p| p > u32::MAX as usize) {
            return Err(Error::invalid(op, format!("indices into input {:?} do not fit 32 bits", self.shape())));
        }
        let mut table: Vec<u32> = Vec::new();
        table.try_reserve_exact(len).map_err(|_| oom())?;
        for &(r0, rn) in &hs {
            for &(c0, cn) in &ws {
                for a in 0..kh {
                    for b in 0..kw {
                        let (r, col) = if a < rn && b < cn { (r0 + a, c0 + b) } else { (r0, c0) };
                        table.push((r * w + col) as u32);
                    }
                }
            }
        }
        let ids = Tensor::from_vec(table, &[len], self.device())?;
        let picked = self.reshape(&[n * c, h * w])?.index_select(1, &ids)?.reshape(&[n, c, out.0, out.1, kh * kw])?;
        let values = picked.max(&[4], false)?;
        if !with_indices {
            return Ok((values, None));
        }
        let rows: Vec<i64> = hs.iter().map(|p| p.0 as i64).collect();
        let cols: Vec<i64> = ws.iter().map(|p| p.0 as i64).collect();
        let base = positions(op, &rows, &cols, w, self)?;
        let idx = tap_positions(&picked.argmax(4, false)?, &base, kw, w, 1)?;
        Ok((values, Some(idx)))
    }
}

fn pooling_matrix(out: usize, input: usize, like: &Tensor) -> Result<Tensor> {
    let oom = || Error::OutOfMemory {
        op: "adaptive_avg_pool2d",
        msg: format!("a {out}×{input} pooling matrix for input {:?} does not fit in memory", like.shape()),
    };
    let count = out.checked_mul(input).ok_or_else(oom)?;
    let mut m: Vec<f64> = Vec::new();
    m.try_reserve_exact(count).map_err(|_| oom())?;
    m.resize(count, 0.0);
    for (i, (start, len)) in adaptive_windows("adaptive_avg_pool2d", out, input)?.into_iter().enumerate() {
        for j in start..start + len {
            m[i * input + j] = 1.0 / len as f64;
        }
    }
    Tensor::from_host(HostData::from_f64(&m, like.dtype()), &[out, input], like.device())
}
