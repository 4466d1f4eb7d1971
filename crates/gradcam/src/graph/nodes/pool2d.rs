//! 2-D max and average pooling as ONNX (`MaxPool`, `AveragePool`) and PyTorch give it: a kernel and stride per
//! axis, four pads (top, left, bottom, right), `ceil_mode`, `count_include_pad`.
//!
//! Output size (PyTorch's rule): ⌊(i + p₀ + p₁ − k)/s⌋ + 1, or with `ceil_mode` ⌈…⌉ + 1 less one if the last
//! window would start at or past the input's end plus the leading pad (it must start inside the input or the
//! left padding). Max pooling ignores the padding (the maximum of the real pixels, the first of equal maxima
//! taking the gradient, as PyTorch's CPU kernel scans). Average pooling divides by the window clipped to the
//! padded input (`count_include_pad`: so a `ceil_mode` window that runs past the padding counts only what lies
//! within it) or by the number of real pixels.

use crate::graph::{Ctx, Op, Saves};
use crate::ops::{with_f32, Grad};
use candle_core::{Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub max: bool,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

/// One output position along an axis: real inputs `a..b`, and the window's size clipped to the padded input.
#[derive(Clone, Copy, Debug)]
struct Win {
    a: usize,
    b: usize,
    padded: usize,
}

impl Pool2d {
    /// The windows along axis `d` (0: rows, 1: columns) of an input of size `i`.
    fn windows(&self, i: usize, d: usize) -> Result<Vec<Win>> {
        let (k, s, p0, p1) = if d == 0 {
            (self.kernel.0, self.stride.0, self.pads[0], self.pads[2])
        } else {
            (self.kernel.1, self.stride.1, self.pads[1], self.pads[3])
        };
        if k == 0 || s == 0 || i + p0 + p1 < k {
            candle_core::bail!("{}: kernel {k}, stride {s} on an input of {i} padded by {p0} and {p1}", self.kind())
        }
        let span = i + p0 + p1 - k;
        let mut o = if self.ceil_mode { span.div_ceil(s) + 1 } else { span / s + 1 };
        if self.ceil_mode && (o - 1) * s >= i + p0 {
            o -= 1;
        }
        Ok((0..o)
            .map(|j| {
                let start = (j * s) as isize - p0 as isize;
                let end = (start + k as isize).min((i + p1) as isize);
                let a = start.max(0) as usize;
                let b = (end.min(i as isize).max(0) as usize).max(a);
                Win { a, b, padded: (end - start) as usize }
            })
            .collect())
    }

    /// The output's (rows, columns) for an input plane of (h, w).
    pub fn out_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        Ok((self.windows(h, 0)?.len(), self.windows(w, 1)?.len()))
    }
}

/// The position (in the plane) of the first maximum of a window, or None for a window of no real pixel.
#[inline]
fn argmax(p: &[f32], w: usize, wy: Win, wx: Win) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for y in wy.a..wy.b {
        for x in wx.a..wx.b {
            let v = p[y * w + x];
            // as PyTorch: a NaN wins and stays
            match best {
                Some((_, m)) if !(v > m || v.is_nan()) || m.is_nan() => {}
                _ => best = Some((y * w + x, v)),
            }
        }
    }
    best.map(|(i, _)| i)
}

impl Op for Pool2d {
    fn kind(&self) -> &'static str {
        if self.max {
            "MaxPool"
        } else {
            "AvgPool"
        }
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let (n, c, h, w) = x[0].dims4()?;
        let (wy, wx) = (self.windows(h, 0)?, self.windows(w, 1)?);
        let (ho, wo) = (wy.len(), wx.len());
        let out = with_f32(x[0], self.kind(), |v| {
            Ok(super::per_plane(v, n * c, h * w, ho * wo, |p, o| {
                for (oy, &y) in wy.iter().enumerate() {
                    for (ox, &xw) in wx.iter().enumerate() {
                        o[oy * wo + ox] = if self.max {
                            argmax(p, w, y, xw).map_or(f32::NEG_INFINITY, |i| p[i])
                        } else {
                            let mut s = 0f32;
                            for row in y.a..y.b {
                                s += p[row * w + xw.a..row * w + xw.b].iter().sum::<f32>();
                            }
                            let count =
                                if self.count_include_pad { y.padded * xw.padded } else { (y.b - y.a) * (xw.b - xw.a) };
                            s / count.max(1) as f32
                        };
                    }
                }
            }))
        })?;
        Tensor::from_vec(out, (n, c, ho, wo), x[0].device())
    }
    fn saves(&self) -> Saves {
        if self.max {
            Saves::INPUTS
        } else {
            Saves::NOTHING
        }
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let (n, c, h, w) = ctx.dims4(0)?;
        let (wy, wx) = (self.windows(h, 0)?, self.windows(w, 1)?);
        let (ho, wo) = (wy.len(), wx.len());
        if dy.dims != [n, c, ho, wo] {
            candle_core::bail!("{} backward: gradient {:?} for an output of {:?}", self.kind(), dy.dims, (n, c, ho, wo))
        }
        let dx = if self.max {
            with_f32(ctx.input(0, self.kind())?, self.kind(), |x| {
                // per plane: the input plane and dy's plane side by side
                let planes = n * c;
                let mut dx = vec![0f32; planes * h * w];
                use rayon::prelude::*;
                if h * w > 0 {
                    dx.par_chunks_mut(h * w).enumerate().for_each(|(pl, d)| {
                        let p = &x[pl * h * w..(pl + 1) * h * w];
                        let g = &dy.data[pl * ho * wo..(pl + 1) * ho * wo];
                        for (oy, &y) in wy.iter().enumerate() {
                            for (ox, &xw) in wx.iter().enumerate() {
                                if let Some(i) = argmax(p, w, y, xw) {
                                    d[i] += g[oy * wo + ox];
                                }
                            }
                        }
                    });
                }
                Ok(dx)
            })?
        } else {
            super::per_plane(&dy.data, n * c, ho * wo, h * w, |g, d| {
                for (oy, &y) in wy.iter().enumerate() {
                    for (ox, &xw) in wx.iter().enumerate() {
                        let count =
                            if self.count_include_pad { y.padded * xw.padded } else { (y.b - y.a) * (xw.b - xw.a) };
                        let v = g[oy * wo + ox] / count.max(1) as f32;
                        for row in y.a..y.b {
                            d[row * w + xw.a..row * w + xw.b].iter_mut().for_each(|d| *d += v);
                        }
                    }
                }
            })
        };
        Ok(vec![Some(Grad { data: dx, dims: vec![n, c, h, w] })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::v;
    use super::*;

    // The inputs and output gradients, reproduced in Python by
    //
    //     def inp(shape):   # x
    //         n = math.prod(shape)
    //         return torch.arange(n, dtype=torch.float64).mul(37).remainder(23).mul(0.25).sub(2.0).float().reshape(shape)
    //     def gout(shape):  # dy
    //         n = math.prod(shape)
    //         return torch.arange(n, dtype=torch.float64).mul(13).remainder(7).mul(0.5).sub(1.0).float().reshape(shape)
    fn inp(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i * 37) % 23) as f32 * 0.25 - 2.0).collect();
        Tensor::from_vec(v, shape, &candle_core::Device::Cpu).unwrap()
    }
    fn gout(shape: &[usize]) -> Grad {
        let n: usize = shape.iter().product();
        Grad { data: (0..n).map(|i| ((i * 13) % 7) as f32 * 0.5 - 1.0).collect(), dims: shape.to_vec() }
    }

    fn check(op: Pool2d, x: Tensor, out: &[usize], y: &[f32], dx: &[f32]) {
        let got = op.forward(&[&x]).unwrap();
        assert_eq!(got.dims(), out, "{op:?}");
        let gv = v(&got);
        assert!(gv.iter().zip(y).all(|(a, b)| (a - b).abs() < 1e-6), "{op:?}: {gv:?}");
        let inputs = [Some(x.clone())];
        let dims = [x.dims().to_vec()];
        let ctx = Ctx { inputs: &inputs, input_dims: &dims, output: None, bp: Default::default(), need: &[true] };
        let g = op.backward(&ctx, gout(out)).unwrap().remove(0).unwrap();
        assert_eq!(g.dims, x.dims());
        assert!(g.data.iter().zip(dx).all(|(a, b)| (a - b).abs() < 1e-6), "{op:?}: {:?}", g.data);
    }

    fn pool(max: bool, k: (usize, usize), s: (usize, usize), p: [usize; 4], ceil: bool, cip: bool) -> Pool2d {
        Pool2d { max, kernel: k, stride: s, pads: p, ceil_mode: ceil, count_include_pad: cip }
    }

    /// Against PyTorch 2.x (values to 7 decimals, compared within 1e-6), from
    ///
    ///     x = inp(shape).requires_grad_()
    ///     y = F.max_pool2d(x, k, s, p, ceil_mode=ceil)          # max
    ///     y = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=cip)   # avg
    ///     y.backward(gout(y.shape)); print(y.flatten().tolist(), x.grad.flatten().tolist())
    #[test]
    fn matches_pytorch_symmetric_pads() {
        // max, (1,2,7,6), k 3, s 2, p 1, ceil_mode
        check(
            pool(true, (3, 3), (2, 2), [1; 4], true, true),
            inp(&[1, 2, 7, 6]),
            &[1, 2, 4, 4],
            &[
                1.75, 3.0, 2.75, 2.0, 3.5, 3.25, 2.5, 2.0, 3.5, 3.0, 2.5, 1.75, 3.25, 3.0, 3.5, 3.5, 2.75, 2.75, 1.75,
                1.5, 3.0, 2.75, 3.5, 3.25, 2.75, 2.5, 3.5, 3.0, 2.75, 2.0, 3.25, 3.0,
            ],
            &[
                0.0, 0.0, 0.0, 1.5, 0.0, 0.0, -1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.5, 0.0,
                0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.5, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0, 1.5,
                0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0,
                2.0, 0.0, 1.5, 0.0,
            ],
        );
        // max, (1,1,5,5), k 2, s 1, no padding
        check(
            pool(true, (2, 2), (1, 1), [0; 4], false, true),
            inp(&[1, 1, 5, 5]),
            &[1, 1, 4, 4],
            &[1.75, 1.75, 3.0, 3.0, 2.0, 2.0, 3.25, 3.25, 2.25, 2.25, 3.5, 3.5, 2.5, 2.5, 3.5, 3.5],
            &[
                0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 2.5, 0.0, 0.0, 0.5, 0.0, -1.5, 0.0, 0.0, 3.5, 0.0, 2.5, 0.0,
                0.0, -0.5, 0.0, 0.0, 0.0,
            ],
        );
        // avg, (1,1,6,7), k 3, s 2, p 1, ceil_mode, count_include_pad (the last row of windows runs past the
        // bottom padding: divided by 2·3)
        check(
            pool(false, (3, 3), (2, 2), [1; 4], true, true),
            inp(&[1, 1, 6, 7]),
            &[1, 1, 4, 4],
            &[
                0.2222222, 0.6388889, 0.1944444, 0.3333333, 0.5555556, 0.3333333, 0.9444444, 0.7222222, 0.6388889,
                0.7777778, 0.75, 0.8055556, 0.5, 0.5, 0.1666667, 0.5833333,
            ],
            &[
                -0.1111111, 0.1111111, 0.2222222, 0.3888889, 0.1666667, 0.2777778, 0.1111111, -0.0555556, 0.1666667,
                0.2222222, 0.3333333, 0.1111111, 0.1111111, 0.0, 0.0555556, 0.0555556, 0.0, -0.0555556, -0.0555556,
                -0.1666667, -0.1111111, 0.2777778, 0.4444445, 0.1666667, 0.2222222, 0.0555556, -0.0, -0.0555556,
                0.2222222, 0.3888889, 0.1666667, 0.2777778, 0.1111111, 0.1666667, 0.0555556, 0.2222222, 0.3055556,
                0.0833333, 0.0277778, -0.0555556, 0.3333333, 0.3888889,
            ],
        );
        // the same without count_include_pad
        check(
            pool(false, (3, 3), (2, 2), [1; 4], true, false),
            inp(&[1, 1, 6, 7]),
            &[1, 1, 4, 4],
            &[
                0.5, 0.9583333, 0.2916667, 0.75, 0.8333333, 0.3333333, 0.9444444, 1.0833334, 0.9583333, 0.7777778,
                0.75, 1.2083334, 1.5, 1.0, 0.3333333, 1.75,
            ],
            &[
                -0.25, 0.0833333, 0.3333333, 0.5833334, 0.25, 0.5, 0.25, -0.1666667, 0.1666667, 0.3333333, 0.5277778,
                0.1944444, 0.2777778, 0.0833333, 0.0833333, 0.0833333, 0.0, -0.0555556, -0.0555556, -0.2222222,
                -0.1666667, 0.4166667, 0.5833334, 0.1666667, 0.2222222, 0.0555556, -0.0277778, -0.0833333, 0.3333333,
                0.5, 0.1666667, 0.2777778, 0.1111111, 0.1944444, 0.0833333, 0.3333333, 0.3333333, 0.0, -0.2222222,
                -0.2222222, 0.8611111, 1.0833334,
            ],
        );
        // avg, (1,2,5,5), k 2, s 2, no padding, ceil_mode (the last window holds one row or column)
        check(
            pool(false, (2, 2), (2, 2), [0; 4], true, true),
            inp(&[1, 2, 5, 5]),
            &[1, 2, 3, 3],
            &[
                -0.125, 1.125, 0.625, 0.375, 1.625, 1.125, 0.75, -0.875, 1.5, 1.125, -0.5, 1.875, 1.625, 0.0, 2.375,
                -0.875, 0.375, 2.75,
            ],
            &[
                -0.25, -0.25, 0.5, 0.5, 0.75, -0.25, -0.25, 0.5, 0.5, 0.75, 0.25, 0.25, 0.125, 0.125, 0.0, 0.25, 0.25,
                0.125, 0.125, 0.0, -0.25, -0.25, -0.5, -0.5, 2.0, 0.375, 0.375, 0.25, 0.25, 0.25, 0.375, 0.375, 0.25,
                0.25, 0.25, 0.0, 0.0, -0.125, -0.125, -0.5, 0.0, 0.0, -0.125, -0.125, -0.5, 1.0, 1.0, 0.75, 0.75, 1.0,
            ],
        );
        // avg, (1,1,5,6), k (3,2), s (2,1), p (1,0), no count_include_pad
        check(
            pool(false, (3, 2), (2, 1), [1, 0, 1, 0], false, false),
            inp(&[1, 1, 5, 6]),
            &[1, 1, 3, 5],
            &[
                0.1875, 0.8125, 1.4375, 0.625, -0.1875, 1.5, 1.1666666, 0.8333333, 0.5, 0.1666667, 1.375, 0.5625,
                1.1875, 0.375, -0.4375,
            ],
            &[
                -0.25, 0.25, 0.875, 0.625, 0.375, 0.125, -0.25, 0.1666667, 0.625, 0.7916666, 0.9583334, 0.375, 0.0,
                -0.0833333, -0.25, 0.1666667, 0.5833334, 0.25, 0.25, 0.2916667, -0.125, 0.0416667, 0.2083334, 0.0,
                0.25, 0.375, 0.125, -0.125, -0.375, -0.25,
            ],
        );
    }

    /// Asymmetric pads (top 0, left 1, bottom 2, right 0) against PyTorch with the padding made explicit:
    ///
    ///     xp = F.pad(x, (1, 0, 0, 2), value=-inf)   # max (0.0 for avg, count_include_pad)
    ///     y = F.max_pool2d(xp, (3, 2), (2, 1))      # F.avg_pool2d(xp, (3, 2), (2, 1))
    ///
    /// and ties: `F.max_pool2d(torch.ones(1, 1, 3, 4), 2, 1)` sends each window's gradient to its first pixel.
    #[test]
    fn matches_pytorch_asymmetric_pads_and_ties() {
        check(
            pool(true, (3, 2), (2, 1), [0, 1, 2, 0], false, true),
            inp(&[1, 1, 5, 6]),
            &[1, 1, 3, 6],
            &[1.75, 3.25, 3.25, 3.0, 2.75, 2.25, 3.5, 3.5, 3.25, 2.75, 2.5, 2.25, 1.5, 1.5, 2.75, 2.75, 0.5, 1.75],
            &[
                0.0, 0.0, 0.0, 0.5, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 5.5, 0.0, 0.0, 0.5, 0.0, -1.5, 0.0,
                0.0, 1.0, 0.0, 0.0, -0.5, 0.0, 2.5, 1.5, 0.0, 1.0,
            ],
        );
        check(
            pool(false, (3, 2), (2, 1), [0, 1, 2, 0], false, true),
            inp(&[1, 1, 5, 6]),
            &[1, 1, 3, 6],
            &[
                -0.0833333, 0.625, 1.25, 0.9166667, 0.5833333, 0.25, 0.7916667, 1.4166666, 1.0833334, 0.75, 0.4166667,
                0.0833333, 0.25, 0.125, 0.3333333, 0.5416667, -0.2083333, 0.0,
            ],
            &[
                0.1666667, 0.5833334, 0.4166667, 0.25, 0.0833333, 0.0, 0.1666667, 0.5833334, 0.4166667, 0.25,
                0.0833333, 0.0, -0.0833333, 0.75, 1.0, 0.6666667, 0.3333333, 0.0833333, -0.25, 0.1666667, 0.5833334,
                0.4166667, 0.25, 0.0833333, -0.3333333, -0.0833333, 0.75, 1.0, 0.6666667, 0.25,
            ],
        );
        let ones = Tensor::ones((1, 1, 3, 4), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        check(
            pool(true, (2, 2), (1, 1), [0; 4], false, true),
            ones,
            &[1, 1, 2, 3],
            &[1.0; 6],
            &[-1.0, 2.0, 1.5, 0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        );
        // a kernel larger than the padded input is an error
        let op = pool(true, (4, 4), (1, 1), [0; 4], false, true);
        assert!(op.forward(&[&inp(&[1, 1, 3, 3])]).is_err());
    }
}
