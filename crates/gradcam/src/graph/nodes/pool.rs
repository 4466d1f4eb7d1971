//! Pooling: max-pool with padding (argmax backward), and global average pooling (`AdaptiveAvgPool2d(1)`).

use crate::graph::{Ctx, Op, Saves};
use crate::ops::pool::{max_pool2d, max_pool2d_input_grad, PoolConfig};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

#[derive(Clone, Copy, Debug)]
pub struct MaxPool(pub PoolConfig);

impl Op for MaxPool {
    fn kind(&self) -> &'static str {
        "MaxPool2d"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        max_pool2d(x[0], self.0)
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        Ok(vec![Some(max_pool2d_input_grad(&dy, ctx.input(0, "max-pool")?, self.0)?)])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// (N, C, H, W) → (N, C, 1, 1), the mean of each plane.
#[derive(Clone, Copy, Debug)]
pub struct GlobalAvgPool;

impl Op for GlobalAvgPool {
    fn kind(&self) -> &'static str {
        "AdaptiveAvgPool2d"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        x[0].mean_keepdim((2, 3))
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let (n, c, h, w) = ctx.dims4(0)?;
        let hw = h * w;
        if dy.data.len() != n * c {
            candle_core::bail!("global average pool backward: gradient {:?} for input {:?}", dy.dims, (n, c, h, w))
        }
        let mut dx = vec![0f32; n * c * hw];
        for (plane, g) in dx.chunks_mut(hw.max(1)).zip(&dy.data) {
            plane.fill(g / hw as f32);
        }
        Ok(vec![Some(Grad { data: dx, dims: vec![n, c, h, w] })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `AvgPool2d(kernel, stride, padding)` with zero padding counted (`count_include_pad=True`, PyTorch's
/// default) and `ceil_mode` as asked.
#[derive(Clone, Copy, Debug)]
pub struct AvgPool {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub pad: (usize, usize),
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

impl AvgPool {
    pub fn new(kernel: usize, stride: usize) -> Self {
        AvgPool {
            kernel: (kernel, kernel),
            stride: (stride, stride),
            pad: (0, 0),
            ceil_mode: false,
            count_include_pad: true,
        }
    }
    fn out(&self, i: usize, d: usize) -> usize {
        let (k, s, p) = [(self.kernel.0, self.stride.0, self.pad.0), (self.kernel.1, self.stride.1, self.pad.1)][d];
        let span = i + 2 * p - k;
        let mut o = if self.ceil_mode { span.div_ceil(s) + 1 } else { span / s + 1 };
        // PyTorch: the last window must start inside the input or the left padding
        if self.ceil_mode && (o - 1) * s >= i + p {
            o -= 1;
        }
        o
    }
    /// For each output position along a dimension: (first input, end, divisor's share).
    fn windows(&self, i: usize, d: usize) -> Vec<(usize, usize, usize)> {
        let (k, s, p) = [(self.kernel.0, self.stride.0, self.pad.0), (self.kernel.1, self.stride.1, self.pad.1)][d];
        (0..self.out(i, d))
            .map(|o| {
                let start = (o * s) as isize - p as isize;
                let end = (start + k as isize).min((i + p) as isize);
                let count = (end - start) as usize;
                let (a, b) = (start.max(0) as usize, end.min(i as isize).max(0) as usize);
                (a, b.max(a), if self.count_include_pad { count } else { b.max(a) - a })
            })
            .collect()
    }
}

impl Op for AvgPool {
    fn kind(&self) -> &'static str {
        "AvgPool2d"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let (n, c, h, w) = x[0].dims4()?;
        let (wy, wx) = (self.windows(h, 0), self.windows(w, 1));
        let (ho, wo) = (wy.len(), wx.len());
        let v = super::values(x[0])?;
        let out = super::per_plane(&v, n * c, h * w, ho * wo, |p, o| {
            for (oy, &(y0, y1, cy)) in wy.iter().enumerate() {
                for (ox, &(x0, x1, cx)) in wx.iter().enumerate() {
                    let mut s = 0f32;
                    for row in p[y0 * w..y1 * w].chunks(w) {
                        s += row[x0..x1].iter().sum::<f32>();
                    }
                    o[oy * wo + ox] = s / (cy * cx).max(1) as f32;
                }
            }
        });
        Tensor::from_vec(out, (n, c, ho, wo), x[0].device())
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let (n, c, h, w) = ctx.dims4(0)?;
        let (wy, wx) = (self.windows(h, 0), self.windows(w, 1));
        let (ho, wo) = (wy.len(), wx.len());
        let dx = super::per_plane(&dy.data, n * c, ho * wo, h * w, |g, d| {
            for (oy, &(y0, y1, cy)) in wy.iter().enumerate() {
                for (ox, &(x0, x1, cx)) in wx.iter().enumerate() {
                    let v = g[oy * wo + ox] / (cy * cx).max(1) as f32;
                    for y in y0..y1 {
                        d[y * w + x0..y * w + x1].iter_mut().for_each(|d| *d += v);
                    }
                }
            }
        });
        Ok(vec![Some(Grad { data: dx, dims: vec![n, c, h, w] })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `AdaptiveAvgPool2d((oh, ow))`: PyTorch's bins, start ⌊i·H/oh⌋, end ⌈(i+1)·H/oh⌉.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveAvgPool {
    pub out: (usize, usize),
}

fn bins(i: usize, o: usize) -> Vec<(usize, usize)> {
    (0..o).map(|k| (k * i / o, ((k + 1) * i).div_ceil(o))).collect()
}

impl Op for AdaptiveAvgPool {
    fn kind(&self) -> &'static str {
        "AdaptiveAvgPool2d"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let (n, c, h, w) = x[0].dims4()?;
        let (ho, wo) = self.out;
        if (ho, wo) == (h, w) {
            return Ok(x[0].clone());
        }
        let (by, bx) = (bins(h, ho), bins(w, wo));
        let v = super::values(x[0])?;
        let out = super::per_plane(&v, n * c, h * w, ho * wo, |p, o| {
            for (oy, &(y0, y1)) in by.iter().enumerate() {
                for (ox, &(x0, x1)) in bx.iter().enumerate() {
                    let mut s = 0f32;
                    for row in p[y0 * w..y1 * w].chunks(w) {
                        s += row[x0..x1].iter().sum::<f32>();
                    }
                    o[oy * wo + ox] = s / ((y1 - y0) * (x1 - x0)) as f32;
                }
            }
        });
        Tensor::from_vec(out, (n, c, ho, wo), x[0].device())
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let (n, c, h, w) = ctx.dims4(0)?;
        let (ho, wo) = self.out;
        if (ho, wo) == (h, w) {
            return Ok(vec![Some(dy)]);
        }
        let (by, bx) = (bins(h, ho), bins(w, wo));
        let dx = super::per_plane(&dy.data, n * c, ho * wo, h * w, |g, d| {
            for (oy, &(y0, y1)) in by.iter().enumerate() {
                for (ox, &(x0, x1)) in bx.iter().enumerate() {
                    let v = g[oy * wo + ox] / ((y1 - y0) * (x1 - x0)) as f32;
                    for y in y0..y1 {
                        d[y * w + x0..y * w + x1].iter_mut().for_each(|d| *d += v);
                    }
                }
            }
        });
        Ok(vec![Some(Grad { data: dx, dims: vec![n, c, h, w] })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
