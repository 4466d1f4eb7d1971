//! Max-pool with padding (-inf outside) and an exact argmax backward: the whole gradient of a window goes to
//! its first maximum in scan order, as PyTorch does. candle's own max_pool2d has no padding and a wrong
//! backward when kernel == stride, and none at all when they differ.

use super::{dims4, f32_slice};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl PoolConfig {
    fn out(&self, i: usize) -> usize {
        (i + 2 * self.pad - self.kernel) / self.stride + 1
    }

    /// The rows or columns of the input that window `o` covers, clipped to the image (may be empty).
    #[inline]
    fn span(&self, o: usize, len: usize) -> (usize, usize) {
        let start = o * self.stride;
        (start.saturating_sub(self.pad).min(len), (start + self.kernel).saturating_sub(self.pad).min(len))
    }

    /// Every window's maximum (NaN if the window holds one, -inf if it lies wholly in the padding): the
    /// maximum down each column of the window's rows first (contiguous, vectorised), then across.
    fn plane_max(&self, plane: &[f32], h: usize, w: usize, col: &mut [f32], out: &mut [f32]) {
        let wo = self.out(w);
        for (oy, orow) in out.chunks_mut(wo).enumerate() {
            let (y0, y1) = self.span(oy, h);
            col.fill(f32::NEG_INFINITY);
            for iy in y0..y1 {
                for (m, &v) in col.iter_mut().zip(&plane[iy * w..(iy + 1) * w]) {
                    *m = nan_max(*m, v);
                }
            }
            for (ox, o) in orow.iter_mut().enumerate() {
                let (x0, x1) = self.span(ox, w);
                *o = if y0 < y1 {
                    col[x0..x1].iter().fold(f32::NEG_INFINITY, |m, &v| nan_max(m, v))
                } else {
                    f32::NEG_INFINITY
                };
            }
        }
    }

    /// Index (in the plane) of the window's maximum, the first in scan order unless a NaN comes later (the
    /// last NaN wins, as in PyTorch); None if the window lies wholly in the padding.
    #[inline]
    fn argmax(&self, plane: &[f32], h: usize, w: usize, oy: usize, ox: usize) -> Option<usize> {
        let ((y0, y1), (x0, x1)) = (self.span(oy, h), self.span(ox, w));
        if y0 >= y1 || x0 >= x1 {
            return None;
        }
        let (mut bi, mut bv) = (y0 * w + x0, plane[y0 * w + x0]);
        for iy in y0..y1 {
            let row = &plane[iy * w + x0..iy * w + x1];
            for (j, &v) in row.iter().enumerate() {
                // selects, not a branch: on real data the comparison is unpredictable
                let take = (v > bv) | v.is_nan();
                bi = if take { iy * w + x0 + j } else { bi };
                bv = if take { v } else { bv };
            }
        }
        Some(bi)
    }
}

/// max(m, v), NaN if either is (as PyTorch's max-pool).
#[inline]
fn nan_max(m: f32, v: f32) -> f32 {
    if (v > m) | v.is_nan() {
        v
    } else {
        m
    }
}

struct MaxPool(PoolConfig);

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "gradcam-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l, "max_pool2d")?;
        let x = f32_slice(s, l, "max_pool2d")?;
        let p = self.0;
        if h + 2 * p.pad < p.kernel || w + 2 * p.pad < p.kernel || p.stride == 0 {
            candle_core::bail!("max_pool2d: window {} larger than the padded input {h}x{w}", p.kernel)
        }
        let (ho, wo) = (p.out(h), p.out(w));
        let mut y = vec![0f32; n * c * ho * wo];
        y.par_chunks_mut(ho * wo).enumerate().for_each_init(
            || vec![0f32; w],
            |col, (i, out)| p.plane_max(&x[i * h * w..(i + 1) * h * w], h, w, col, out),
        );
        Ok((CpuStorage::F32(y), Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(super::backward_op(arg, grad, &MaxPoolBackward(self.0))?))
    }
}

/// (x, dy) → dx: each output's gradient added at its window's argmax.
struct MaxPoolBackward(PoolConfig);

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "gradcam-max-pool2d-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l1, "max_pool2d backward")?;
        let (x, gy) = (f32_slice(s1, l1, "max_pool2d backward")?, f32_slice(s2, l2, "max_pool2d backward")?);
        let p = self.0;
        let (ho, wo) = (p.out(h), p.out(w));
        if gy.len() != n * c * ho * wo {
            candle_core::bail!("max_pool2d backward: gradient shape {:?} does not fit", l2.dims())
        }
        Ok((CpuStorage::F32(pool_backward(x, gy, (n, c, h, w), p)), Shape::from((n, c, h, w))))
    }
}

fn pool_backward(x: &[f32], gy: &[f32], (n, c, h, w): (usize, usize, usize, usize), p: PoolConfig) -> Vec<f32> {
    let (ho, wo) = (p.out(h), p.out(w));
    let mut dx = vec![0f32; n * c * h * w];
    dx.par_chunks_mut(h * w).enumerate().for_each(|(i, d)| {
        let plane = &x[i * h * w..(i + 1) * h * w];
        let g = &gy[i * ho * wo..(i + 1) * ho * wo];
        for oy in 0..ho {
            for ox in 0..wo {
                let gv = g[oy * wo + ox];
                if gv == 0.0 {
                    continue; // common in guided backprop; adds nothing
                }
                let inside = oy * p.stride >= p.pad
                    && ox * p.stride >= p.pad
                    && oy * p.stride + p.kernel <= h + p.pad
                    && ox * p.stride + p.kernel <= w + p.pad;
                let j = if p.kernel == 3 && inside {
                    Some(argmax3(plane, w, oy * p.stride - p.pad, ox * p.stride - p.pad))
                } else {
                    p.argmax(plane, h, w, oy, ox)
                };
                if let Some(j) = j {
                    d[j] += gv;
                }
            }
        }
    });
    dx
}

/// [`PoolConfig::argmax`] for a 3×3 window wholly inside the image, top-left (y0, x0), unrolled.
#[inline]
fn argmax3(plane: &[f32], w: usize, y0: usize, x0: usize) -> usize {
    let (mut bi, mut bv) = (y0 * w + x0, plane[y0 * w + x0]);
    for ky in 0..3 {
        let r = (y0 + ky) * w + x0;
        let row: &[f32; 3] = match plane[r..r + 3].try_into() {
            Ok(a) => a,
            Err(_) => return bi, // unreachable: the slice is 3 long
        };
        for (kx, &v) in row.iter().enumerate() {
            let take = (v > bv) | v.is_nan();
            bi = if take { r + kx } else { bi };
            bv = if take { v } else { bv };
        }
    }
    bi
}

/// The input gradient of [`max_pool2d`] from the output gradient (the stages' own backward pass; CPU only).
pub fn max_pool2d_input_grad(dy: &super::Grad, x: &Tensor, cfg: PoolConfig) -> Result<super::Grad> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (cfg.out(h), cfg.out(w));
    if dy.dims4("max_pool2d backward")? != (n, c, ho, wo) {
        candle_core::bail!("max_pool2d backward: gradient shape {:?} does not fit", dy.dims)
    }
    let dx = super::with_f32(x, "max_pool2d backward", |x| Ok(pool_backward(x, &dy.data, (n, c, h, w), cfg)))?;
    Ok(super::Grad { data: dx, dims: vec![n, c, h, w] })
}

/// 2-D max-pool with -inf padding (PyTorch's `MaxPool2d(kernel, stride, padding)`), differentiable.
pub fn max_pool2d(x: &Tensor, cfg: PoolConfig) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{fd_check, rand};
    use candle_core::Device;

    #[test]
    fn forward_matches_a_direct_reference() -> Result<()> {
        let x = rand(&[2, 3, 9, 8], 5);
        let cfg = PoolConfig { kernel: 3, stride: 2, pad: 1 };
        let y = max_pool2d(&x, cfg)?;
        assert_eq!(y.dims(), &[2, 3, 5, 4]);
        let xv = x.to_vec3::<f32>().ok();
        assert!(xv.is_none()); // 4-D: compare by hand below
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ys = y.flatten_all()?.to_vec1::<f32>()?;
        for (i, want) in ys.iter().enumerate() {
            let (nc, oy, ox) = (i / 20, (i % 20) / 4, i % 4);
            let mut m = f32::NEG_INFINITY;
            for ky in 0..3i64 {
                for kx in 0..3i64 {
                    let (iy, ix) = (oy as i64 * 2 + ky - 1, ox as i64 * 2 + kx - 1);
                    if (0..9).contains(&iy) && (0..8).contains(&ix) {
                        m = m.max(xs[nc * 72 + iy as usize * 8 + ix as usize]);
                    }
                }
            }
            assert_eq!(*want, m);
        }
        Ok(())
    }

    #[test]
    fn backward_with_ties_sends_each_gradient_to_the_first_maximum() {
        // values on a coarse grid, so that windows tie often (as after a ReLU), and a few NaNs
        let (h, w) = (9, 11);
        let x: Vec<f32> =
            (0..2 * h * w).map(|i| if i % 37 == 5 { f32::NAN } else { ((i * 7919) % 5) as f32 * 0.5 - 0.5 }).collect();
        for p in [PoolConfig { kernel: 3, stride: 2, pad: 1 }, PoolConfig { kernel: 3, stride: 1, pad: 0 }] {
            let (ho, wo) = (p.out(h), p.out(w));
            let gy: Vec<f32> = (0..2 * ho * wo).map(|i| 1.0 + (i % 13) as f32).collect();
            let dx = pool_backward(&x, &gy, (1, 2, h, w), p);
            let mut want = vec![0f32; 2 * h * w];
            for c in 0..2 {
                let plane = &x[c * h * w..(c + 1) * h * w];
                for oy in 0..ho {
                    for ox in 0..wo {
                        // the window in scan order: the first maximum, unless a NaN comes later (the last NaN)
                        let mut best: Option<(usize, f32)> = None;
                        for iy in (oy * p.stride).saturating_sub(p.pad)..(oy * p.stride + p.kernel - p.pad).min(h) {
                            for ix in (ox * p.stride).saturating_sub(p.pad)..(ox * p.stride + p.kernel - p.pad).min(w) {
                                let v = plane[iy * w + ix];
                                if best.is_none_or(|(_, b)| v > b || v.is_nan()) {
                                    best = Some((iy * w + ix, v));
                                }
                            }
                        }
                        if let Some((j, _)) = best {
                            want[c * h * w + j] += gy[(c * ho + oy) * wo + ox];
                        }
                    }
                }
            }
            assert_eq!(dx, want, "{p:?}");
        }
    }

    #[test]
    fn nan_propagates_to_every_window_that_holds_it() -> Result<()> {
        let mut v = rand(&[1, 1, 6, 7], 8).flatten_all()?.to_vec1::<f32>()?;
        v[2 * 7 + 3] = f32::NAN; // (2, 3)
        let x = Tensor::from_vec(v, (1, 1, 6, 7), &candle_core::Device::Cpu)?;
        let y = max_pool2d(&x, PoolConfig { kernel: 3, stride: 2, pad: 1 })?.flatten_all()?.to_vec1::<f32>()?;
        // output (oy, ox) covers rows 2oy−1..=2oy+1 and columns 2ox−1..=2ox+1: (2, 3) lies in oy ∈ {1}, ox ∈ {1, 2}
        for (i, v) in y.iter().enumerate() {
            let (oy, ox) = (i / 4, i % 4);
            assert_eq!(v.is_nan(), oy == 1 && (ox == 1 || ox == 2), "output ({oy}, {ox}) = {v}");
        }
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1)] {
            let x = rand(&[1, 2, 7, 6], 3);
            let err = fd_check(&x, &|t| max_pool2d(t, PoolConfig { kernel: k, stride: s, pad: p }), 60, 1e-3);
            assert!(err < 1e-2, "k{k} s{s} p{p}: finite-difference error {err}");
        }
    }

    #[test]
    fn gradient_goes_whole_to_one_argmax() -> Result<()> {
        // kernel == stride 2: candle's stock op scales this by 1/4; ours must give exactly 1.
        let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
        let v = candle_core::Var::from_tensor(&x)?;
        let y = max_pool2d(v.as_tensor(), PoolConfig { kernel: 2, stride: 2, pad: 0 })?;
        let g = y.sum_all()?.backward()?;
        let gx = g.get(v.as_tensor()).unwrap().flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(gx, vec![0., 0., 0., 1.]);
        Ok(())
    }
}
