//! Convolutions: `Conv1d`, `Conv2d` and the transposed `ConvTranspose1d`/`ConvTranspose2d`, with PyTorch's
//! weight layouts, names and initialisation.

use crate::init;
use crate::module::Module;
use kiln_core::{Conv2dOptions, ConvTranspose1dOptions, ConvTranspose2dOptions, Device, Error, Result, Tensor};

/// PyTorch's default for conv weights and biases: both `U(−1/√fan_in, 1/√fan_in)` (the weight
/// through `kaiming_uniform(a = √5)`).
fn conv_params(
    shape: &[usize],
    fan_in: usize,
    bias: bool,
    bias_len: usize,
    device: &Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let weight = init::kaiming_uniform(shape, fan_in, 5f64.sqrt(), device)?;
    let bound = 1.0 / (fan_in as f64).sqrt();
    let bias = if bias { Some(init::uniform(&[bias_len], -bound, bound, device)?) } else { None };
    Ok((weight, bias))
}

fn check_channels(op: &'static str, in_ch: usize, out_ch: usize, groups: usize, kernel: &[usize]) -> Result<()> {
    if groups == 0 || in_ch == 0 || out_ch == 0 || !in_ch.is_multiple_of(groups) || !out_ch.is_multiple_of(groups) {
        return Err(Error::invalid(
            op,
            format!("{in_ch} input and {out_ch} output channels must both be positive multiples of groups = {groups}"),
        ));
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
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        kernel: (usize, usize),
        opts: Conv2dOptions,
        bias: bool,
        device: &Device,
    ) -> Result<Conv2d> {
        check_channels("Conv2d::new", in_ch, out_ch, opts.groups, &[kernel.0, kernel.1])?;
        let cg = in_ch / opts.groups;
        let (weight, bias) =
            conv_params(&[out_ch, cg, kernel.0, kernel.1], cg * kernel.0 * kernel.1, bias, out_ch, device)?;
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
            return Err(Error::invalid(
                "Conv1d::new",
                format!("stride {stride} and dilation {dilation} must be positive"),
            ));
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
/// `nn.ConvTranspose2d`: input `[n, in, h, w]`, weight `[in, out/groups, kh, kw]`, bias `[out]`,
/// output `[n, out, (h−1)·s − 2p + d·(kh−1) + op + 1, ...]` (see `Tensor::conv_transpose2d`).
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
    pub opts: ConvTranspose2dOptions,
}

impl ConvTranspose2d {
    /// A transposed convolution without groups or dilation. `output_padding` (added to one side
    /// of the output) must be smaller than `stride`, as in PyTorch.
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
        let opts = ConvTranspose2dOptions { stride, padding, output_padding, ..Default::default() };
        ConvTranspose2d::with_options(in_ch, out_ch, kernel, opts, bias, device)
    }

    /// A transposed convolution with every option (groups and dilation included).
    pub fn with_options(
        in_ch: usize,
        out_ch: usize,
        kernel: (usize, usize),
        opts: ConvTranspose2dOptions,
        bias: bool,
        device: &Device,
    ) -> Result<ConvTranspose2d> {
        const OP: &str = "ConvTranspose2d::new";
        check_channels(OP, in_ch, out_ch, opts.groups, &[kernel.0, kernel.1])?;
        let (s, d, op) = (opts.stride, opts.dilation, opts.output_padding);
        if s.0 == 0 || s.1 == 0 || d.0 == 0 || d.1 == 0 || op.0 >= s.0.max(d.0) || op.1 >= s.1.max(d.1) {
            return Err(Error::invalid(
                OP,
                format!(
                    "stride {s:?} and dilation {d:?} must be positive and one of them larger than output_padding {op:?}"
                ),
            ));
        }
        // PyTorch computes fan_in from dim 1 of the weight, which for a transposed conv is the
        // output channels of one group.
        let og = out_ch / opts.groups;
        let (weight, bias) =
            conv_params(&[in_ch, og, kernel.0, kernel.1], og * kernel.0 * kernel.1, bias, out_ch, device)?;
        Ok(ConvTranspose2d { weight, bias, opts })
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv_transpose2d(&self.weight, self.bias.as_ref(), self.opts)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        params(&self.weight, &self.bias)
    }
}

/// Transposed 1-D convolution, PyTorch's `nn.ConvTranspose1d`: input `[n, in, l]`, weight
/// `[in, out/groups, k]`, bias `[out]`.
pub struct ConvTranspose1d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub opts: ConvTranspose1dOptions,
}

impl ConvTranspose1d {
    /// A transposed 1-D convolution; `ConvTranspose1dOptions::default()` has PyTorch's defaults.
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        opts: ConvTranspose1dOptions,
        bias: bool,
        device: &Device,
    ) -> Result<ConvTranspose1d> {
        const OP: &str = "ConvTranspose1d::new";
        check_channels(OP, in_ch, out_ch, opts.groups, &[kernel])?;
        let (s, d, op) = (opts.stride, opts.dilation, opts.output_padding);
        if s == 0 || d == 0 || op >= s.max(d) {
            return Err(Error::invalid(
                OP,
                format!("stride {s} and dilation {d} must be positive and one of them larger than output_padding {op}"),
            ));
        }
        let og = out_ch / opts.groups;
        let (weight, bias) = conv_params(&[in_ch, og, kernel], og * kernel, bias, out_ch, device)?;
        Ok(ConvTranspose1d { weight, bias, opts })
    }
}

impl Module for ConvTranspose1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv_transpose1d(&self.weight, self.bias.as_ref(), self.opts)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        params(&self.weight, &self.bias)
    }
}
