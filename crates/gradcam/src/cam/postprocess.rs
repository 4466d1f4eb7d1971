//! The reference's pipeline after the channel weights: ReLU, min-max scaling (with its 1e-7), bilinear resize
//! with half-pixel centres (OpenCV INTER_LINEAR), the combination of several layers, and the paper's box.

use serde::Serialize;

/// For each of `dst` outputs along an axis of `src` inputs: the two inputs it blends and the weight of the
/// second, with half-pixel centres and clamped edges (cv2.resize, INTER_LINEAR).
fn axis(dst: usize, src: usize) -> Vec<(usize, usize, f32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let mut s = f.floor() as i64;
            let mut t = (f - s as f64) as f32;
            if s < 0 {
                s = 0;
                t = 0.0;
            }
            if s as usize >= src - 1 {
                s = src as i64 - 1;
                t = 0.0;
            }
            let s = s as usize;
            (s, (s + 1).min(src - 1), t)
        })
        .collect()
}

/// A 2-D float map, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Map {
    pub fn new(h: usize, w: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(h * w, data.len());
        Map { h, w, data }
    }

    pub fn relu(&self) -> Map {
        Map::new(self.h, self.w, self.data.iter().map(|v| v.max(0.0)).collect())
    }

    /// x − min, then / (1e-7 + max), as pytorch-grad-cam's `scale_cam_image`.
    pub fn min_max(&self) -> Map {
        let mn = self.data.iter().fold(f32::INFINITY, |a, b| a.min(*b));
        let shifted: Vec<f32> = self.data.iter().map(|v| v - mn).collect();
        let mx = shifted.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
        Map::new(self.h, self.w, shifted.iter().map(|v| v / (1e-7 + mx)).collect())
    }

    /// Bilinear resize with half-pixel centres and clamped edges (cv2.resize, INTER_LINEAR).
    pub fn resize(&self, h: usize, w: usize) -> Map {
        if h == self.h && w == self.w {
            return self.clone();
        }
        let (ys, xs) = (axis(h, self.h), axis(w, self.w));
        // each source row interpolated across once, then the rows blended (the same sums as per pixel)
        let mut across = Vec::with_capacity(self.h * w);
        for r in self.data.chunks_exact(self.w) {
            across.extend(xs.iter().map(|&(x0, x1, tx)| r[x0] * (1.0 - tx) + r[x1] * tx));
        }
        let mut out = Vec::with_capacity(h * w);
        for &(y0, y1, ty) in &ys {
            let (top, bot) = (&across[y0 * w..(y0 + 1) * w], &across[y1 * w..(y1 + 1) * w]);
            out.extend(top.iter().zip(bot).map(|(t, b)| t * (1.0 - ty) + b * ty));
        }
        Map::new(h, w, out)
    }

    /// The map resized to (h, w) as [`Map::resize`] computes it, one output row at a time: a picture of a
    /// 100-megapixel photo never needs the whole resized map in memory.
    pub fn rows(&self, h: usize, w: usize) -> RowResize<'_> {
        let same = h == self.h && w == self.w;
        if same || self.h == 0 || self.w == 0 {
            return RowResize { src: self, w, across: vec![], ys: vec![], same: true };
        }
        let (ys, xs) = (axis(h, self.h), axis(w, self.w));
        let mut across = Vec::with_capacity(self.h * w);
        for r in self.data.chunks_exact(self.w) {
            across.extend(xs.iter().map(|&(x0, x1, tx)| r[x0] * (1.0 - tx) + r[x1] * tx));
        }
        RowResize { src: self, w, across, ys, same: false }
    }

    /// Mirror left-right.
    pub fn flip_horizontal(&self) -> Map {
        let data = self.data.chunks_exact(self.w).flat_map(|r| r.iter().rev().copied()).collect();
        Map::new(self.h, self.w, data)
    }

    pub fn max(&self) -> f32 {
        self.data.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b))
    }

    /// (row, column) of the maximum.
    pub fn argmax(&self) -> (usize, usize) {
        let mut best = 0;
        for (i, v) in self.data.iter().enumerate() {
            if *v > self.data[best] {
                best = i;
            }
        }
        (best / self.w, best % self.w)
    }
}

/// Several layers' scaled maps: ReLU, mean, min-max (the reference's `aggregate_multi_layers`).
pub fn combine_layers(maps: &[Map]) -> Map {
    let (h, w) = (maps[0].h, maps[0].w);
    let mut acc = vec![0f32; h * w];
    for m in maps {
        for (a, v) in acc.iter_mut().zip(&m.data) {
            *a += v.max(0.0);
        }
    }
    let n = maps.len() as f32;
    Map::new(h, w, acc.into_iter().map(|v| v / n).collect()).min_max()
}

/// A resized map, row by row (see [`Map::rows`]).
pub struct RowResize<'a> {
    src: &'a Map,
    w: usize,
    across: Vec<f32>,
    ys: Vec<(usize, usize, f32)>,
    same: bool,
}

impl RowResize<'_> {
    /// Output row `y` into `out` (`w` values).
    pub fn row(&self, y: usize, out: &mut [f32]) {
        if self.same {
            out.copy_from_slice(&self.src.data[y * self.w..(y + 1) * self.w]);
            return;
        }
        let w = self.w;
        let (y0, y1, ty) = self.ys[y];
        let (top, bot) = (&self.across[y0 * w..(y0 + 1) * w], &self.across[y1 * w..(y1 + 1) * w]);
        for ((o, t), b) in out.iter_mut().zip(top).zip(bot) {
            *o = t * (1.0 - ty) + b * ty;
        }
    }
}

/// A box in pixels, inclusive of x0, y0 and exclusive of x1, y1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BBox {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

/// The paper's localisation: pixels above `frac` of the maximum, box of the largest 8-connected component.
pub fn bounding_box(m: &Map, frac: f32) -> Option<BBox> {
    let t = m.max() * frac;
    if t.is_nan() || m.max() <= 0.0 {
        return None;
    }
    let mut seen = vec![false; m.data.len()];
    let mut best: Option<(usize, BBox)> = None;
    let mut stack = vec![];
    for start in 0..m.data.len() {
        if seen[start] || m.data[start] <= t {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut count = 0;
        let mut b = BBox { x0: usize::MAX, y0: usize::MAX, x1: 0, y1: 0 };
        while let Some(p) = stack.pop() {
            count += 1;
            let (y, x) = (p / m.w, p % m.w);
            b.x0 = b.x0.min(x);
            b.y0 = b.y0.min(y);
            b.x1 = b.x1.max(x + 1);
            b.y1 = b.y1.max(y + 1);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (ny, nx) = (y as i64 + dy, x as i64 + dx);
                    if ny < 0 || nx < 0 || ny >= m.h as i64 || nx >= m.w as i64 {
                        continue;
                    }
                    let q = ny as usize * m.w + nx as usize;
                    if !seen[q] && m.data[q] > t {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
        }
        if best.is_none_or(|(c, _)| count > c) {
            best = Some((count, b));
        }
    }
    best.map(|(_, b)| b)
}

/// [`bounding_box`] computed from the rows of a map as they are made (a run-length labelling of the
/// 8-connected components, with union-find over the runs): the same box, in memory proportional to the runs
/// of two rows and the number of components rather than to the pixels. Also finds the first maximum.
pub struct StreamingBox {
    w: usize,
    y: usize,
    /// Runs of the previous row above the threshold: (x0, x1 exclusive, component).
    prev: Vec<(usize, usize, usize)>,
    cur: Vec<(usize, usize, usize)>,
    parent: Vec<usize>,
    /// Per component root: pixel count, box, raster index of its first pixel.
    stats: Vec<(usize, BBox, usize)>,
    threshold: f32,
    map_max: f32,
    max: f32,
    argmax: (usize, usize),
}

impl StreamingBox {
    /// For a map of width `w` whose maximum is `max` (a first pass over the rows finds it), pixels above
    /// `frac` of it.
    pub fn new(w: usize, max: f32, frac: f32) -> Self {
        StreamingBox {
            w,
            y: 0,
            prev: vec![],
            cur: vec![],
            parent: vec![],
            stats: vec![],
            threshold: max * frac,
            map_max: max,
            max: f32::NEG_INFINITY,
            argmax: (0, 0),
        }
    }

    fn find(&mut self, mut c: usize) -> usize {
        while self.parent[c] != c {
            self.parent[c] = self.parent[self.parent[c]];
            c = self.parent[c];
        }
        c
    }

    fn union(&mut self, a: usize, b: usize) -> usize {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return ra;
        }
        let (keep, gone) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[gone] = keep;
        let (gc, gb, gf) = self.stats[gone];
        let s = &mut self.stats[keep];
        s.0 += gc;
        s.1 = BBox { x0: s.1.x0.min(gb.x0), y0: s.1.y0.min(gb.y0), x1: s.1.x1.max(gb.x1), y1: s.1.y1.max(gb.y1) };
        s.2 = s.2.min(gf);
        keep
    }

    /// The next row of the map.
    pub fn push(&mut self, row: &[f32]) {
        let y = self.y;
        for (x, v) in row.iter().enumerate() {
            if (y == 0 && x == 0) || *v > self.max {
                self.max = *v;
                self.argmax = (y, x);
            }
        }
        self.cur.clear();
        let t = self.threshold;
        let mut x = 0;
        while x < row.len() {
            if row[x] > t {
                let x0 = x;
                while x < row.len() && row[x] > t {
                    x += 1;
                }
                let id = self.parent.len();
                self.parent.push(id);
                let b = BBox { x0, y0: y, x1: x, y1: y + 1 };
                self.stats.push((x - x0, b, y * self.w + x0));
                let mut comp = id;
                // 8-connected: a run of the row above touching [x0 - 1, x]
                let prev = std::mem::take(&mut self.prev);
                for &(p0, p1, pc) in &prev {
                    if p0 <= x && x0 <= p1 {
                        comp = self.union(comp, pc);
                    }
                }
                self.prev = prev;
                self.cur.push((x0, x, comp));
            } else {
                x += 1;
            }
        }
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.y += 1;
    }

    /// (row, column) of the first maximum of the rows pushed.
    pub fn argmax(&self) -> (usize, usize) {
        self.argmax
    }

    /// The box of the largest component (ties: the one met first in raster order), as [`bounding_box`].
    pub fn finish(mut self) -> Option<BBox> {
        if self.threshold.is_nan() || self.map_max.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        let mut best: Option<(usize, usize, BBox)> = None;
        for c in 0..self.parent.len() {
            if self.find(c) != c {
                continue;
            }
            let (count, b, first) = self.stats[c];
            let better = match best {
                None => true,
                Some((bc, bf, _)) => count > bc || (count == bc && first < bf),
            };
            if better {
                best = Some((count, first, b));
            }
        }
        best.map(|(_, _, b)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_half_pixel_matches_opencv_on_a_ramp() {
        // cv2.resize(np.float32([[0, 1]]), (4, 1)) = [0, 0.25, 0.75, 1]
        let m = Map::new(1, 2, vec![0.0, 1.0]).resize(1, 4);
        assert_eq!(m.data, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn box_of_largest_component() {
        let mut d = vec![0f32; 100];
        d[11] = 1.0; // small blob
        for y in 5..8 {
            for x in 3..9 {
                d[y * 10 + x] = 0.9;
            }
        }
        let b = bounding_box(&Map::new(10, 10, d), 0.15).unwrap();
        assert_eq!(b, BBox { x0: 3, y0: 5, x1: 9, y1: 8 });
    }

    fn pseudo_map(h: usize, w: usize, seed: u64) -> Map {
        Map::new(h, w, crate::util::xorshift_unit(seed, h * w).into_iter().map(|v| v * 2.0 - 0.5).collect())
    }

    #[test]
    fn rows_equal_resize_bit_for_bit() {
        for (sh, sw, h, w, seed) in
            [(7, 7, 300, 451, 1), (7, 7, 7, 7, 2), (14, 9, 5, 3, 3), (1, 1, 4, 6, 4), (7, 7, 1, 1000, 5)]
        {
            let m = pseudo_map(sh, sw, seed);
            let full = m.resize(h, w);
            let rows = m.rows(h, w);
            let mut r = vec![0f32; w];
            for y in 0..h {
                rows.row(y, &mut r);
                assert!(
                    r.iter().zip(&full.data[y * w..(y + 1) * w]).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{sh}x{sw} -> {h}x{w}, row {y}"
                );
            }
        }
    }

    #[test]
    fn streaming_box_and_peak_equal_the_whole_map_versions() {
        for (h, w, seed, frac) in [(40, 60, 7, 0.15), (50, 50, 8, 0.6), (30, 70, 9, 0.9), (1, 9, 10, 0.15)] {
            // blobs: a smooth small map enlarged, and raw noise (many components, ties)
            for m in [pseudo_map(5, 6, seed).resize(h, w), pseudo_map(h, w, seed)] {
                let mut sb = StreamingBox::new(w, m.max(), frac);
                for r in m.data.chunks_exact(w) {
                    sb.push(r);
                }
                assert_eq!(sb.argmax(), m.argmax());
                assert_eq!(sb.finish(), bounding_box(&m, frac), "{h}x{w} seed {seed} frac {frac}");
            }
        }
        // nothing above zero: no box
        let z = Map::new(3, 3, vec![-1.0; 9]);
        let mut sb = StreamingBox::new(3, z.max(), 0.15);
        for r in z.data.chunks_exact(3) {
            sb.push(r);
        }
        assert_eq!(sb.finish(), None);
        assert_eq!(bounding_box(&z, 0.15), None);
    }
}
