//! Where a model's tensors come from: a checkpoint file or the synthetic formula. Exposed to the models as a
//! candle-nn `VarBuilder` (so they are written as candle-nn modules with the checkpoint's own names), with
//! errors that name the file, the tensor and both shapes.

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub enum Weights {
    /// Tensors read from a file.
    File(Arc<Checkpoint>),
    /// The golden files' synthetic weights, computed from each tensor's name and shape.
    Synthetic,
}

impl Weights {
    pub fn load(path: impl Into<PathBuf>) -> Result<Weights> {
        Ok(Weights::File(Arc::new(Checkpoint::load(path.into())?)))
    }

    /// The shape of a tensor of the checkpoint, if it has it (None for synthetic weights).
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        match self {
            Weights::File(c) => c.tensors.get(name).map(|t| t.dims().to_vec()),
            Weights::Synthetic => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Weights::File(c) => c.path.display().to_string(),
            Weights::Synthetic => "synthetic weights".to_string(),
        }
    }

    pub fn var_builder(&self, dev: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, dev.clone())
    }
}

impl SimpleBackend for Weights {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = match self {
            Weights::Synthetic => crate::synthetic::tensor(name, s.dims())?,
            Weights::File(c) => {
                let t = c.tensors.get(name).ok_or_else(|| {
                    let leaf = name.rsplit('.').next().unwrap_or(name);
                    let mut near: Vec<&str> =
                        c.tensors.keys().filter(|k| k.ends_with(leaf)).map(String::as_str).collect();
                    near.sort();
                    near.truncate(3);
                    let hint = if near.is_empty() {
                        String::new()
                    } else {
                        format!(" (it has e.g. {}; is it a checkpoint of another architecture?)", near.join(", "))
                    };
                    candle_core::Error::Msg(
                        Error::MissingTensor { path: c.path.clone(), name: name.to_string(), hint }.to_string(),
                    )
                })?;
                if t.dims() != s.dims() {
                    return Err(candle_core::Error::Msg(
                        Error::ShapeMismatch {
                            path: c.path.clone(),
                            name: name.to_string(),
                            expected: s.dims().to_vec(),
                            found: t.dims().to_vec(),
                        }
                        .to_string(),
                    ));
                }
                check_weight(c, name, t)?;
                t.clone()
            }
        };
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self {
            Weights::File(c) => match c.tensors.get(name) {
                Some(t) => {
                    check_weight(c, name, t)?;
                    t.to_dtype(dtype)?.to_device(dev)
                }
                None => candle_core::bail!("{}: tensor `{name}` is missing", c.path.display()),
            },
            Weights::Synthetic => candle_core::bail!("synthetic weights need a shape for `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match self {
            Weights::File(c) => c.tensors.contains_key(name),
            Weights::Synthetic => true,
        }
    }
}

/// A tensor a model asks for must have been stored as floats (integers or booleans converted to f32 are not
/// weights: a prediction from them would be garbage) and hold finite values only (an inf in a bias can pass
/// through ReLU6 as a confident prediction). Integer buffers the model does not ask for, such as
/// `num_batches_tracked`, are never checked. One pass over each weight, at load.
fn check_weight(c: &Checkpoint, name: &str, t: &Tensor) -> candle_core::Result<()> {
    let refuse = |msg: String| candle_core::Error::Msg(Error::checkpoint(&c.path, msg).to_string());
    if let Some(&d) = c.dtypes.get(name) {
        if !crate::checkpoint::is_float_dtype(d) {
            return Err(refuse(format!(
                "tensor `{name}` is stored as {d}; expected floating-point weights (float32, float16, bfloat16 or \
                 float64)"
            )));
        }
    }
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(refuse(format!("tensor `{name}` holds {v} at element {i}; expected finite weights")));
    }
    Ok(())
}
