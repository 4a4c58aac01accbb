//! Convolution and pooling, built on im2col (unfold) and matrix products, so their gradients
//! come from the gradients of those two primitives.

use crate::Tensor;
use kiln_backend::{ConvGeometry, Error, Result};

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

impl Tensor {
    fn geometry(&self, op: &'static str, k: (usize, usize), stride: (usize, usize), padding: (usize, usize), dilation: (usize, usize)) -> Result<ConvGeometry> {
        if self.rank() != 4 {
            return Err(Error::shape(op, format!("expects [n, c, h, w] input, got {:?}", self.shape())));
        }
        let s = self.shape();
        let g = ConvGeometry { n: s[0], c: s[1], h: s[2], w: s[3], kh: k.0, kw: k.1, stride, padding, dilation };
        if k.0 == 0 || k.1 == 0 || stride.0 == 0 || stride.1 == 0 || dilation.0 == 0 || dilation.1 == 0 {
            return Err(Error::invalid(op, format!("kernel {k:?}, stride {stride:?} and dilation {dilation:?} must be positive")));
        }
        if g.out_h().is_none() || g.out_w().is_none() {
            return Err(Error::shape(op, format!("kernel {k:?} (dilation {dilation:?}) larger than padded input {:?} (padding {padding:?})", s)));
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
            return Err(Error::shape("conv2d", format!("weight must be [o, c/groups, kh, kw], got {:?}", weight.shape())));
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
        let cols = self.im2col(&geo, 0.0)?; // [n, c·kh·kw, L]
        let k = cg * kh * kw;
        let out = if groups == 1 {
            weight.reshape(&[o, k])?.matmul(&cols)?
        } else {
            let cols = cols.reshape(&[geo.n, groups, k, oh * ow])?;
            weight.reshape(&[groups, o / groups, k])?.matmul(&cols)?
        };
        let out = out.reshape(&[geo.n, o, oh, ow])?;
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

    /// 1-D convolution: input `[n, c, l]`, weight `[o, c/groups, k]`.
    pub fn conv1d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize, dilation: usize, groups: usize) -> Result<Tensor> {
        if self.rank() != 3 || weight.rank() != 3 {
            return Err(Error::shape("conv1d", format!("expects [n, c, l] input and [o, c/g, k] weight, got {:?} and {:?}", self.shape(), weight.shape())));
        }
        let opts = Conv2dOptions { stride: (1, stride), padding: (0, padding), dilation: (1, dilation), groups };
        self.unsqueeze(2)?.conv2d(&weight.unsqueeze(2)?, bias, opts)?.squeeze(2)
    }

    /// Windows as `[n, c, kh·kw, oh, ow]` for pooling.
    fn pool_windows(&self, op: &'static str, k: (usize, usize), stride: (usize, usize), padding: (usize, usize), pad_value: f64) -> Result<(Tensor, usize, usize)> {
        let geo = self.geometry(op, k, stride, padding, (1, 1))?;
        if padding.0 * 2 > k.0 || padding.1 * 2 > k.1 {
            return Err(Error::invalid(op, format!("padding {padding:?} must be at most half of kernel {k:?}")));
        }
        let (n, c) = (geo.n, geo.c);
        let flat = self.reshape(&[n * c, 1, geo.h, geo.w])?;
        let g1 = ConvGeometry { n: n * c, c: 1, ..geo };
        let (oh, ow) = (geo.out_h().unwrap_or(0), geo.out_w().unwrap_or(0));
        let cols = flat.im2col(&g1, pad_value)?.reshape(&[n, c, k.0 * k.1, oh, ow])?;
        Ok((cols, oh, ow))
    }

    /// 2-D max pooling (padding reads −inf). `stride` defaults to the kernel in PyTorch; pass it.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::arange(0.0, 16.0, 1.0, &Device::cpu()).unwrap().reshape(&[1, 1, 4, 4]).unwrap();
    /// let y = x.max_pool2d((2, 2), (2, 2), (0, 0)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![5.0, 7.0, 13.0, 15.0]);
    /// ```
    pub fn max_pool2d(&self, kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
        let (cols, _, _) = self.pool_windows("max_pool2d", kernel, stride, padding, f64::NEG_INFINITY)?;
        cols.max(&[2], false)
    }

    /// 2-D average pooling (padding counts as zeros, PyTorch's `count_include_pad=True`).
    pub fn avg_pool2d(&self, kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
        let (cols, _, _) = self.pool_windows("avg_pool2d", kernel, stride, padding, 0.0)?;
        cols.mean(&[2], false)
    }

    /// Average pooling to a fixed output size with PyTorch's window rule
    /// (`start = ⌊i·in/out⌋`, `end = ⌈(i+1)·in/out⌉`), as two small matrix products.
    pub fn adaptive_avg_pool2d(&self, out: (usize, usize)) -> Result<Tensor> {
        if self.rank() != 4 || out.0 == 0 || out.1 == 0 {
            return Err(Error::shape("adaptive_avg_pool2d", format!("input {:?}, output size {out:?}", self.shape())));
        }
        let (h, w) = (self.shape()[2], self.shape()[3]);
        if h == 0 || w == 0 {
            return Err(Error::shape("adaptive_avg_pool2d", format!("input {:?} has an empty image (as PyTorch refuses)", self.shape())));
        }
        let ph = pooling_matrix(out.0, h, self)?; // [oh, h]
        let pw = pooling_matrix(out.1, w, self)?; // [ow, w]
        ph.matmul(self)?.matmul(&pw.t()?)
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
    for i in 0..out {
        // In u128: (i + 1)·input may pass usize when both are large.
        let (iu, n, o) = (i as u128, input as u128, out as u128);
        let start = (iu * n / o) as usize;
        let end = ((iu + 1) * n).div_ceil(o) as usize;
        for j in start..end {
            m[i * input + j] = 1.0 / (end - start) as f64;
        }
    }
    Tensor::from_host(kiln_backend::HostData::from_f64(&m, like.dtype()), &[out, input], like.device())
}
