//! Phase planes: an image's zero-padded input split by stride phase, so that a convolution's every tap reads
//! one contiguous run. Plane (qy, qx) holds the padded pixels (a·sh + qy, b·sw + qx), rows `wq` long; output
//! pixel (oy, ox) reads, for tap (ky, kx), element (oy + ky/sh, ox + kx/sw) of plane (ky mod sh, kx mod sw).
//! With the output laid out in rows of the same length `wq` (the columns past `wo` are scratch), output
//! element i reads element `start(tap) + i`, whatever the image size, padding or stride. Used by the depthwise
//! convolution (one correlation per channel) and by the dense one (the gemm reads the planes' runs as the rows
//! of its B matrix, with no im2col copy).

use super::geom::Geom;
use super::simd;

/// Sizes of the phase planes of one channel.
#[derive(Clone, Copy)]
pub(super) struct Phases {
    pub sh: usize,
    pub sw: usize,
    pub wq: usize,
    /// Elements per plane: the padded rows, a spare one (a tap's run may pass the last row's end by less
    /// than a row) and rounding to whole vectors.
    pub plane: usize,
    /// Length of the output runs: ho·wq.
    pub run: usize,
}

impl Phases {
    pub fn new(g: &Geom) -> Self {
        let (sh, sw) = g.cfg.stride;
        let hp = g.h + g.cfg.pad.top + g.cfg.pad.bottom;
        let wp = g.w + g.cfg.pad.left + g.cfg.pad.right;
        let wq = wp.div_ceil(sw);
        // ho + (kh−1)/sh ≤ ⌈hp/sh⌉ and wo + (kw−1)/sw ≤ wq: a run from a tap's offset ends inside the spare row
        Phases { sh, sw, wq, plane: ((hp.div_ceil(sh) + 1) * wq).next_multiple_of(16), run: g.ho * wq }
    }
    pub fn len(&self) -> usize {
        self.sh * self.sw * self.plane
    }
    /// Index in the planes of image pixel (iy, ix).
    #[inline]
    pub fn index(&self, g: &Geom, iy: usize, ix: usize) -> usize {
        let (py, px) = (iy + g.cfg.pad.top, ix + g.cfg.pad.left);
        ((py % self.sh) * self.sw + px % self.sw) * self.plane + (py / self.sh) * self.wq + px / self.sw
    }
    /// The phase plane of tap (ky, kx) and its offset inside the plane.
    #[inline]
    pub fn tap(&self, ky: usize, kx: usize) -> (usize, usize) {
        ((ky % self.sh) * self.sw + kx % self.sw, (ky / self.sh) * self.wq + kx / self.sw)
    }
}

/// For image row `iy` and column phase `qx`: the first image column in that phase and where its pixel lies in
/// the planes; the row's later pixels of the phase are every `sw`-th column, stored one after the other.
#[inline]
fn phase_run(g: &Geom, ph: &Phases, iy: usize, qx: usize) -> Option<(usize, usize)> {
    let l = g.cfg.pad.left;
    let ix0 = (qx + ph.sw - l % ph.sw) % ph.sw;
    (ix0 < g.w).then(|| (ix0, ph.index(g, iy, ix0)))
}

/// Scatter one channel's image into its phase planes. The other elements must be zero: the planes are
/// created zeroed, and every call for one geometry writes the same elements, so they stay so (no fill per
/// channel).
pub(super) fn to_phases(src: &[f32], g: &Geom, ph: &Phases, planes: &mut [f32]) {
    if ph.sh == 1 && ph.sw == 1 {
        // one plane: the rows one after the other, wq apart
        let base = ph.index(g, 0, 0);
        simd::copy_rows(&mut planes[base..], ph.wq, src, g.w, g.h, g.w);
        return;
    }
    for iy in 0..g.h {
        let row = &src[iy * g.w..(iy + 1) * g.w];
        if let Some((a, b)) = pair_runs(g, ph, iy, row.len()) {
            let (lo, hi) = planes.split_at_mut(a.max(b));
            let (ra, rb) = if a < b { (&mut lo[a..], &mut hi[..]) } else { (&mut hi[..], &mut lo[b..]) };
            simd::deinterleave2(row, &mut ra[..row.len().div_ceil(2)], &mut rb[..row.len() / 2]);
            continue;
        }
        for qx in 0..ph.sw {
            if let Some((ix0, i)) = phase_run(g, ph, iy, qx) {
                let src = &row[ix0..];
                let d = &mut planes[i..i + src.len().div_ceil(ph.sw)];
                if ph.sw == 1 {
                    d.copy_from_slice(src);
                } else {
                    for (d, v) in d.iter_mut().zip(src.iter().step_by(ph.sw)) {
                        *d = *v;
                    }
                }
            }
        }
    }
}

/// Stride 2, rows of two pixels or more: where the row's even and odd pixels start in the planes (shifts and
/// masks: the general [`Phases::index`] divides by run-time strides, four divisions a row).
#[inline]
fn pair_runs(g: &Geom, ph: &Phases, iy: usize, w: usize) -> Option<(usize, usize)> {
    if ph.sw != 2 || ph.sh != 2 || w < 2 {
        return None;
    }
    let (py, l) = (iy + g.cfg.pad.top, g.cfg.pad.left);
    let row = (py & 1) * 2 * ph.plane + (py >> 1) * ph.wq;
    let at = |px: usize| row + (px & 1) * ph.plane + (px >> 1);
    Some((at(l), at(l + 1)))
}

/// Gather one channel's image back from its phase planes.
pub(super) fn from_phases(planes: &[f32], g: &Geom, ph: &Phases, dst: &mut [f32]) {
    if ph.sh == 1 && ph.sw == 1 {
        let base = ph.index(g, 0, 0);
        for (d, s) in dst.chunks_mut(g.w).zip(planes[base..].chunks(ph.wq)) {
            d.copy_from_slice(&s[..g.w]);
        }
        return;
    }
    for iy in 0..g.h {
        let row = &mut dst[iy * g.w..(iy + 1) * g.w];
        if let Some((a, b)) = pair_runs(g, ph, iy, row.len()) {
            let n = row.len();
            simd::interleave2(&planes[a..a + n.div_ceil(2)], &planes[b..b + n / 2], row);
            continue;
        }
        for qx in 0..ph.sw {
            if let Some((ix0, i)) = phase_run(g, ph, iy, qx) {
                let d = &mut row[ix0..];
                let s = &planes[i..i + d.len().div_ceil(ph.sw)];
                if ph.sw == 1 {
                    d.copy_from_slice(s);
                } else {
                    for (v, s) in d.iter_mut().step_by(ph.sw).zip(s) {
                        *v = *s;
                    }
                }
            }
        }
    }
}
