//! The network's building blocks that candle's stock ops get wrong or make slow, as custom ops with their
//! own backward (see ENGINE notes in ARCHITECTURE.md):
//! - [`conv`]: 2-D convolution with asymmetric padding, groups (depthwise) and bias, whose backward computes
//!   only the input gradient (weights are constants here);
//! - [`pool`]: max-pool with padding and an argmax backward;
//! - [`act`]: ReLU / ReLU6 with PyTorch's gradient at the kinks, and their guided twins for Guided Backprop.
//!
//! Their inner loops (`gemm.rs`, `simd.rs`) run on the instruction set [`isa`] chooses, once per process,
//! from `kernels/` (one module per set).

pub mod act;
pub mod conv;
mod depthwise;
mod gemm;
pub mod geom;
pub mod isa;
mod kernels;
mod phases;
pub mod pool;
mod simd;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

/// A gradient carried backward through a network by the stages' own backward passes (see
/// `models::Stage::backward`): owned, so that an activation's mask is applied in place, with no candle
/// autograd graph, no zero-filled accumulators and no extra copies.
#[derive(Clone, Debug)]
pub struct Grad {
    pub data: Vec<f32>,
    pub dims: Vec<usize>,
}

impl Grad {
    /// A copy of a (CPU) tensor's values.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        Ok(Grad { data: t.flatten_all()?.to_vec1::<f32>()?, dims: t.dims().to_vec() })
    }
    pub fn into_tensor(self, dev: &candle_core::Device) -> Result<Tensor> {
        Tensor::from_vec(self.data, self.dims, dev)
    }
    pub(crate) fn dims4(&self, op: &str) -> Result<(usize, usize, usize, usize)> {
        match self.dims[..] {
            [a, b, c, d] => Ok((a, b, c, d)),
            _ => candle_core::bail!("{op}: expected a 4-D gradient, got shape {:?}", self.dims),
        }
    }
    /// self += other, element by element.
    pub fn add_assign(&mut self, other: &Grad) -> Result<()> {
        if self.dims != other.dims {
            candle_core::bail!("gradient sum: shapes {:?} and {:?} differ", self.dims, other.dims)
        }
        self.data.par_chunks_mut(1 << 14).zip(other.data.par_chunks(1 << 14)).for_each(|(a, b)| {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        });
        Ok(())
    }
}

/// Run `f` on the values of a contiguous f32 CPU tensor.
pub(crate) fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(cs) => f(f32_slice(cs, l, op)?),
        _ => candle_core::bail!("{op}: the network's own backward pass runs on the CPU only"),
    }
}

/// Apply a backward kernel (an untracked two-input op) to contiguous copies of its inputs.
pub(crate) fn backward_op(a: &Tensor, b: &Tensor, op: &impl CustomOp2) -> Result<Tensor> {
    a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, op)
}

/// The contiguous f32 slice behind a CPU storage and layout, or an error naming the op.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{op}: only f32 tensors are supported"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

pub(crate) fn dims4(l: &Layout, op: &str) -> Result<(usize, usize, usize, usize)> {
    match l.dims() {
        &[a, b, c, d] => Ok((a, b, c, d)),
        d => candle_core::bail!("{op}: expected a 4-D tensor, got shape {d:?}"),
    }
}

/// Run `f` on one of rayon's worker threads. A parallel loop started from outside the pool hands its work to
/// the pool and puts the caller to sleep until it is done: two thread switches per kernel, a quarter of
/// EfficientNet-Lite0's forward time when measured. Started from a worker, the kernels' loops split their work
/// in place. So the network's passes run whole inside the pool: one hand-over per pass.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let mut out = None;
    rayon::join(|| out = Some(f()), || ());
    match out {
        Some(r) => r,
        None => unreachable!("rayon::join returns after both closures ran"),
    }
}

/// Floating-point operations (a multiply-add counts 2) of every convolution's forward pass so far, in this
/// process: read before and after a pass for its count (`bench` does, for GFLOP/s).
pub fn conv_flops() -> u64 {
    CONV_FLOPS.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) static CONV_FLOPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Threads for the kernels: rayon's pool (RAYON_NUM_THREADS, default the number of cores).
pub(crate) fn threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
pub(crate) mod testutil {
    use candle_core::{Device, Result, Tensor, Var};

    /// Deterministic pseudo-random values in [-1, 1).
    pub fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let u = crate::util::xorshift_unit(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1, n);
        let v: Vec<f32> = u.iter().map(|u| u * 2.0 - 1.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Compare the analytic gradient of sum(f(x) * r) with central finite differences (in f64 via f32
    /// evaluations) at `probes` positions. Returns the worst absolute error relative to max |grad|.
    pub fn fd_check(x: &Tensor, f: &dyn Fn(&Tensor) -> Result<Tensor>, probes: usize, eps: f32) -> f32 {
        let xv = Var::from_tensor(x).unwrap();
        let y = f(xv.as_tensor()).unwrap();
        let r = rand(y.dims(), 77);
        let loss = (y * &r).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let gx = g.get(xv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let base = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let n = base.len();
        let gmax = gx.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let mut worst = 0f32;
        for p in 0..probes {
            let i = (p * 7919 + 13) % n;
            let eval = |d: f32| -> f64 {
                let mut v = base.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, x.dims(), x.device()).unwrap();
                let y = f(&t).unwrap();
                (y * &r).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
            };
            let num = ((eval(eps) - eval(-eps)) / (2.0 * eps as f64)) as f32;
            worst = worst.max((num - gx[i]).abs() / gmax);
        }
        worst
    }
}
