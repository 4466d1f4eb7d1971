//! The reference's pipeline after the channel weights: ReLU, min-max scaling (with its 1e-7), bilinear resize
//! with half-pixel centres (OpenCV INTER_LINEAR), the combination of several layers, and the paper's box.

use serde::Serialize;

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
        let axis = |dst: usize, src: usize| -> Vec<(usize, usize, f32)> {
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
        };
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
}
