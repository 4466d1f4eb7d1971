//! 2-D convolution as a candle custom op: gemm over phase planes (see [`super::phases`]) or im2col for dense
//! convolutions, im2col + gemm for grouped ones, phase-plane correlations for depthwise ones; asymmetric
//! padding (TensorFlow's SAME), and a backward that computes only the input gradient (a transposed
//! convolution). Weights are constants: no weight or bias gradient is produced.

use super::act::{Activation, Backprop, MaskFromOutput};
use super::depthwise;
use super::geom::Geom;
pub use super::geom::{ConvConfig, Pad};
use super::phases::{to_phases, Phases};
use super::{dims4, f32_slice};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// d[x0 + j·step] += w · s[j] for every j.
#[inline]
fn scatter_axpy(d: &mut [f32], x0: usize, step: usize, s: &[f32], w: f32) {
    if step == 1 {
        for (d, s) in d[x0..x0 + s.len()].iter_mut().zip(s) {
            *d += w * s;
        }
    } else {
        for (d, s) in d[x0..].iter_mut().step_by(step).zip(s) {
            *d += w * s;
        }
    }
}

pub(crate) use super::gemm::matmul;

/// col[(c*kh+ky)*kw+kx][oy*wo+ox] = x[c][iy][ix] (0 outside), for `cg` channels of one image.
fn im2col(x: &[f32], cg: usize, g: &Geom, col: &mut [f32]) {
    im2col_at(x, cg, g, col, g.p(), 0)
}

/// im2col into columns `off..off + p` of a matrix whose rows are `rs` long (several images side by side).
fn im2col_at(x: &[f32], cg: usize, g: &Geom, col: &mut [f32], rs: usize, off: usize) {
    let (kh, kw, p, w) = (g.kh, g.kw, g.p(), g.w);
    let (sw, even) = (g.cfg.stride.1, g.w.div_ceil(2));
    // stride 2: each input row split once into its even and odd columns (`[even | odd]`), so that every
    // column-matrix row is a contiguous copy
    col.par_chunks_mut(kh * kw * rs).take(cg).enumerate().for_each_init(Vec::new, |split, (c, rows)| {
        let plane = &x[c * g.h * w..(c + 1) * g.h * w];
        if sw == 2 {
            split.resize(g.h * w, 0.0);
            for (d, s) in split.chunks_mut(w).zip(plane.chunks(w)) {
                let (e, o) = d.split_at_mut(even);
                super::simd::deinterleave2(s, e, o);
            }
        }
        for ky in 0..kh {
            for kx in 0..kw {
                let r0 = (ky * kw + kx) * rs + off;
                let row = &mut rows[r0..r0 + p];
                let (lo, hi) = g.ox_range(kx);
                for oy in 0..g.ho {
                    let r = &mut row[oy * g.wo..(oy + 1) * g.wo];
                    match g.iy(oy, ky) {
                        None => r.fill(0.0),
                        Some(_) if lo >= hi => r.fill(0.0),
                        Some(iy) => {
                            r[..lo].fill(0.0);
                            r[hi..].fill(0.0);
                            let x0 = lo * sw + kx - g.cfg.pad.left;
                            let src = match sw {
                                1 => &plane[iy * w + x0..],
                                // column x0 + 2j is element x0/2 + j of the x0 mod 2 half
                                2 => &split[iy * w + (x0 % 2) * even + x0 / 2..],
                                _ => {
                                    let src = &plane[iy * w..(iy + 1) * w];
                                    for (v, s) in r[lo..hi].iter_mut().zip(src[x0..].iter().step_by(sw)) {
                                        *v = *s;
                                    }
                                    continue;
                                }
                            };
                            r[lo..hi].copy_from_slice(&src[..hi - lo]);
                        }
                    }
                }
            }
        }
    });
}

/// dx[c][iy][ix] += col[(c*kh+ky)*kw+kx][oy*wo+ox], for `cg` channels of one image.
fn col2im(col: &[f32], cg: usize, g: &Geom, dx: &mut [f32]) {
    col2im_at(col, cg, g, dx, g.p(), 0)
}

/// col2im from columns `off..off + p` of a matrix whose rows are `rs` long.
fn col2im_at(col: &[f32], cg: usize, g: &Geom, dx: &mut [f32], rs: usize, off: usize) {
    let taps = g.kh * g.kw;
    dx.par_chunks_mut(g.h * g.w).take(cg).enumerate().for_each(|(c, plane)| {
        let rows = &col[c * taps * rs..(c + 1) * taps * rs];
        g.taps(|t, oy, iy, lo, hi, x0| {
            let r0 = t * rs + off + oy * g.wo;
            let src = &rows[r0 + lo..r0 + hi];
            scatter_axpy(&mut plane[iy * g.w..(iy + 1) * g.w], x0, g.cfg.stride.1, src, 1.0);
        });
    });
}

fn forward(x: &[f32], wt: &[f32], bias: &[f32], g: &Geom, act: Option<Activation>) -> Vec<f32> {
    if g.depthwise() {
        return depthwise::forward(x, wt, bias, g, act);
    }
    forward_dense(x, wt, bias, g, act)
}

/// Dense and grouped convolutions: phase planes or im2col (none for 1×1 stride 1), then the gemm, whose stores
/// add the bias and apply `act`: every output element is written once.
fn forward_dense(x: &[f32], wt: &[f32], bias: &[f32], g: &Geom, act: Option<Activation>) -> Vec<f32> {
    let p = g.p();
    let groups = g.cfg.groups;
    let (cg, og) = (g.c / groups, g.o / groups);
    let k = cg * g.kh * g.kw;
    if g.batch_gemm() {
        let mut out = vec![0f32; g.n * g.o * p];
        forward_batched(x, wt, bias, g, act, &mut out);
        return out;
    }
    if groups == 1 && planes_pay(g) {
        return forward_planes(x, wt, bias, g, act);
    }
    let mut out: Vec<f32> = Vec::with_capacity(g.n * g.o * p);
    let mut col = if g.pointwise() { Vec::new() } else { vec![0f32; k * p] };
    // one product per image and group: og output channels from cg input channels
    for (ng, dst) in out.spare_capacity_mut()[..g.n * g.o * p].chunks_mut(og * p).enumerate() {
        let (n, gi) = (ng / groups, ng % groups);
        let xs = &x[(n * g.c + gi * cg) * g.h * g.w..(n * g.c + (gi + 1) * cg) * g.h * g.w];
        let b: &[f32] = if g.pointwise() {
            xs
        } else {
            im2col(xs, cg, g, &mut col);
            &col
        };
        let (wg, bg) = (&wt[gi * og * k..(gi + 1) * og * k], &bias[gi * og..(gi + 1) * og]);
        super::gemm::matmul_bias_act(dst, bg, wg, k, 1, b, og, p, k, act);
    }
    // SAFETY: the loop above wrote all g.n · g.o · p elements
    unsafe { out.set_len(g.n * g.o * p) };
    out
}

/// Whether a dense convolution reads its input's phase planes in place of an im2col matrix. The planes hold
/// the input once (all sh·sw phases), im2col kh·kw/(sh·sw) times over: they pay where the kernel has more taps
/// than the stride has phases (not for strided 1×1 convolutions) and the planes' scratch columns (computed,
/// then dropped) add at most [`PLANES_WASTE`] % to the work: ResNet's 3×3 convolutions down to 14×14 and its
/// stem, EfficientNet's stem. Measured on ResNet-50 (2 threads): 56×56 3×3 641 → 513 µs, 28×28 624 → 548 µs,
/// stem 883 → 646 µs; 14×14 680 → 652 µs. Outputs of 64 pixels or fewer keep im2col, where the gemm crate
/// cuts k differently (see `gemm::k_block`) and the figures would move.
fn planes_pay(g: &Geom) -> bool {
    let ph = Phases::new(g);
    g.kh * g.kw > g.cfg.stride.0 * g.cfg.stride.1 && (ph.wq - g.wo) * 100 <= g.wo * PLANES_WASTE && g.p() > 64
}

/// The most scratch columns, in % of the output's, for which [`planes_pay`].
const PLANES_WASTE: usize = 15;

/// A dense convolution (groups = 1) without im2col: the gemm's B row for input channel c and tap (ky, kx) is
/// the run of c's phase planes that tap reads (see [`super::phases`]), in im2col's row order, so every sum
/// runs over the same values in the same order: the same figures as im2col + gemm, bit for bit. The output
/// comes in rows of the planes' width and is copied out without the scratch columns.
fn forward_planes(x: &[f32], wt: &[f32], bias: &[f32], g: &Geom, act: Option<Activation>) -> Vec<f32> {
    let (p, ph, taps) = (g.p(), Phases::new(g), g.kh * g.kw);
    let k = g.c * taps;
    let rows: Vec<usize> = (0..k)
        .map(|r| {
            let (c, t) = (r / taps, r % taps);
            let (q, off) = ph.tap(t / g.kw, t % g.kw);
            c * ph.len() + q * ph.plane + off
        })
        .collect();
    // zeroed once: every image writes the same elements (the padding and scratch stay zero)
    let mut planes = vec![0f32; g.c * ph.len()];
    let mut y: Vec<f32> = Vec::with_capacity(g.o * ph.run);
    let mut out: Vec<f32> = Vec::with_capacity(g.n * g.o * p);
    for (n, dst) in out.spare_capacity_mut()[..g.n * g.o * p].chunks_mut(g.o * p).enumerate() {
        let xs = &x[n * g.c * g.h * g.w..(n + 1) * g.c * g.h * g.w];
        planes.par_chunks_mut(ph.len()).zip(xs.par_chunks(g.h * g.w)).for_each(|(pl, xc)| to_phases(xc, g, &ph, pl));
        let ys = &mut y.spare_capacity_mut()[..g.o * ph.run];
        super::gemm::matmul_bias_act_rows(ys, bias, wt, k, 1, &planes, &rows, g.o, ph.run, k, act);
        // SAFETY: the product wrote all o · run elements
        unsafe { y.set_len(g.o * ph.run) };
        dst.par_chunks_mut(p).zip(y.par_chunks(ph.run)).for_each(|(d, s)| {
            super::simd::copy_rows_uninit(d, g.wo, s, ph.wq, g.ho, g.wo);
        });
        // SAFETY: capacity only; the next image overwrites every element before reading
        unsafe { y.set_len(0) };
    }
    // SAFETY: the loop above wrote all g.n · g.o · p elements
    unsafe { out.set_len(g.n * g.o * p) };
    out
}

fn input_grad(gy: &[f32], wt: &[f32], g: &Geom) -> Vec<f32> {
    if g.depthwise() {
        return depthwise::input_grad(gy, wt, g);
    }
    let p = g.p();
    let mut dx = vec![0f32; g.n * g.c * g.h * g.w];
    let groups = g.cfg.groups;
    let (cg, og) = (g.c / groups, g.o / groups);
    let k = cg * g.kh * g.kw;
    if g.batch_gemm() {
        input_grad_batched(gy, wt, g, &mut dx);
        return dx;
    }
    let mut col = if g.pointwise() { Vec::new() } else { vec![0f32; k * p] };
    for n in 0..g.n {
        for gi in 0..groups {
            let gys = &gy[(n * g.o + gi * og) * p..];
            let wg = &wt[gi * og * k..];
            let dxs = &mut dx[(n * g.c + gi * cg) * g.h * g.w..(n * g.c + (gi + 1) * cg) * g.h * g.w];
            // cols (k×p) = W_gᵀ (k×og) · gy_g (og×p)
            if g.pointwise() {
                matmul(dxs, false, wg, 1, k, gys, k, p, og);
            } else {
                matmul(&mut col, false, wg, 1, k, gys, k, p, og);
                col2im(&col, cg, g, dxs);
            }
        }
    }
    dx
}

/// Images per gemm in the batched paths: the column matrix stays under ~64 MB.
fn images_per_gemm(k: usize, p: usize, n: usize) -> usize {
    ((16 << 20) / (k * p).max(1)).clamp(1, n)
}

/// Dense convolution of a batch with one gemm per group of images: the images' columns side by side,
/// (O×K)·(K×nb·P), which keeps the gemm busy where one image's P is small (deep layers).
/// `act` is applied.
fn forward_batched(x: &[f32], wt: &[f32], bias: &[f32], g: &Geom, act: Option<Activation>, out: &mut [f32]) {
    let (p, k, chw) = (g.p(), g.c * g.kh * g.kw, g.c * g.h * g.w);
    let nb = images_per_gemm(k, p, g.n);
    let mut col = vec![0f32; k * nb * p];
    let mut y = vec![0f32; g.o * nb * p];
    for n0 in (0..g.n).step_by(nb) {
        let m = nb.min(g.n - n0);
        let rs = m * p;
        for j in 0..m {
            let xs = &x[(n0 + j) * chw..(n0 + j + 1) * chw];
            if g.pointwise() {
                col[..k * rs].par_chunks_mut(rs).enumerate().for_each(|(c, row)| {
                    row[j * p..(j + 1) * p].copy_from_slice(&xs[c * p..(c + 1) * p]);
                });
            } else {
                im2col_at(xs, g.c, g, &mut col[..k * rs], rs, j * p);
            }
        }
        super::gemm::matmul_bias_act_into(&mut y[..g.o * rs], bias, wt, k, 1, &col[..k * rs], g.o, rs, k, act);
        out[n0 * g.o * p..(n0 + m) * g.o * p].par_chunks_mut(g.o * p).enumerate().for_each(|(j, dst)| {
            for (o, d) in dst.chunks_mut(p).enumerate() {
                d.copy_from_slice(&y[o * rs + j * p..o * rs + (j + 1) * p]);
            }
        });
    }
}

/// The input gradient of a dense convolution, batched like [`forward_batched`]: cols = Wᵀ·dY for all images.
fn input_grad_batched(gy: &[f32], wt: &[f32], g: &Geom, dx: &mut [f32]) {
    let (p, k, chw) = (g.p(), g.c * g.kh * g.kw, g.c * g.h * g.w);
    let nb = images_per_gemm(k, p, g.n);
    let mut gmat = vec![0f32; g.o * nb * p];
    let mut col = vec![0f32; k * nb * p];
    for n0 in (0..g.n).step_by(nb) {
        let m = nb.min(g.n - n0);
        let rs = m * p;
        gmat[..g.o * rs].par_chunks_mut(rs).enumerate().for_each(|(o, row)| {
            for j in 0..m {
                let src = &gy[((n0 + j) * g.o + o) * p..((n0 + j) * g.o + o + 1) * p];
                row[j * p..(j + 1) * p].copy_from_slice(src);
            }
        });
        matmul(&mut col[..k * rs], false, wt, 1, k, &gmat[..g.o * rs], k, rs, g.o);
        for j in 0..m {
            let dxs = &mut dx[(n0 + j) * chw..(n0 + j + 1) * chw];
            if g.pointwise() {
                dxs.par_chunks_mut(p)
                    .enumerate()
                    .for_each(|(c, d)| d.copy_from_slice(&col[c * rs + j * p..c * rs + (j + 1) * p]));
            } else {
                col2im_at(&col[..k * rs], g.c, g, dxs, rs, j * p);
            }
        }
    }
}

/// Forward op: (x, weight, bias) → y = act(conv(x, weight) + bias).
struct Conv2dOp(ConvConfig, Option<(Activation, Backprop)>);

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "gradcam-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(dims4(l1, "conv2d")?, dims4(l2, "conv2d")?, self.0)?;
        let (x, w, b) = (f32_slice(s1, l1, "conv2d")?, f32_slice(s2, l2, "conv2d")?, f32_slice(s3, l3, "conv2d")?);
        if b.len() != g.o {
            candle_core::bail!("conv2d: bias has {} values for {} output channels", b.len(), g.o)
        }
        let y = forward(x, w, b, &g, self.1.map(|(a, _)| a));
        let macs = g.n * g.o * (g.c / g.cfg.groups) * g.kh * g.kw * g.p();
        super::CONV_FLOPS.fetch_add(2 * macs as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let grad = match self.1 {
            Some((act, bp)) => super::backward_op(res, grad, &MaskFromOutput(act, bp))?,
            None => grad.clone(),
        };
        let dx = super::backward_op(&grad, w, &Conv2dInputGradOp { cfg: self.0, h, w: wd })?;
        Ok((Some(dx), None, None))
    }
}

/// Backward op: (dy, weight) → dx, a transposed convolution.
struct Conv2dInputGradOp {
    cfg: ConvConfig,
    h: usize,
    w: usize,
}

impl CustomOp2 for Conv2dInputGradOp {
    fn name(&self) -> &'static str {
        "gradcam-conv2d-input-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, o, ho, wo) = dims4(l1, "conv2d backward")?;
        let (o2, cg, kh, kw) = dims4(l2, "conv2d backward")?;
        let c = cg * self.cfg.groups;
        let g = Geom::new((n, c, self.h, self.w), (o2, cg, kh, kw), self.cfg)?;
        if o != o2 || g.ho != ho || g.wo != wo {
            candle_core::bail!("conv2d backward: gradient shape {:?} does not fit the convolution", l1.dims())
        }
        let dx = input_grad(f32_slice(s1, l1, "conv2d backward")?, f32_slice(s2, l2, "conv2d backward")?, &g);
        Ok((CpuStorage::F32(dx), Shape::from((n, c, self.h, self.w))))
    }
}

/// y = conv(x, weight) + bias (the project's CPU kernel).
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor, cfg: ConvConfig) -> Result<Tensor> {
    conv2d_act(x, weight, bias, cfg, None)
}

/// y = act(conv(x, weight) + bias), the activation fused into the kernel's output pass; its backward masks the
/// gradient from y (with the guided rule if asked), then computes the input gradient.
pub fn conv2d_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    cfg: ConvConfig,
    act: Option<(Activation, Backprop)>,
) -> Result<Tensor> {
    x.contiguous()?.apply_op3_arc(
        &weight.contiguous()?,
        &bias.contiguous()?,
        std::sync::Arc::new(Box::new(Conv2dOp(cfg, act))),
    )
}

/// The input gradient of [`conv2d`] for an input of shape `x_dims`, from the output gradient `dy` (the
/// stages' own backward pass; CPU only).
pub fn conv2d_input_grad(
    dy: &super::Grad,
    x_dims: (usize, usize, usize, usize),
    weight: &Tensor,
    cfg: ConvConfig,
) -> Result<super::Grad> {
    let g = Geom::new(x_dims, weight.dims4()?, cfg)?;
    if dy.dims4("conv2d backward")? != (g.n, g.o, g.ho, g.wo) {
        candle_core::bail!("conv2d backward: gradient shape {:?} does not fit the convolution", dy.dims)
    }
    let dx = super::with_f32(weight, "conv2d backward", |w| Ok(input_grad(&dy.data, w, &g)))?;
    Ok(super::Grad { data: dx, dims: vec![g.n, g.c, g.h, g.w] })
}

/// The same convolution with candle's stock ops (explicit zero padding, then `conv2d`): the tests' reference.
#[cfg(test)]
pub fn conv2d_stock(x: &Tensor, weight: &Tensor, bias: &Tensor, cfg: ConvConfig) -> Result<Tensor> {
    let p = cfg.pad;
    let x = x.pad_with_zeros(2, p.top, p.bottom)?.pad_with_zeros(3, p.left, p.right)?;
    if cfg.stride.0 != cfg.stride.1 {
        candle_core::bail!("conv2d: candle's stock conv needs equal strides")
    }
    let y = x.conv2d(weight, 0, cfg.stride.0, 1, cfg.groups)?;
    y.broadcast_add(&bias.reshape((1, (), 1, 1))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{fd_check, rand};
    use candle_core::Var;

    type Case = ((usize, usize, usize, usize), (usize, usize), ConvConfig);

    fn cases() -> Vec<Case> {
        vec![
            // (n, c, h, w), (o, k), config
            ((2, 3, 11, 9), (5, 3), ConvConfig::new(1, Pad::same(1), 1)),
            // (candle's stock conv backward takes its output padding from the height only: shapes where the
            // two differ would fail on its side, so the stock comparison uses shapes where they agree)
            ((1, 4, 13, 11), (6, 3), ConvConfig::new(2, Pad::same(1), 1)),
            ((1, 3, 17, 15), (4, 7), ConvConfig::new(2, Pad::same(3), 1)),
            ((2, 8, 7, 6), (6, 1), ConvConfig::new(1, Pad::default(), 1)),
            ((1, 8, 9, 9), (4, 1), ConvConfig::new(2, Pad::default(), 1)),
            ((2, 6, 9, 8), (6, 3), ConvConfig::new(1, Pad::same(1), 6)),
            ((1, 6, 12, 11), (6, 5), ConvConfig::tf_same(12, 11, (5, 5), 2, 6)),
            ((1, 4, 10, 10), (4, 3), ConvConfig::tf_same(10, 10, (3, 3), 2, 1)),
            ((1, 8, 7, 9), (4, 3), ConvConfig::new(1, Pad { top: 0, left: 2, bottom: 1, right: 0 }, 2)),
            // outputs of 1024 pixels or more (one gemm per image, no batching)
            ((1, 5, 40, 33), (7, 3), ConvConfig::new(1, Pad::same(1), 1)),
            ((2, 6, 36, 36), (8, 1), ConvConfig::new(1, Pad::default(), 1)),
            // depthwise: odd sizes, both strides, kernels 3 and 5, padding wider than the stride
            ((2, 5, 7, 7), (5, 5), ConvConfig::new(1, Pad::same(2), 5)),
            ((1, 3, 15, 15), (3, 3), ConvConfig::new(2, Pad::same(1), 3)),
            ((1, 4, 13, 13), (4, 5), ConvConfig::tf_same(13, 13, (5, 5), 2, 4)),
            ((1, 3, 11, 11), (3, 5), ConvConfig::new(3, Pad { top: 1, left: 3, bottom: 2, right: 0 }, 3)),
            // inputs smaller than the kernel's reach (a 1-pixel --input-tensor through a ResNet stem: taps that
            // read no pixel at all)
            ((1, 3, 1, 1), (4, 7), ConvConfig::new(2, Pad::same(3), 1)),
            ((2, 3, 2, 2), (4, 7), ConvConfig::new(2, Pad::same(3), 1)),
            ((1, 4, 1, 1), (4, 5), ConvConfig::tf_same(1, 1, (5, 5), 2, 4)),
            ((1, 4, 1, 1), (6, 3), ConvConfig::new(1, Pad::same(1), 1)),
        ]
    }

    #[test]
    fn forward_and_input_gradient_match_candle_stock_ops() -> Result<()> {
        for (i, ((n, c, h, w), (o, k), cfg)) in cases().into_iter().enumerate() {
            let x = rand(&[n, c, h, w], i as u64 + 1);
            let wt = rand(&[o, c / cfg.groups, k, k], i as u64 + 100);
            let b = rand(&[o], i as u64 + 200);
            let xv = Var::from_tensor(&x)?;
            let ours = conv2d(xv.as_tensor(), &wt, &b, cfg)?;
            let xs = Var::from_tensor(&x)?;
            let stock = conv2d_stock(xs.as_tensor(), &wt, &b, cfg)?;
            assert_eq!(ours.dims(), stock.dims(), "case {i}");
            let d = (&ours - &stock)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "case {i}: forward differs by {d}");
            let r = rand(ours.dims(), 9);
            let g1 = (ours * &r)?.sum_all()?.backward()?;
            let g2 = (stock * &r)?.sum_all()?.backward()?;
            let (a, b) = (g1.get(xv.as_tensor()).unwrap(), g2.get(xs.as_tensor()).unwrap());
            let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "case {i}: input gradient differs by {d}");
        }
        Ok(())
    }

    /// The phase-plane route (no im2col) gives the im2col route's figures bit for bit: every dense case above
    /// and a few stems and strided 1×1 convolutions, with an activation, two images.
    #[test]
    fn phase_planes_equal_im2col_bit_for_bit() -> Result<()> {
        let mut cases: Vec<Case> = cases().into_iter().filter(|c| c.2.groups == 1).collect();
        cases.extend([
            ((2, 3, 37, 41), (8, 7), ConvConfig::new(2, Pad::same(3), 1)),
            ((2, 3, 33, 34), (9, 3), ConvConfig::tf_same(33, 34, (3, 3), 2, 1)),
            ((2, 7, 24, 26), (13, 1), ConvConfig::new(2, Pad::default(), 1)),
            ((2, 5, 30, 29), (7, 3), ConvConfig::new(1, Pad::same(1), 1)),
            ((2, 4, 20, 23), (6, 5), ConvConfig::new(1, Pad::same(2), 1)),
            ((2, 70, 12, 12), (7, 3), ConvConfig::new(1, Pad::same(1), 1)),
        ]);
        for (i, ((n, c, h, w), (o, k), cfg)) in cases.into_iter().enumerate() {
            let x = (rand(&[n, c, h, w], i as u64 + 1) * 4.0)?.flatten_all()?.to_vec1::<f32>()?;
            let wt = rand(&[o, c, k, k], i as u64 + 100).flatten_all()?.to_vec1::<f32>()?;
            let b = rand(&[o], i as u64 + 200).to_vec1::<f32>()?;
            let g = Geom::new((n, c, h, w), (o, c, k, k), cfg)?;
            let (p, kk) = (g.p(), c * k * k);
            let mut want = vec![0f32; n * o * p];
            let mut col = vec![0f32; kk * p];
            for (img, dst) in want.chunks_mut(o * p).enumerate() {
                im2col(&x[img * c * h * w..], c, &g, &mut col);
                super::super::gemm::matmul_bias_act_into(dst, &b, &wt, kk, 1, &col, o, p, kk, Some(Activation::Relu));
            }
            let got = forward_planes(&x, &wt, &b, &g, Some(Activation::Relu));
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "case {i} ({g:?})");
        }
        Ok(())
    }

    #[test]
    fn input_gradient_matches_finite_differences() {
        for (i, ((n, c, h, w), (o, k), cfg)) in cases().into_iter().enumerate() {
            let x = rand(&[n, c, h, w], i as u64 + 1);
            let wt = rand(&[o, c / cfg.groups, k, k], i as u64 + 100);
            let b = rand(&[o], i as u64 + 200);
            let err = fd_check(&x, &|t| conv2d(t, &wt, &b, cfg), 40, 1e-2);
            // the op is linear in x: central differences are exact up to f32 rounding
            assert!(err < 2e-3, "case {i}: finite-difference error {err}");
        }
    }

    #[test]
    fn fused_activation_matches_conv_then_activation() -> Result<()> {
        use crate::ops::act::activation;
        for (i, ((n, c, h, w), (o, k), cfg)) in cases().into_iter().enumerate() {
            for a in [Activation::Relu, Activation::Relu6] {
                for bp in [Backprop::Plain, Backprop::Guided] {
                    let x = (rand(&[n, c, h, w], i as u64 + 1) * 4.0)?;
                    let wt = rand(&[o, c / cfg.groups, k, k], i as u64 + 100);
                    let b = rand(&[o], i as u64 + 200);
                    let (v1, v2) = (Var::from_tensor(&x)?, Var::from_tensor(&x)?);
                    let fused = conv2d_act(v1.as_tensor(), &wt, &b, cfg, Some((a, bp)))?;
                    let apart = activation(&conv2d(v2.as_tensor(), &wt, &b, cfg)?, a, bp)?;
                    let d = (&fused - &apart)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert_eq!(d, 0.0, "case {i} {a:?}: forward");
                    let r = rand(fused.dims(), 5);
                    let g1 = (fused * &r)?.sum_all()?.backward()?;
                    let g2 = (apart * &r)?.sum_all()?.backward()?;
                    let (p, q) = (g1.get(v1.as_tensor()).unwrap(), g2.get(v2.as_tensor()).unwrap());
                    let d = (p - q)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(d < 1e-6, "case {i} {a:?} {bp:?}: input gradient differs by {d}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn tf_same_padding_puts_the_odd_pixel_bottom_right() {
        let c = ConvConfig::tf_same(224, 224, (3, 3), 2, 1);
        assert_eq!(c.pad, Pad { top: 0, left: 0, bottom: 1, right: 1 });
        let c = ConvConfig::tf_same(112, 112, (5, 5), 2, 1);
        assert_eq!(c.pad, Pad { top: 1, left: 1, bottom: 2, right: 2 });
        let c = ConvConfig::tf_same(14, 14, (3, 3), 1, 1);
        assert_eq!(c.pad, Pad::same(1));
    }
}
