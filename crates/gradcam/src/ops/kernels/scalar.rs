//! The plain loops: what every machine runs, and what the vector sets are compared with, bit for bit.

use super::super::act::Activation;

/// `out[i] = act(init + Σ_t w[t] · src[starts[t] + i])`, the taps added in order (a multiply, then an add).
/// The caller checks that every read lies within `src`.
pub(crate) fn correlate(out: &mut [f32], init: f32, src: &[f32], starts: &[usize], w: &[f32], act: Option<Activation>) {
    out.fill(init);
    for (s, w) in starts.iter().zip(w) {
        for (o, x) in out.iter_mut().zip(&src[*s..]) {
            *o += w * x;
        }
    }
    if let Some(act) = act {
        out.iter_mut().for_each(|v| *v = act.apply(*v));
    }
}

pub(crate) fn activate(v: &mut [f32], act: Activation) {
    v.iter_mut().for_each(|x| *x = act.apply(*x));
}

/// # Safety
/// Every row's `len` values must lie within the buffers behind `d` and `s`, which must not overlap.
pub(crate) unsafe fn copy_rows(d: *mut f32, ds: usize, s: *const f32, ss: usize, rows: usize, len: usize) {
    for r in 0..rows {
        // SAFETY: the caller's contract
        unsafe { std::ptr::copy_nonoverlapping(s.add(r * ss), d.add(r * ds), len) };
    }
}

/// even[j] = src[2j], odd[j] = src[2j + 1] from pair `from` on (even's odd last value included).
pub(crate) fn deinterleave2_from(from: usize, src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    for j in from..odd.len() {
        even[j] = src[2 * j];
        odd[j] = src[2 * j + 1];
    }
    if even.len() > odd.len() {
        even[odd.len()] = src[src.len() - 1];
    }
}

/// dst[2j] = even[j], dst[2j + 1] = odd[j] from pair `from` on (even's odd last value included).
pub(crate) fn interleave2_from(from: usize, even: &[f32], odd: &[f32], dst: &mut [f32]) {
    for j in from..odd.len() {
        dst[2 * j] = even[j];
        dst[2 * j + 1] = odd[j];
    }
    if even.len() > odd.len() {
        let n = dst.len();
        dst[n - 1] = even[odd.len()];
    }
}
