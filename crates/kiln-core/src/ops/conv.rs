//! Convolution and transposed convolution, built on im2col (unfold), its adjoint col2im and
//! matrix products, so their gradients come from the gradients of those primitives.

use crate::Tensor;
use kiln_backend::{ConvGeometry, DType, Error, Result};

/// Stride, padding, dilation and groups of a convolution (PyTorch's defaults: 1, 0, 1, 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions { stride: (1, 1), padding: (0, 0), dilation: (1, 1), groups: 1 }
    }
}

/// Stride, padding, output padding, dilation and groups of a transposed convolution
/// (PyTorch's defaults: 1, 0, 0, 1, 1). `output_padding` adds rows and columns on one side of
/// the output and must be smaller than the stride or the dilation, as in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dOptions {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub output_padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for ConvTranspose2dOptions {
    fn default() -> Self {
        ConvTranspose2dOptions { stride: (1, 1), padding: (0, 0), output_padding: (0, 0), dilation: (1, 1), groups: 1 }
    }
}

/// [`ConvTranspose2dOptions`] for one spatial dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose1dOptions {
    pub stride: usize,
    pub padding: usize,
    pub output_padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for ConvTranspose1dOptions {
    fn default() -> Self {
        ConvTranspose1dOptions { stride: 1, padding: 0, output_padding: 0, dilation: 1, groups: 1 }
    }
}

/// A transposed convolution's output length: `(in − 1)·s − 2p + d·(k − 1) + op + 1`, or `None`
/// when it is not positive or overflows.
fn transposed_len(input: usize, k: usize, s: usize, p: usize, d: usize, op: usize) -> Option<usize> {
    let grown =
        input.checked_sub(1)?.checked_mul(s)?.checked_add(d.checked_mul(k.checked_sub(1)?)?)?.checked_add(op + 1)?;
    grown.checked_sub(p.checked_mul(2)?).filter(|&n| n > 0)
}

/// The weight and the columns as the operands of one product: `[o, k] · [n, k, L]`, or per
/// group `[g, o/g, k] · [n, g, k, L]`.
fn group_views(w: &Tensor, cols: &Tensor, geo: &ConvGeometry, groups: usize) -> Result<(Tensor, Tensor)> {
    let (o, l) = (w.shape()[0], cols.shape()[2]);
    let k = cols.shape()[1] / groups;
    if groups == 1 {
        Ok((w.reshape(&[o, k])?, cols.clone()))
    } else {
        Ok((w.reshape(&[groups, o / groups, k])?, cols.reshape(&[geo.n, groups, k, l])?))
    }
}

impl Tensor {
    fn geometry(
        &self,
        op: &'static str,
        k: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
    ) -> Result<ConvGeometry> {
        if self.rank() != 4 {
            return Err(Error::shape(op, format!("expects [n, c, h, w] input, got {:?}", self.shape())));
        }
        let s = self.shape();
        let g = ConvGeometry { n: s[0], c: s[1], h: s[2], w: s[3], kh: k.0, kw: k.1, stride, padding, dilation };
        if k.0 == 0 || k.1 == 0 || stride.0 == 0 || stride.1 == 0 || dilation.0 == 0 || dilation.1 == 0 {
            return Err(Error::invalid(
                op,
                format!("kernel {k:?}, stride {stride:?} and dilation {dilation:?} must be positive"),
            ));
        }
        if g.out_h().is_none() || g.out_w().is_none() {
            return Err(Error::shape(
                op,
                format!("kernel {k:?} (dilation {dilation:?}) larger than padded input {:?} (padding {padding:?})", s),
            ));
        }
        Ok(g)
    }

    /// Unfolds sliding windows: `[n, c, h, w] → [n, c·kh·kw, oh·ow]` (pad cells read `pad_value`).
    pub fn im2col(&self, g: &ConvGeometry, pad_value: f64) -> Result<Tensor> {
        let shape = g.cols_shape().ok_or_else(|| Error::shape("im2col", format!("{g:?}")))?;
        let out = self.storage().im2col(self.layout(), g, pad_value)?;
        let geo = *g;
        Tensor::from_op(out, &shape, self.device(), "im2col", &[self], move |grad| Ok(vec![Some(grad.col2im(&geo)?)]))
    }

    /// The adjoint of [`im2col`](Self::im2col): sums columns back into `[n, c, h, w]`.
    pub fn col2im(&self, g: &ConvGeometry) -> Result<Tensor> {
        let out = self.storage().col2im(self.layout(), g)?;
        let geo = *g;
        Tensor::from_op(out, &[g.n, g.c, g.h, g.w], self.device(), "col2im", &[self], move |grad| {
            Ok(vec![Some(grad.im2col(&geo, 0.0)?)])
        })
    }

    /// 2-D convolution (cross-correlation, as PyTorch): input `[n, c, h, w]`, weight
    /// `[o, c/groups, kh, kw]`, optional bias `[o]`.
    ///
    /// ```
    /// # use kiln_core::{Conv2dOptions, Device, Tensor};
    /// let d = Device::cpu();
    /// let x = Tensor::ones(&[1, 1, 3, 3], &d).unwrap();
    /// let w = Tensor::ones(&[1, 1, 2, 2], &d).unwrap();
    /// let y = x.conv2d(&w, None, Conv2dOptions::default()).unwrap();
    /// assert_eq!((y.shape(), y.to_vec::<f32>().unwrap()), (&[1usize, 1, 2, 2][..], vec![4.0; 4]));
    /// ```
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, opts: Conv2dOptions) -> Result<Tensor> {
        if weight.rank() != 4 {
            return Err(Error::shape(
                "conv2d",
                format!("weight must be [o, c/groups, kh, kw], got {:?}", weight.shape()),
            ));
        }
        let (o, cg, kh, kw) = (weight.shape()[0], weight.shape()[1], weight.shape()[2], weight.shape()[3]);
        let geo = self.geometry("conv2d", (kh, kw), opts.stride, opts.padding, opts.dilation)?;
        let groups = opts.groups;
        if groups == 0 || geo.c % groups != 0 || o % groups != 0 || cg * groups != geo.c {
            return Err(Error::shape(
                "conv2d",
                format!("input {:?}, weight {:?} and groups {groups} do not agree", self.shape(), weight.shape()),
            ));
        }
        let (oh, ow) = (geo.out_h().unwrap_or(0), geo.out_w().unwrap_or(0));
        let out = self.im2col_product(weight, &geo, groups)?.reshape(&[geo.n, o, oh, ow])?;
        match bias {
            Some(b) => {
                if b.shape() != [o] {
                    return Err(Error::shape("conv2d", format!("bias {:?} for {o} output channels", b.shape())));
                }
                &out + &b.reshape(&[1, o, 1, 1])?
            }
            None => Ok(out),
        }
    }

    /// `weight · im2col(self)` (`[n, o, oh·ow]`, per group), the product of [`conv2d`](Self::conv2d),
    /// as one autograd node that saves the input and the weight rather than the columns: the
    /// columns are `kh·kw` times the input (conv 32→64 3×3 at batch 128 on 28×28: 116 MB against
    /// 13 MB), and keeping them until backward made them most of a CNN's memory. Backward builds
    /// them again for the weight's gradient (one im2col, a copy: a fraction of the products
    /// around it) and drops them before the input's gradient needs its own columns-sized buffer,
    /// so at most one such buffer is alive at a time, as with PyTorch's cuDNN convolutions that
    /// keep only the input.
    ///
    /// Under autocast the input is cast before im2col (the columns are built in f16, half the
    /// bytes, the same values) and the product comes back as f32, as `matmul` does.
    fn im2col_product(&self, weight: &Tensor, geo: &ConvGeometry, groups: usize) -> Result<Tensor> {
        let low = crate::autocast::product_dtype(weight, self);
        let (x, w, geo) = (self.clone(), weight.clone(), *geo);
        let product = move |x: &Tensor, w: &Tensor| -> Result<Tensor> {
            let (x, w) = match low {
                Some(low) => (x.to_dtype(low)?, w.to_dtype(low)?),
                None => (x.clone(), w.clone()),
            };
            let cols = x.im2col(&geo, 0.0)?;
            let out = group_views(&w, &cols, &geo, groups)?;
            let out = out.0.matmul(&out.1)?;
            let out = out.reshape(&[geo.n, w.shape()[0], out.shape()[out.rank() - 1]])?;
            if low.is_some() { out.to_dtype(DType::F32) } else { Ok(out) }
        };
        let out = crate::no_grad(|| product(self, weight))?;
        let node = crate::autograd::node("conv2d", &[self, weight], move |g| {
            let cast = |t: &Tensor| match low {
                Some(low) => t.to_dtype(low),
                None => Ok(t.clone()),
            };
            let (xl, wl) = (cast(&x)?, cast(&w)?);
            let (o, l) = (w.shape()[0], g.shape()[2]); // g: [n, o, oh·ow], as the product
            let g = cast(g)?;
            let gw = if w.requires_grad() {
                let cols = xl.im2col(&geo, 0.0)?;
                let (wv, colsv) = group_views(&wl, &cols, &geo, groups)?;
                let gv = g.reshape(&[&[geo.n][..], &wv.shape()[..wv.rank() - 1], &[l]].concat())?;
                let gw = gv.matmul(&colsv.transpose(-1, -2)?)?.sum(&[0], false)?;
                Some(gw.reshape(w.shape())?.to_dtype(w.dtype())?)
            } else {
                None
            };
            let gx = if x.requires_grad() {
                let cols_shape = geo.cols_shape().ok_or_else(|| Error::shape("conv2d", format!("{geo:?}")))?;
                let k = cols_shape[1] / groups;
                let (wv, gv) = if groups == 1 {
                    (wl.reshape(&[o, k])?, g.clone())
                } else {
                    (wl.reshape(&[groups, o / groups, k])?, g.reshape(&[geo.n, groups, o / groups, l])?)
                };
                let gcols = wv.transpose(-1, -2)?.matmul(&gv)?.reshape(&cols_shape)?;
                Some(gcols.to_dtype(x.dtype())?.col2im(&geo)?)
            } else {
                None
            };
            Ok(vec![gx, gw])
        });
        let t = Tensor::build(out.storage(), out.layout().clone(), self.device().clone(), node);
        crate::anomaly::check("conv2d", "output", &t)?;
        Ok(t)
    }

    /// 1-D convolution: input `[n, c, l]`, weight `[o, c/groups, k]`.
    pub fn conv1d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Result<Tensor> {
        if self.rank() != 3 || weight.rank() != 3 {
            return Err(Error::shape(
                "conv1d",
                format!(
                    "expects [n, c, l] input and [o, c/g, k] weight, got {:?} and {:?}",
                    self.shape(),
                    weight.shape()
                ),
            ));
        }
        let opts = Conv2dOptions { stride: (1, stride), padding: (0, padding), dilation: (1, dilation), groups };
        self.unsqueeze(2)?.conv2d(&weight.unsqueeze(2)?, bias, opts)?.squeeze(2)
    }

    /// Transposed 2-D convolution (the gradient of [`conv2d`](Self::conv2d) with respect to its
    /// input), PyTorch's `conv_transpose2d`: input `[n, c_in, h, w]`, weight
    /// `[c_in, c_out/groups, kh, kw]`, optional bias `[c_out]`, output height
    /// `(h − 1)·s − 2p + d·(kh − 1) + output_padding + 1` (and likewise the width).
    ///
    /// One (grouped) matrix product gives every input pixel's `c_out·kh·kw` contributions, and
    /// col2im sums them into place: the exact adjoint of the im2col convolution.
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        opts: ConvTranspose2dOptions,
    ) -> Result<Tensor> {
        const OP: &str = "conv_transpose2d";
        if self.rank() != 4 || weight.rank() != 4 {
            return Err(Error::shape(
                OP,
                format!(
                    "expects [n, c_in, h, w] input and [c_in, c_out/groups, kh, kw] weight, got {:?} and {:?}",
                    self.shape(),
                    weight.shape()
                ),
            ));
        }
        let (n, cin, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        let (cg, kh, kw) = (weight.shape()[1], weight.shape()[2], weight.shape()[3]);
        let ConvTranspose2dOptions { stride, padding, output_padding, dilation, groups } = opts;
        if groups == 0 || weight.shape()[0] != cin || !cin.is_multiple_of(groups) {
            return Err(Error::shape(
                OP,
                format!("input {:?}, weight {:?} and groups {groups} do not agree", self.shape(), weight.shape()),
            ));
        }
        if [stride.0, stride.1, dilation.0, dilation.1, kh, kw].contains(&0) {
            return Err(Error::invalid(
                OP,
                format!("kernel ({kh}, {kw}), stride {stride:?} and dilation {dilation:?} must be positive"),
            ));
        }
        if output_padding.0 >= stride.0.max(dilation.0) || output_padding.1 >= stride.1.max(dilation.1) {
            return Err(Error::invalid(
                OP,
                format!(
                    "output_padding {output_padding:?} must be smaller than stride {stride:?} or dilation {dilation:?}"
                ),
            ));
        }
        let cout = cg
            .checked_mul(groups)
            .ok_or_else(|| Error::shape(OP, format!("weight {:?} with groups {groups}", weight.shape())))?;
        let oh = transposed_len(h, kh, stride.0, padding.0, dilation.0, output_padding.0);
        let ow = transposed_len(w, kw, stride.1, padding.1, dilation.1, output_padding.1);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(Error::shape(
                OP,
                format!(
                    "input {:?}, weight {:?} and {opts:?} give an empty or too large output",
                    self.shape(),
                    weight.shape()
                ),
            ));
        };
        if let Some(b) = bias
            && b.shape() != [cout]
        {
            return Err(Error::shape(OP, format!("bias {:?} for {cout} output channels", b.shape())));
        }
        let geo = ConvGeometry { n, c: cout, h: oh, w: ow, kh, kw, stride, padding, dilation };
        let shape = geo.cols_shape().ok_or_else(|| Error::shape(OP, format!("{geo:?} does not fit in memory")))?;
        // The convolution of this geometry maps [oh, ow] back onto [gh, gw]: [h, w], or one more
        // row or column when output_padding reaches a stride; those read zeros.
        let (gh, gw) = (geo.out_h().unwrap_or(h), geo.out_w().unwrap_or(w));
        if gh < h || gw < w {
            return Err(Error::invalid(OP, format!("internal: {geo:?} maps back onto {gh}×{gw}, not {h}×{w}")));
        }
        let x = if (gh, gw) != (h, w) { self.pad(&[(0, gh - h), (0, gw - w)], 0.0)? } else { self.clone() };
        let cols = if groups == 1 {
            weight.reshape(&[cin, cout * kh * kw])?.t()?.matmul(&x.reshape(&[n, cin, gh * gw])?)?
        } else {
            let wg = weight.reshape(&[groups, cin / groups, cg * kh * kw])?.transpose(1, 2)?; // [g, cg·kh·kw, cin/g]
            wg.matmul(&x.reshape(&[n, groups, cin / groups, gh * gw])?)?.reshape(&shape)?
        };
        let y = cols.contiguous()?.col2im(&geo)?;
        match bias {
            Some(b) => &y + &b.reshape(&[1, cout, 1, 1])?,
            None => Ok(y),
        }
    }

    /// Transposed 1-D convolution: input `[n, c_in, l]`, weight `[c_in, c_out/groups, k]`.
    pub fn conv_transpose1d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        opts: ConvTranspose1dOptions,
    ) -> Result<Tensor> {
        if self.rank() != 3 || weight.rank() != 3 {
            return Err(Error::shape(
                "conv_transpose1d",
                format!(
                    "expects [n, c_in, l] input and [c_in, c_out/groups, k] weight, got {:?} and {:?}",
                    self.shape(),
                    weight.shape()
                ),
            ));
        }
        let o = opts;
        let opts = ConvTranspose2dOptions {
            stride: (1, o.stride),
            padding: (0, o.padding),
            output_padding: (0, o.output_padding),
            dilation: (1, o.dilation),
            groups: o.groups,
        };
        self.unsqueeze(2)?.conv_transpose2d(&weight.unsqueeze(2)?, bias, opts)?.squeeze(2)
    }
}
