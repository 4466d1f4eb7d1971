//! The geometry of a convolution: padding, stride, groups, and everything the kernels derive from the
//! shapes (output size, the taps that read inside the image). Shared by `conv`, `depthwise` and `phases`.

use candle_core::Result;

/// Zero padding on each side, in pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pad {
    pub top: usize,
    pub left: usize,
    pub bottom: usize,
    pub right: usize,
}

impl Pad {
    pub fn same(p: usize) -> Self {
        Pad { top: p, left: p, bottom: p, right: p }
    }
    fn is_zero(&self) -> bool {
        *self == Pad::default()
    }
}

/// Geometry of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvConfig {
    pub stride: (usize, usize),
    pub pad: Pad,
    pub groups: usize,
}

impl ConvConfig {
    pub fn new(stride: usize, pad: Pad, groups: usize) -> Self {
        ConvConfig { stride: (stride, stride), pad, groups }
    }

    /// TensorFlow 'SAME' padding for an input of `(h, w)`: output ceil(in / stride), the odd pixel at the
    /// bottom/right (as `Conv2dStaticSamePadding` of efficientnet-pytorch).
    pub fn tf_same(h: usize, w: usize, k: (usize, usize), stride: usize, groups: usize) -> Self {
        let p = |i: usize, k: usize| {
            let o = i.div_ceil(stride);
            ((o - 1) * stride + k).saturating_sub(i)
        };
        let (ph, pw) = (p(h, k.0), p(w, k.1));
        ConvConfig::new(stride, Pad { top: ph / 2, left: pw / 2, bottom: ph - ph / 2, right: pw - pw / 2 }, groups)
    }
}

/// Everything a kernel needs, resolved from the shapes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub ho: usize,
    pub wo: usize,
    pub cfg: ConvConfig,
}

impl Geom {
    pub(super) fn new(
        x: (usize, usize, usize, usize),
        wt: (usize, usize, usize, usize),
        cfg: ConvConfig,
    ) -> Result<Self> {
        let (n, c, h, w) = x;
        let (o, cg, kh, kw) = wt;
        let g = cfg.groups;
        if g == 0 || c % g != 0 || o % g != 0 || c / g != cg {
            candle_core::bail!("conv2d: input has {c} channels, weight {o}x{cg}x{kh}x{kw} with {g} groups do not fit")
        }
        let (sh, sw) = cfg.stride;
        let hp = h + cfg.pad.top + cfg.pad.bottom;
        let wp = w + cfg.pad.left + cfg.pad.right;
        if hp < kh || wp < kw || sh == 0 || sw == 0 {
            candle_core::bail!("conv2d: kernel {kh}x{kw} larger than padded input {hp}x{wp}")
        }
        Ok(Geom { n, c, h, w, o, kh, kw, ho: (hp - kh) / sh + 1, wo: (wp - kw) / sw + 1, cfg })
    }
    pub(super) fn depthwise(&self) -> bool {
        self.cfg.groups == self.c && self.o == self.c
    }
    pub(super) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.cfg.stride == (1, 1) && self.cfg.pad.is_zero()
    }
    /// One gemm for several images pays where one image's output is small (deep layers): its gemm is then
    /// too thin to keep the cores busy. Large outputs are already well shaped, and copying costs more.
    pub(super) fn batch_gemm(&self) -> bool {
        self.cfg.groups == 1 && self.n > 1 && self.p() < 1024
    }
    pub fn p(&self) -> usize {
        self.ho * self.wo
    }
    /// Output columns `ox` whose input column `ox*sw + kx - left` lies inside the image.
    pub(super) fn ox_range(&self, kx: usize) -> (usize, usize) {
        let (sw, l) = (self.cfg.stride.1, self.cfg.pad.left);
        // (no output column at all reads inside the image for this tap when lo reaches wo: an empty range)
        let lo = if kx >= l { 0 } else { (l - kx).div_ceil(sw) }.min(self.wo);
        // ix = ox*sw + kx - l < w  <=>  ox*sw < w + l - kx
        let lim = self.w + l - kx.min(self.w + l);
        let hi = if lim == 0 { 0 } else { (lim - 1) / sw + 1 }.min(self.wo);
        (lo, hi.max(lo))
    }
    /// Every kernel tap and output row that reads inside the image: f(tap index ky·kw+kx, oy, iy, lo, hi, x0),
    /// where output columns lo..hi read input columns x0, x0 + sw, … (x0 = lo·sw + kx − left).
    pub(super) fn taps(&self, mut f: impl FnMut(usize, usize, usize, usize, usize, usize)) {
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let (lo, hi) = self.ox_range(kx);
                if lo >= hi {
                    continue;
                }
                let x0 = lo * self.cfg.stride.1 + kx - self.cfg.pad.left;
                for oy in 0..self.ho {
                    if let Some(iy) = self.iy(oy, ky) {
                        f(ky * self.kw + kx, oy, iy, lo, hi, x0);
                    }
                }
            }
        }
    }

    pub(super) fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        let v = oy * self.cfg.stride.0 + ky;
        if v < self.cfg.pad.top || v - self.cfg.pad.top >= self.h {
            None
        } else {
            Some(v - self.cfg.pad.top)
        }
    }
}
