//! Convolutions: `Conv1d`, `Conv2d` and the transposed `ConvTranspose2d`, with PyTorch's
//! weight layouts, names and initialisation.

use crate::init;
use crate::module::Module;
use kiln_core::{ConvGeometry, Conv2dOptions, Device, Error, Result, Tensor};

/// PyTorch's default for conv weights and biases: both `U(−1/√fan_in, 1/√fan_in)` (the weight
/// through `kaiming_uniform(a = √5)`).
fn conv_params(shape: &[usize], fan_in: usize, bias: bool, bias_len: usize, device: &Device) -> Result<(Tensor, Option<Tensor>)> {
    let weight = init::kaiming_uniform(shape, fan_in, 5f64.sqrt(), device)?;
    let bound = 1.0 / (fan_in as f64).sqrt();
    let bias = if bias { Some(init::uniform(&[bias_len], -bound, bound, device)?) } else { None };
    Ok((weight, bias))
}

fn check_channels(op: &'static str, in_ch: usize, out_ch: usize, groups: usize, kernel: &[usize]) -> Result<()> {
    if groups == 0 || in_ch == 0 || out_ch == 0 || !in_ch.is_multiple_of(groups) || !out_ch.is_multiple_of(groups) {
        return Err(Error::invalid(op, format!("{in_ch} input and {out_ch} output channels must both be positive multiples of groups = {groups}")));
    }
    if kernel.contains(&0) {
        return Err(Error::invalid(op, format!("kernel size {kernel:?} has a zero")));
    }
    Ok(())
}

fn params(weight: &Tensor, bias: &Option<Tensor>) -> Vec<(String, Tensor)> {
    let mut out = vec![("weight".to_string(), weight.clone())];
    if let Some(b) = bias {
        out.push(("bias".to_string(), b.clone()));
    }
    out
}

/// 2-D convolution, PyTorch's `nn.Conv2d`: input `[n, in, h, w]`, weight
/// `[out, in/groups, kh, kw]`, bias `[out]`. Names: `"weight"`, `"bias"`.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{Conv2d, Conv2dOptions, Module};
/// let d = Device::cpu();
/// let conv = Conv2d::new(3, 4, (3, 3), Conv2dOptions { padding: (1, 1), ..Default::default() }, true, &d).unwrap();
/// let x = Tensor::randn(&[2, 3, 8, 8], &d).unwrap();
/// assert_eq!(conv.forward(&x).unwrap().shape(), &[2, 4, 8, 8]);
/// ```
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub opts: Conv2dOptions,
}

impl Conv2d {
    /// A convolution with `kernel = (kh, kw)` and stride / padding / dilation / groups in `opts`.
    pub fn new(in_ch: usize, out_ch: usize, kernel: (usize, usize), opts: Conv2dOptions, bias: bool, device: &Device) -> Result<Conv2d> {
        check_channels("Conv2d::new", in_ch, out_ch, opts.groups, &[kernel.0, kernel.1])?;
        let cg = in_ch / opts.groups;
        let (weight, bias) = conv_params(&[out_ch, cg, kernel.0, kernel.1], cg * kernel.0 * kernel.1, bias, out_ch, device)?;
        Ok(Conv2d { weight, bias, opts })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.opts)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        params(&self.weight, &self.bias)
    }
}

/// 1-D convolution, PyTorch's `nn.Conv1d`: input `[n, in, l]`, weight `[out, in/groups, k]`.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{Conv1d, Module};
/// let d = Device::cpu();
/// // 2 → 6 channels, kernel 3, stride 2, no padding, dilation 1, 2 groups, with bias.
/// let conv = Conv1d::new(2, 6, 3, 2, 0, 1, 2, true, &d).unwrap();
/// let x = Tensor::randn(&[1, 2, 9], &d).unwrap();
/// assert_eq!(conv.forward(&x).unwrap().shape(), &[1, 6, 4]);
/// ```
pub struct Conv1d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Conv1d {
    /// A 1-D convolution (PyTorch's defaults are stride 1, padding 0, dilation 1, groups 1).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Conv1d> {
        check_channels("Conv1d::new", in_ch, out_ch, groups, &[kernel])?;
        if stride == 0 || dilation == 0 {
            return Err(Error::invalid("Conv1d::new", format!("stride {stride} and dilation {dilation} must be positive")));
        }
        let cg = in_ch / groups;
        let (weight, bias) = conv_params(&[out_ch, cg, kernel], cg * kernel, bias, out_ch, device)?;
        Ok(Conv1d { weight, bias, stride, padding, dilation, groups })
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv1d(&self.weight, self.bias.as_ref(), self.stride, self.padding, self.dilation, self.groups)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        params(&self.weight, &self.bias)
    }
}

/// Transposed 2-D convolution (the gradient of `Conv2d` with respect to its input), PyTorch's
/// `nn.ConvTranspose2d` without groups or dilation: input `[n, in, h, w]`, weight
/// `[in, out, kh, kw]`, output `[n, out, (h−1)·s − 2p + kh + op, ...]`.
///
/// Computed as one matrix product `Wᵀ · x` giving every input pixel's `out·kh·kw` contributions,
/// then `col2im` summing them into place: exactly the adjoint of im2col-based convolution.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{ConvTranspose2d, Module};
/// let d = Device::cpu();
/// let up = ConvTranspose2d::new(4, 2, (2, 2), (2, 2), (0, 0), (0, 0), true, &d).unwrap();
/// let x = Tensor::randn(&[1, 4, 5, 5], &d).unwrap();
/// assert_eq!(up.forward(&x).unwrap().shape(), &[1, 2, 10, 10]); // (5 − 1)·2 + 2
/// ```
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub output_padding: (usize, usize),
}

impl ConvTranspose2d {
    /// A transposed convolution. `output_padding` (added to one side of the output) must be
    /// smaller than `stride`, as in PyTorch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        output_padding: (usize, usize),
        bias: bool,
        device: &Device,
    ) -> Result<ConvTranspose2d> {
        check_channels("ConvTranspose2d::new", in_ch, out_ch, 1, &[kernel.0, kernel.1])?;
        if stride.0 == 0 || stride.1 == 0 || output_padding.0 >= stride.0 || output_padding.1 >= stride.1 {
            return Err(Error::invalid(
                "ConvTranspose2d::new",
                format!("stride {stride:?} must be positive and larger than output_padding {output_padding:?}"),
            ));
        }
        // PyTorch computes fan_in from dim 1 of the weight, which for a transposed conv is the
        // output channels.
        let (weight, bias) = conv_params(&[in_ch, out_ch, kernel.0, kernel.1], out_ch * kernel.0 * kernel.1, bias, out_ch, device)?;
        Ok(ConvTranspose2d { weight, bias, stride, padding, output_padding })
    }

    fn out_len(input: usize, k: usize, stride: usize, pad: usize, out_pad: usize) -> Option<usize> {
        ((input.checked_sub(1)? * stride + k + out_pad).checked_sub(2 * pad)).filter(|&n| n > 0)
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "ConvTranspose2d";
        let (cin, cout, kh, kw) = (self.weight.shape()[0], self.weight.shape()[1], self.weight.shape()[2], self.weight.shape()[3]);
        if x.rank() != 4 || x.shape()[1] != cin {
            return Err(Error::shape(OP, format!("input {:?} is not [n, {cin}, h, w]", x.shape())));
        }
        let (n, h, w) = (x.shape()[0], x.shape()[2], x.shape()[3]);
        let oh = Self::out_len(h, kh, self.stride.0, self.padding.0, self.output_padding.0);
        let ow = Self::out_len(w, kw, self.stride.1, self.padding.1, self.output_padding.1);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(Error::shape(OP, format!("input {:?} with padding {:?} gives an empty output", x.shape(), self.padding)));
        };
        let geo = ConvGeometry { n, c: cout, h: oh, w: ow, kh, kw, stride: self.stride, padding: self.padding, dilation: (1, 1) };
        // The forward conv of this geometry must map [oh, ow] back onto exactly [h, w].
        if geo.out_h() != Some(h) || geo.out_w() != Some(w) {
            return Err(Error::shape(OP, format!("internal geometry mismatch for input {:?}: {geo:?}", x.shape())));
        }
        let wt = self.weight.reshape(&[cin, cout * kh * kw])?.t()?; // [cout·kh·kw, cin]
        let cols = wt.matmul(&x.reshape(&[n, cin, h * w])?)?; // [n, cout·kh·kw, h·w]
        let y = cols.contiguous()?.col2im(&geo)?;
        match &self.bias {
            Some(b) => &y + &b.reshape(&[1, cout, 1, 1])?,
            None => Ok(y),
        }
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        params(&self.weight, &self.bias)
    }
}
