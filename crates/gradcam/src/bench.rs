//! Figures, not pass/fail: the median time per image of a forward pass, of each method and of Guided Backprop,
//! for a model at its input size and a batch size; and the process's peak resident memory.

use crate::cam::{self, guided, Explainer, MapOptions, Score};
use crate::error::Result;
use crate::models::Network;
use candle_core::Tensor;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub model: String,
    pub batch: usize,
    /// `forward`, a method name, or `guided-backprop`.
    pub what: String,
    /// Median over the repetitions of (time of one batch) / batch, in milliseconds.
    pub ms_per_image: f64,
    pub reps: usize,
    /// Forward rows: the convolutions' floating-point operations per image (a multiply-add counts 2), in
    /// billions, and the rate they ran at (GFLOP / median time).
    pub gflop_per_image: Option<f64>,
    pub gflops: Option<f64>,
}

/// A deterministic input batch: pseudo-random values with the spread of a normalised photo.
pub fn input(net: &Network, batch: usize) -> Result<Tensor> {
    let (h, w) = net.input_size;
    let n = batch * 3 * h * w;
    let v: Vec<f32> = crate::util::xorshift_unit(0x2545F4914F6CDD1D, n).iter().map(|u| u * 4.0 - 2.0).collect();
    Ok(Tensor::from_vec(v, (batch, 3, h, w), &net.device)?)
}

fn median_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Time `what` (forward, methods, guided-backprop) on `net` at batch size `batch`, `reps` repetitions each.
pub fn run(net: &Network, layer: &str, batch: usize, what: &[String], reps: usize) -> Result<Vec<Row>> {
    let x = input(net, batch)?;
    let ex = Explainer::new(net, &[layer.to_string()])?;
    let logits = net.forward(&x)?;
    let classes: Vec<usize> = (0..batch)
        .map(|i| Ok(crate::classify::ranking(&logits.get(i)?.to_vec1::<f32>()?)[0]))
        .collect::<Result<_>>()?;
    // warm up before the first figure: the allocator settles its thresholds and the caches fill
    for _ in 0..3 {
        net.forward(&x)?;
    }
    let before = crate::ops::conv_flops();
    net.forward(&x)?;
    let gflop = (crate::ops::conv_flops() - before) as f64 / 1e9 / batch as f64;
    let mut rows = vec![];
    for w in what {
        let ms = match w.as_str() {
            "forward" => median_ms(reps, || {
                net.forward(&x)?;
                Ok(())
            })?,
            "guided-backprop" => median_ms(reps, || {
                guided::guided_backprop(net, &x, &classes, Score::Logit)?;
                Ok(())
            })?,
            m => {
                let method = cam::method(m)?;
                median_ms(reps, || {
                    cam::maps_for(&ex, &x, None, &classes, Score::Logit, &[method.as_ref()], MapOptions::default())?;
                    Ok(())
                })?
            }
        };
        let ms_per_image = ms / batch as f64;
        let (gflop_per_image, gflops) =
            if w == "forward" { (Some(gflop), Some(gflop / (ms_per_image / 1e3))) } else { (None, None) };
        rows.push(Row { model: net.name.clone(), batch, what: w.clone(), ms_per_image, reps, gflop_per_image, gflops });
    }
    Ok(rows)
}

/// The machine's multiply-add throughput, in GFLOP/s, on every thread of the pool at once: each runs 12
/// independent chains of fused multiply-adds on the vectors of the instruction set the kernels run with
/// ([`crate::ops::isa::current`]: AVX-512, or AVX2 with FMA; for the scalar set, whose products the `gemm`
/// crate runs with the widest vectors the CPU has, those) (the best of three rounds). The ceiling the
/// kernels' GFLOP/s compare with. None on other CPUs.
pub fn fma_peak_gflops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::ops::isa::Isa;
        let isa = match crate::ops::isa::current() {
            Isa::Scalar => Isa::best(),
            i => i,
        };
        let lanes = match isa {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Scalar => return None,
        };
        let iters: u64 = 400_000_000 / lanes;
        let run = || {
            let t = Instant::now();
            // SAFETY: the CPU has the set (`current` and `best` return only such)
            let sink = unsafe {
                if lanes == 16 {
                    fma_chains_avx512(iters)
                } else {
                    fma_chains_avx2(iters)
                }
            };
            std::hint::black_box(sink);
            t.elapsed().as_secs_f64()
        };
        let flops = 12.0 * 2.0 * lanes as f64 * iters as f64;
        // the best of three rounds (some 40 ms each): the first may run while the cores' clocks rise
        let best = (0..3)
            .map(|_| rayon::broadcast(|_| run()).iter().map(|s| flops / s / 1e9).sum::<f64>())
            .fold(0.0, f64::max);
        Some(best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut a = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm512_fmadd_ps(*v, b, c);
        }
    }
    a.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut a = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm256_fmadd_ps(*v, b, c);
        }
    }
    let mut out = [0f32; 8];
    a.iter()
        .map(|v| {
            _mm256_storeu_ps(out.as_mut_ptr(), *v);
            out.iter().sum::<f32>()
        })
        .sum()
}

/// Peak resident memory of this process in bytes (Linux: VmHWM), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
