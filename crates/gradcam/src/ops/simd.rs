//! Hand-vectorised inner loops, chosen at run time: AVX-512 where the CPU has it, plain loops elsewhere.
//! Both compute the same sums in the same order (a multiply, then an add, rounded each: no fused
//! multiply-add), so the figures do not depend on the machine.

use super::act::Activation;

/// `out[i] = act(init + Σ_t w[t] · src[starts[t] + i])` for every i, the taps added in order.
///
/// Panics if a tap would read past `src` (the callers size their buffers so that it cannot).
pub(crate) fn correlate(out: &mut [f32], init: f32, src: &[f32], starts: &[usize], w: &[f32], act: Option<Activation>) {
    assert!(starts.len() == w.len() && starts.iter().all(|s| s + out.len() <= src.len()), "correlate: bounds");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, and every read (src[starts[t] + i], i < out.len()) was checked above.
        unsafe { correlate_avx512(out, init, src, starts, w, act) };
        return;
    }
    correlate_plain(out, init, src, starts, w, act);
}

fn correlate_plain(out: &mut [f32], init: f32, src: &[f32], starts: &[usize], w: &[f32], act: Option<Activation>) {
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

/// `v = act(v)` for every element, as [`Activation::apply`] computes it.
pub(crate) fn activate(v: &mut [f32], act: Activation) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is there; the blocks and the masked tail stay within `v`
        unsafe { activate_avx512(v, act) };
        return;
    }
    v.iter_mut().for_each(|x| *x = act.apply(*x));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn activate_avx512(v: &mut [f32], act: Activation) {
    use std::arch::x86_64::*;
    let p = v.as_mut_ptr();
    let mut i = 0;
    while i + 16 <= v.len() {
        _mm512_storeu_ps(p.add(i), act_avx512(_mm512_loadu_ps(p.add(i)), Some(act)));
        i += 16;
    }
    if i < v.len() {
        let m: __mmask16 = ((1u32 << (v.len() - i)) - 1) as u16;
        _mm512_mask_storeu_ps(p.add(i), m, act_avx512(_mm512_maskz_loadu_ps(m, p.add(i)), Some(act)));
    }
}

/// `act` on a vector as [`Activation::apply`] does it lane by lane (`max(x, 0)`: NaN gives 0;
/// `clamp(x, 0, 6)`: NaN stays NaN).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn act_avx512(v: std::arch::x86_64::__m512, act: Option<Activation>) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    match act {
        None => v,
        // max_ps(a, b) is b when either is NaN
        Some(Activation::Relu) => _mm512_max_ps(v, _mm512_setzero_ps()),
        Some(Activation::Relu6) => _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(_mm512_setzero_ps(), v)),
    }
}

/// Blocks of 128 outputs held in eight registers across all taps, then one block of the rest (up to eight
/// vectors, the last one masked). Eight independent sums per tap keep both adders busy through the add's
/// latency (with four, a 7×7 map's 77 outputs took two passes, one of them a single dependent chain).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn correlate_avx512(
    out: &mut [f32],
    init: f32,
    src: &[f32],
    starts: &[usize],
    w: &[f32],
    act: Option<Activation>,
) {
    let n = out.len();
    let (sp, op) = (src.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 128 <= n {
        correlate_block::<8>(op.add(i), sp.add(i), init, starts, w, act, u16::MAX);
        i += 128;
    }
    if i < n {
        let v = (n - i).div_ceil(16);
        let last = n - i - 16 * (v - 1);
        let mask = if last == 16 { u16::MAX } else { ((1u32 << last) - 1) as u16 };
        let (o, s) = (op.add(i), sp.add(i));
        match v {
            1 => correlate_block::<1>(o, s, init, starts, w, act, mask),
            2 => correlate_block::<2>(o, s, init, starts, w, act, mask),
            3 => correlate_block::<3>(o, s, init, starts, w, act, mask),
            4 => correlate_block::<4>(o, s, init, starts, w, act, mask),
            5 => correlate_block::<5>(o, s, init, starts, w, act, mask),
            6 => correlate_block::<6>(o, s, init, starts, w, act, mask),
            7 => correlate_block::<7>(o, s, init, starts, w, act, mask),
            _ => correlate_block::<8>(o, s, init, starts, w, act, mask),
        }
    }
}

/// V vectors of outputs from `op`, reading from `sp` + each tap's start; the last vector's lanes limited by
/// `mask`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn correlate_block<const V: usize>(
    op: *mut f32,
    sp: *const f32,
    init: f32,
    starts: &[usize],
    w: &[f32],
    act: Option<Activation>,
    mask: u16,
) {
    use std::arch::x86_64::*;
    let m = |r: usize| if r + 1 == V { mask } else { u16::MAX };
    let mut a = [_mm512_set1_ps(init); V];
    for (s, w) in starts.iter().zip(w) {
        let wv = _mm512_set1_ps(*w);
        let p = sp.add(*s);
        for (r, acc) in a.iter_mut().enumerate() {
            *acc = _mm512_add_ps(*acc, _mm512_mul_ps(wv, _mm512_maskz_loadu_ps(m(r), p.add(16 * r))));
        }
    }
    for (r, acc) in a.iter().enumerate() {
        _mm512_mask_storeu_ps(op.add(16 * r), m(r), act_avx512(*acc, act));
    }
}

/// `rows` rows of `len` values from `src` (rows `src_stride` apart) to `dst` (rows `dst_stride` apart): for the
/// narrow rows of small feature maps (7 or 14 values) a masked vector move each instead of a `memcpy` call.
pub(crate) fn copy_rows(dst: &mut [f32], dst_stride: usize, src: &[f32], src_stride: usize, rows: usize, len: usize) {
    // SAFETY: f32 and MaybeUninit<f32> have the same layout, and only initialised values are written
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) };
    copy_rows_uninit(dst, dst_stride, src, src_stride, rows, len)
}

/// [`copy_rows`] into memory not yet initialised (the rows it writes are, after).
pub(crate) fn copy_rows_uninit(
    dst: &mut [std::mem::MaybeUninit<f32>],
    dst_stride: usize,
    src: &[f32],
    src_stride: usize,
    rows: usize,
    len: usize,
) {
    if rows == 0 || len == 0 {
        return;
    }
    assert!(
        len <= dst_stride.min(src_stride) || rows == 1,
        "copy_rows: rows overlap ({len} values, strides {dst_stride} and {src_stride})"
    );
    assert!(
        (rows - 1) * dst_stride + len <= dst.len() && (rows - 1) * src_stride + len <= src.len(),
        "copy_rows: bounds"
    );
    let (d, s) = (dst.as_mut_ptr().cast::<f32>(), src.as_ptr());
    #[cfg(target_arch = "x86_64")]
    if len <= 64 && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is there, and every row's len values lie within both slices (checked above)
        unsafe { copy_rows_avx512(d, dst_stride, s, src_stride, rows, len) };
        return;
    }
    for r in 0..rows {
        // SAFETY: within both slices (checked above); a slice of `dst` and one of `src` cannot overlap
        unsafe { std::ptr::copy_nonoverlapping(s.add(r * src_stride), d.add(r * dst_stride), len) };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_rows_avx512(d: *mut f32, ds: usize, s: *const f32, ss: usize, rows: usize, len: usize) {
    use std::arch::x86_64::*;
    for r in 0..rows {
        let mut j = 0;
        while j < len {
            let k = (len - j).min(16);
            let m: __mmask16 = if k == 16 { u16::MAX } else { ((1u32 << k) - 1) as u16 };
            let v = _mm512_maskz_loadu_ps(m, s.add(r * ss + j));
            _mm512_mask_storeu_ps(d.add(r * ds + j), m, v);
            j += 16;
        }
    }
}

/// even[j] = src[2j], odd[j] = src[2j + 1] (even holds ⌈n/2⌉ values, odd ⌊n/2⌋).
pub(crate) fn deinterleave2(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(even.len() == src.len().div_ceil(2) && odd.len() == src.len() / 2, "deinterleave2: lengths");
    let mut j = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is there; the blocks read src[32k..32k + 32] and write 16 values of each output
        // only while 32k + 32 <= src.len(), and the masked tail reads and writes only lanes below src.len(),
        // ⌈r/2⌉ and ⌊r/2⌋ — within the lengths checked above.
        j = unsafe { deinterleave2_avx512(src, even, odd) };
    }
    for j in j..odd.len() {
        even[j] = src[2 * j];
        odd[j] = src[2 * j + 1];
    }
    if even.len() > odd.len() {
        even[odd.len()] = src[src.len() - 1];
    }
}

/// Blocks of 16 pairs, then the tail masked; returns how many pairs it wrote (the odd last value of `even`
/// included in the writes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave2_avx512(src: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let mut j = 0;
    while 2 * j + 32 <= src.len() {
        let a = _mm512_loadu_ps(src.as_ptr().add(2 * j));
        let b = _mm512_loadu_ps(src.as_ptr().add(2 * j + 16));
        _mm512_storeu_ps(even.as_mut_ptr().add(j), _mm512_permutex2var_ps(a, ie, b));
        _mm512_storeu_ps(odd.as_mut_ptr().add(j), _mm512_permutex2var_ps(a, io, b));
        j += 16;
    }
    // the last r < 32 values with masked loads and stores (no scalar loop for the rows' tails)
    let r = src.len() - 2 * j;
    if r > 0 {
        let mask = |k: usize| -> __mmask16 { ((1u32 << k.min(16)) - 1) as u16 };
        let a = _mm512_maskz_loadu_ps(mask(r), src.as_ptr().add(2 * j));
        let b = _mm512_maskz_loadu_ps(mask(r.saturating_sub(16)), src.as_ptr().add(2 * j + 16));
        _mm512_mask_storeu_ps(even.as_mut_ptr().add(j), mask(r.div_ceil(2)), _mm512_permutex2var_ps(a, ie, b));
        _mm512_mask_storeu_ps(odd.as_mut_ptr().add(j), mask(r / 2), _mm512_permutex2var_ps(a, io, b));
        j += r / 2;
    }
    j
}

/// dst[2j] = even[j], dst[2j + 1] = odd[j]: the inverse of [`deinterleave2`].
pub(crate) fn interleave2(even: &[f32], odd: &[f32], dst: &mut [f32]) {
    assert!(even.len() == dst.len().div_ceil(2) && odd.len() == dst.len() / 2, "interleave2: lengths");
    let mut j = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: as in deinterleave2, with reads and writes swapped.
        j = unsafe { interleave2_avx512(even, odd, dst) };
    }
    for j in j..odd.len() {
        dst[2 * j] = even[j];
        dst[2 * j + 1] = odd[j];
    }
    if even.len() > odd.len() {
        let n = dst.len();
        dst[n - 1] = even[odd.len()];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn interleave2_avx512(even: &[f32], odd: &[f32], dst: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let mut j = 0;
    while 2 * j + 32 <= dst.len() {
        let e = _mm512_loadu_ps(even.as_ptr().add(j));
        let o = _mm512_loadu_ps(odd.as_ptr().add(j));
        _mm512_storeu_ps(dst.as_mut_ptr().add(2 * j), _mm512_permutex2var_ps(e, lo, o));
        _mm512_storeu_ps(dst.as_mut_ptr().add(2 * j + 16), _mm512_permutex2var_ps(e, hi, o));
        j += 16;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_round_trips() {
        for n in [0usize, 1, 2, 3, 15, 16, 17, 31, 32, 33, 47, 56, 64, 101, 112, 113, 224] {
            let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let (mut e, mut o) = (vec![0f32; n.div_ceil(2)], vec![0f32; n / 2]);
            deinterleave2(&src, &mut e, &mut o);
            assert!(e.iter().enumerate().all(|(j, v)| *v == (2 * j) as f32), "n = {n}");
            assert!(o.iter().enumerate().all(|(j, v)| *v == (2 * j + 1) as f32), "n = {n}");
            let mut back = vec![-1f32; n];
            interleave2(&e, &o, &mut back);
            assert_eq!(back, src, "n = {n}");
        }
    }

    #[test]
    fn activate_equals_apply_bit_for_bit() {
        let mut v: Vec<f32> = (0..37).map(|i| (i as f32 - 12.0) * 0.41).collect();
        v[3] = f32::NAN;
        v[4] = -0.0;
        v[5] = f32::INFINITY;
        for act in [Activation::Relu, Activation::Relu6] {
            let mut got = v.clone();
            activate(&mut got, act);
            for (g, x) in got.iter().zip(&v) {
                assert_eq!(g.to_bits(), act.apply(*x).to_bits(), "{act:?} at {x}");
            }
        }
    }

    #[test]
    fn copy_rows_moves_exactly_the_rows() {
        for (rows, len, ds, ss) in
            [(7, 7, 11, 7), (3, 16, 16, 20), (2, 17, 30, 17), (4, 64, 70, 64), (2, 100, 100, 120)]
        {
            let src: Vec<f32> = (0..rows * ss).map(|i| i as f32).collect();
            let mut dst = vec![-1f32; rows * ds];
            copy_rows(&mut dst, ds, &src, ss, rows, len);
            for r in 0..rows {
                for j in 0..ds {
                    let want = if j < len { src[r * ss + j] } else { -1.0 };
                    assert_eq!(dst[r * ds + j], want, "rows {rows} len {len}: ({r}, {j})");
                }
            }
        }
    }

    #[test]
    fn simd_and_plain_agree_bit_for_bit() {
        let src: Vec<f32> = (0..400).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let starts = [0usize, 3, 17, 40, 41];
        let w = [0.3f32, -1.25, 2.0, 0.001, -7.5];
        for n in [0usize, 1, 15, 16, 17, 63, 64, 65, 77, 127, 128, 129, 130, 255, 300] {
            let mut a = vec![0f32; n];
            let mut b = vec![0f32; n];
            correlate(&mut a, 0.5, &src, &starts, &w, None);
            correlate_plain(&mut b, 0.5, &src, &starts, &w, None);
            assert_eq!(a, b, "n = {n}");
            for act in [Activation::Relu, Activation::Relu6] {
                let mut src = src.clone();
                src[5] = f32::NAN;
                let (mut p, mut q) = (vec![0f32; n], vec![0f32; n]);
                correlate(&mut p, 0.5, &src, &starts, &w, Some(act));
                correlate_plain(&mut q, 0.5, &src, &starts, &w, Some(act));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&p), bits(&q), "{act:?} n = {n}");
            }
            for (i, v) in b.iter().enumerate() {
                let mut e = 0.5f32;
                for (s, w) in starts.iter().zip(&w) {
                    e += w * src[s + i];
                }
                assert_eq!(*v, e);
            }
        }
    }
}
