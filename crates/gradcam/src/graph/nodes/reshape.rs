//! Reshape to explicit dimensions (ONNX `Reshape` with its shape resolved by the importer). Any dtype (the
//! importer's constant folder reshapes I64 and U8 tensors too); the gradient is dy with the input's shape.

use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

/// Output shape `dims` (every dimension given, the first included), the same number of values as the input.
#[derive(Clone, Debug)]
pub struct Reshape {
    pub dims: Vec<usize>,
}

impl Reshape {
    pub fn new(dims: &[usize]) -> Self {
        Reshape { dims: dims.to_vec() }
    }
}

impl Op for Reshape {
    fn kind(&self) -> &'static str {
        "Reshape"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let n: usize = self.dims.iter().product();
        if x[0].elem_count() != n {
            candle_core::bail!(
                "Reshape: an input of shape {:?} ({} values) cannot take shape {:?} ({n} values)",
                x[0].dims(),
                x[0].elem_count(),
                self.dims
            )
        }
        x[0].reshape(self.dims.as_slice())
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let dims = ctx.input_dims[0].clone();
        if dims.iter().product::<usize>() != dy.data.len() {
            candle_core::bail!("Reshape backward: gradient {:?} for an input of shape {dims:?}", dy.dims)
        }
        Ok(vec![Some(Grad { data: dy.data, dims })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::rand;
    use candle_core::{DType, Device};

    #[test]
    fn reshapes_any_dtype_and_back() {
        let x = rand(&[2, 3, 4], 1);
        let op = Reshape::new(&[1, 6, 4]);
        let y = op.forward(&[&x]).unwrap();
        assert_eq!(y.dims(), &[1, 6, 4]);
        assert_eq!(super::super::testutil::v(&y), super::super::testutil::v(&x));
        // the importer's constant folder: I64 and U8
        let i = Tensor::arange(0i64, 24, &Device::Cpu).unwrap().reshape((2, 12)).unwrap();
        let yi = op.forward(&[&i]).unwrap();
        assert_eq!(yi.dtype(), DType::I64);
        assert_eq!(yi.flatten_all().unwrap().to_vec1::<i64>().unwrap(), (0..24).collect::<Vec<i64>>());
        let u = i.to_dtype(DType::U8).unwrap();
        assert_eq!(op.forward(&[&u]).unwrap().dims(), &[1, 6, 4]);
        // a non-contiguous input
        let xt = x.transpose(1, 2).unwrap();
        let yt = Reshape::new(&[2, 12]).forward(&[&xt]).unwrap();
        assert_eq!(super::super::testutil::v(&yt), super::super::testutil::v(&xt.contiguous().unwrap()));
        let err = Reshape::new(&[5, 5]).forward(&[&x]).unwrap_err().to_string();
        assert!(err.contains("[2, 3, 4]") && err.contains("[5, 5]"), "{err}");
        let w = super::super::testutil::fd_inputs(&op, &[x], 24, 1e-2);
        assert!(w[0] < 1e-3, "{w:?}");
    }
}
