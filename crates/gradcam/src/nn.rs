//! Layers as candle-nn style modules built from a `VarBuilder`: convolution with its batch-norm folded in at
//! load time, linear, and the activation/pool wrappers over the custom ops.

use crate::models::Tape;
use crate::ops::act::{mask_from_output, Activation, Backprop};
use crate::ops::conv::{conv2d, conv2d_act, conv2d_input_grad, ConvConfig, Pad};
use crate::ops::{with_f32, Grad};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// How a convolution pads.
#[derive(Clone, Copy, Debug)]
pub enum Padding {
    Fixed(Pad),
    /// TensorFlow 'SAME', resolved from the input's size at run time.
    TfSame,
}

/// Convolution followed by batch-norm (inference statistics), folded into one convolution with bias:
/// w' = w·γ/√(σ²+ε), b' = β − μ·γ/√(σ²+ε).
#[derive(Clone, Debug)]
pub struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    kernel: usize,
    stride: usize,
    groups: usize,
    padding: Padding,
}

/// Shape and geometry of a convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub padding: Padding,
}

impl ConvSpec {
    pub fn new(cin: usize, cout: usize, kernel: usize, stride: usize, padding: Padding) -> Self {
        ConvSpec { cin, cout, kernel, stride, groups: 1, padding }
    }
    pub fn depthwise(c: usize, kernel: usize, stride: usize, padding: Padding) -> Self {
        ConvSpec { cin: c, cout: c, kernel, stride, groups: c, padding }
    }
}

impl ConvBn {
    /// `conv` holds `weight` (no bias); `bn` holds `weight`, `bias`, `running_mean`, `running_var`.
    pub fn new(conv: VarBuilder, bn: VarBuilder, s: ConvSpec, eps: f64) -> Result<Self> {
        let w = conv.get((s.cout, s.cin / s.groups, s.kernel, s.kernel), "weight")?;
        let gamma = bn.get(s.cout, "weight")?.to_vec1::<f32>()?;
        let beta = bn.get(s.cout, "bias")?.to_vec1::<f32>()?;
        let mean = bn.get(s.cout, "running_mean")?.to_vec1::<f32>()?;
        let var = bn.get(s.cout, "running_var")?.to_vec1::<f32>()?;
        let scale: Vec<f64> = gamma.iter().zip(&var).map(|(g, v)| *g as f64 / (*v as f64 + eps).sqrt()).collect();
        let bias: Vec<f32> = (0..s.cout).map(|o| (beta[o] as f64 - mean[o] as f64 * scale[o]) as f32).collect();
        let per = w.elem_count() / s.cout;
        let wv = w.flatten_all()?.to_vec1::<f32>()?;
        let wf: Vec<f32> = wv.iter().enumerate().map(|(i, v)| (*v as f64 * scale[i / per]) as f32).collect();
        Ok(ConvBn {
            weight: Tensor::from_vec(wf, w.dims(), w.device())?,
            bias: Tensor::from_vec(bias, s.cout, w.device())?,
            kernel: s.kernel,
            stride: s.stride,
            groups: s.groups,
            padding: s.padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, &self.bias, self.config(x)?)
    }

    fn config(&self, x: &Tensor) -> Result<ConvConfig> {
        Ok(match self.padding {
            Padding::Fixed(p) => ConvConfig::new(self.stride, p, self.groups),
            Padding::TfSame => {
                let (_, _, h, w) = x.dims4()?;
                ConvConfig::tf_same(h, w, (self.kernel, self.kernel), self.stride, self.groups)
            }
        })
    }

    /// Convolution, then the activation (fused into the kernel).
    pub fn forward_act(&self, x: &Tensor, a: Activation, bp: Backprop) -> Result<Tensor> {
        conv2d_act(x, &self.weight, &self.bias, self.config(x)?, Some((a, bp)))
    }

    /// Convolution and activation (if any) for the own backward pass: keeps x (and y) on the tape.
    pub fn forward_taped(&self, x: &Tensor, act: Option<Activation>, tape: &mut Tape) -> Result<Tensor> {
        let y = conv2d_act(x, &self.weight, &self.bias, self.config(x)?, act.map(|a| (a, Backprop::Plain)))?;
        tape.push(x.clone());
        if act.is_some() {
            tape.push(y.clone());
        }
        Ok(y)
    }

    /// dx from dy for [`ConvBn::forward_taped`] with the same `act`; masks `dy` in place first.
    pub fn backward(&self, dy: &mut Grad, act: Option<Activation>, tape: &mut Tape, bp: Backprop) -> Result<Grad> {
        if let Some(a) = act {
            mask_from_output(dy, &tape.pop()?, a, bp)?;
        }
        let x = tape.pop()?;
        conv2d_input_grad(dy, x.dims4()?, &self.weight, self.config(&x)?)
    }

    pub fn out_channels(&self) -> usize {
        self.bias.dims1().unwrap_or(0)
    }
}

/// y = x·Wᵀ + b.
#[derive(Clone, Debug)]
pub struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let w = vb.get((cout, cin), "weight")?;
        Ok(Linear { weight_t: w.t()?.contiguous()?, bias: vb.get(cout, "bias")? })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

/// Global average pooling then the classifier: (N, C, H, W) → (N, classes).
pub fn pool_and_classify(x: &Tensor, fc: &Linear) -> Result<Tensor> {
    fc.forward(&x.mean((2, 3))?)
}

/// The input gradient of [`pool_and_classify`] for an input of shape `x_dims`, from d(logits) (N, classes):
/// d(features) = d(logits)·W, spread evenly over each channel's H·W positions.
pub fn pool_and_classify_backward(dlogits: &Grad, x_dims: (usize, usize, usize, usize), fc: &Linear) -> Result<Grad> {
    let (n, c, h, w) = x_dims;
    let (c2, k) = fc.weight_t.dims2()?;
    if c2 != c || dlogits.dims != [n, k] {
        candle_core::bail!(
            "classifier backward: gradient {:?} for features {x_dims:?} and weight {c2}x{k}",
            dlogits.dims
        )
    }
    let hw = h * w;
    // d(features)ᵀ (C×N) = Wᵀ (C×K) · d(logits)ᵀ (K×N), one gemm
    let mut dlt = vec![0f32; k * n];
    for (i, row) in dlogits.data.chunks(k).enumerate() {
        for (j, v) in row.iter().enumerate() {
            dlt[j * n + i] = *v;
        }
    }
    let mut dft = vec![0f32; c * n];
    with_f32(&fc.weight_t, "classifier backward", |wt| {
        crate::ops::conv::matmul(&mut dft, false, wt, k, 1, &dlt, c, n, k);
        Ok(())
    })?;
    let mut dx = vec![0f32; n * c * hw];
    for (i, img) in dx.chunks_mut(c * hw).enumerate() {
        for (ch, plane) in img.chunks_mut(hw).enumerate() {
            plane.fill(dft[ch * n + i] / hw as f32);
        }
    }
    Ok(Grad { data: dx, dims: vec![n, c, h, w] })
}
