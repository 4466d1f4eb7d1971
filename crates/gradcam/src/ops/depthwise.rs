//! Depthwise convolution (one filter per channel), forward and input gradient, by *phase planes*.
//!
//! A channel's zero-padded input is split by stride phase: plane (qy, qx) holds the padded pixels
//! (a·sh + qy, b·sw + qx), rows `wq` long. Output pixel (oy, ox) then reads, for tap (ky, kx), element
//! (oy + ky/sh, ox + kx/sw) of plane (ky mod sh, kx mod sw). With the output laid out in rows of the same
//! length `wq` (the columns past `wo` are scratch), output element i reads element `start(tap) + i` of the
//! planes, whatever the image size or stride: the whole channel is one [`simd::correlate`], which keeps
//! blocks of outputs in registers across all taps.
//!
//! The input gradient is the same correlation the other way: plane element j of phase q receives
//! Σ w(tap) · dy[j − off(tap)] over the taps of that phase, dy laid out in rows of `wq` with zeros before,
//! after and in the scratch columns; then the planes are gathered back into the image.
//!
//! The sums run in the same order as a direct convolution (bias, then the taps row by row; a tap in the
//! padding adds w·0), so the figures equal a direct loop's on every machine.

use super::act::Activation;
use super::geom::Geom;
use super::phases::{from_phases, to_phases, Phases};
use super::simd;
use rayon::prelude::*;

/// y = act(depthwise(x) + bias) for every image and channel.
pub(super) fn forward(x: &[f32], wt: &[f32], bias: &[f32], g: &Geom, act: Option<Activation>) -> Vec<f32> {
    let (p, taps, ph) = (g.p(), g.kh * g.kw, Phases::new(g));
    let starts: Vec<usize> = (0..g.kh)
        .flat_map(|ky| (0..g.kw).map(move |kx| (ky, kx)))
        .map(|(ky, kx)| {
            let (q, off) = ph.tap(ky, kx);
            q * ph.plane + off
        })
        .collect();
    // every element is written below: no zero-filling pass (a serial memset of up to 1.6 MB) first
    let mut out: Vec<f32> = Vec::with_capacity(g.n * g.o * p);
    out.spare_capacity_mut()[..g.n * g.o * p].par_chunks_mut(p).enumerate().for_each_init(
        || (vec![0f32; ph.len()], vec![0f32; ph.run]),
        |(planes, acc), (nc, dst)| {
            let c = nc % g.c;
            to_phases(&x[nc * g.h * g.w..(nc + 1) * g.h * g.w], g, &ph, planes);
            simd::correlate(acc, bias[c], planes, &starts, &wt[c * taps..(c + 1) * taps], act);
            simd::copy_rows_uninit(dst, g.wo, acc, ph.wq, g.ho, g.wo);
        },
    );
    // SAFETY: the loop wrote every one of the n·o·p elements
    unsafe { out.set_len(g.n * g.o * p) };
    out
}

/// dx of a depthwise convolution from dy (a transposed depthwise convolution).
pub(super) fn input_grad(gy: &[f32], wt: &[f32], g: &Geom) -> Vec<f32> {
    let (p, taps, ph) = (g.p(), g.kh * g.kw, Phases::new(g));
    // per phase plane: its taps (index, offset), in tap order
    let mut by_phase: Vec<Vec<(usize, usize)>> = vec![vec![]; ph.sh * ph.sw];
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let (q, off) = ph.tap(ky, kx);
            by_phase[q].push((ky * g.kw + kx, off));
        }
    }
    let lead = by_phase.iter().flatten().map(|t| t.1).max().unwrap_or(0);
    let mut dx = vec![0f32; g.n * g.c * g.h * g.w];
    dx.par_chunks_mut(g.h * g.w).enumerate().for_each_init(
        || (vec![0f32; ph.len()], vec![0f32; lead + ph.plane], Vec::with_capacity(taps), Vec::with_capacity(taps)),
        |(planes, gpad, starts, ws), (nc, dst)| {
            let c = nc % g.c;
            // gpad = [lead zeros | dy in rows of wq, scratch columns zero | zeros]
            gpad.fill(0.0);
            for (e, s) in gpad[lead..lead + ph.run].chunks_mut(ph.wq).zip(gy[nc * p..(nc + 1) * p].chunks(g.wo)) {
                e[..g.wo].copy_from_slice(s);
            }
            let wc = &wt[c * taps..(c + 1) * taps];
            for (q, plane) in planes.chunks_mut(ph.plane).enumerate() {
                starts.clear();
                ws.clear();
                for &(t, off) in &by_phase[q] {
                    starts.push(lead - off);
                    ws.push(wc[t]);
                }
                simd::correlate(plane, 0.0, gpad, starts, ws, None);
            }
            from_phases(planes, g, &ph, dst);
        },
    );
    dx
}
