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
        rows.push(Row { model: net.name.clone(), batch, what: w.clone(), ms_per_image: ms / batch as f64, reps });
    }
    Ok(rows)
}

/// Peak resident memory of this process in bytes (Linux: VmHWM), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
