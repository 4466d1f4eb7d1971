//! The vectorised inner loops outside the matrix products, dispatched to the instruction set [`isa::current`]
//! chose (`kernels/`: AVX-512, AVX2, or plain loops). Every set computes the same sums in the same order (a
//! multiply, then an add, rounded each: no fused multiply-add), so the figures do not depend on the machine.
//! Each function has an `_on` twin taking the set, for the tests that compare the sets.

use super::act::Activation;
use super::isa::{self, Isa};
use super::kernels::scalar;
#[cfg(target_arch = "x86_64")]
use super::kernels::{avx2, avx512};

/// `out[i] = act(init + Σ_t w[t] · src[starts[t] + i])` for every i, the taps added in order.
///
/// Panics if a tap would read past `src` (the callers size their buffers so that it cannot).
pub(crate) fn correlate(out: &mut [f32], init: f32, src: &[f32], starts: &[usize], w: &[f32], act: Option<Activation>) {
    correlate_on(isa::current(), out, init, src, starts, w, act)
}

pub(crate) fn correlate_on(
    isa: Isa,
    out: &mut [f32],
    init: f32,
    src: &[f32],
    starts: &[usize],
    w: &[f32],
    act: Option<Activation>,
) {
    assert!(starts.len() == w.len() && starts.iter().all(|s| s + out.len() <= src.len()), "correlate: bounds");
    assert!(isa.available(), "correlate: this CPU has no {isa}");
    match isa {
        // SAFETY: the CPU has the set (asserted), and every read (src[starts[t] + i], i < out.len()) was
        // checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::correlate(out, init, src, starts, w, act) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::correlate(out, init, src, starts, w, act) },
        _ => scalar::correlate(out, init, src, starts, w, act),
    }
}

/// `v = act(v)` for every element, as [`Activation::apply`] computes it, with the given set.
pub(crate) fn activate_on(isa: Isa, v: &mut [f32], act: Activation) {
    assert!(isa.available(), "activate: this CPU has no {isa}");
    match isa {
        // SAFETY: the CPU has the set; the kernels stay within `v`
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::activate(v, act) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::activate(v, act) },
        _ => scalar::activate(v, act),
    }
}

/// `rows` rows of `len` values from `src` (rows `src_stride` apart) to `dst` (rows `dst_stride` apart): for the
/// narrow rows of small feature maps (7 or 14 values) vector moves instead of a `memcpy` call each.
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
    copy_rows_on(isa::current(), dst, dst_stride, src, src_stride, rows, len)
}

pub(crate) fn copy_rows_on(
    isa: Isa,
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
    assert!(isa.available(), "copy_rows: this CPU has no {isa}");
    let (d, s) = (dst.as_mut_ptr().cast::<f32>(), src.as_ptr());
    // SAFETY: the CPU has the set; every row's len values lie within both slices (checked above), and a
    // slice of `dst` and one of `src` cannot overlap
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::copy_rows(d, dst_stride, s, src_stride, rows, len),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::copy_rows(d, dst_stride, s, src_stride, rows, len),
            _ => scalar::copy_rows(d, dst_stride, s, src_stride, rows, len),
        }
    }
}

/// even[j] = src[2j], odd[j] = src[2j + 1] (even holds ⌈n/2⌉ values, odd ⌊n/2⌋).
pub(crate) fn deinterleave2(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    deinterleave2_on(isa::current(), src, even, odd)
}

pub(crate) fn deinterleave2_on(isa: Isa, src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(even.len() == src.len().div_ceil(2) && odd.len() == src.len() / 2, "deinterleave2: lengths");
    assert!(isa.available(), "deinterleave2: this CPU has no {isa}");
    // SAFETY: the CPU has the set; the kernels read and write only within the lengths checked above (see
    // each set's blocks and tails)
    let done = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::deinterleave2(src, even, odd) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::deinterleave2(src, even, odd) },
        _ => 0,
    };
    scalar::deinterleave2_from(done, src, even, odd);
}

/// dst[2j] = even[j], dst[2j + 1] = odd[j]: the inverse of [`deinterleave2`].
pub(crate) fn interleave2(even: &[f32], odd: &[f32], dst: &mut [f32]) {
    interleave2_on(isa::current(), even, odd, dst)
}

pub(crate) fn interleave2_on(isa: Isa, even: &[f32], odd: &[f32], dst: &mut [f32]) {
    assert!(even.len() == dst.len().div_ceil(2) && odd.len() == dst.len() / 2, "interleave2: lengths");
    assert!(isa.available(), "interleave2: this CPU has no {isa}");
    // SAFETY: as in deinterleave2, with reads and writes swapped
    let done = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::interleave2(even, odd, dst) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::interleave2(even, odd, dst) },
        _ => 0,
    };
    scalar::interleave2_from(done, even, odd, dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every kernel of `isa` against the scalar set, bit for bit, on lengths around every vector width and
    /// block (1, 8, 16, 64, 128 …), with NaN, -0 and infinities among the values.
    fn agrees_with_scalar(isa: Isa) {
        assert!(
            isa.available(),
            "built where the CPU had {isa} (build.rs), run where it has not: rebuild (touch crates/gradcam/build.rs)"
        );
        let mut src: Vec<f32> = (0..700).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let starts = [0usize, 3, 17, 40, 41, 200];
        let w = [0.3f32, -1.25, 2.0, 0.001, -7.5, 0.7];
        let lens = [
            0usize, 1, 3, 4, 5, 7, 8, 9, 14, 15, 16, 17, 31, 33, 49, 56, 63, 64, 65, 77, 120, 127, 128, 129, 130, 196,
            255, 300, 400,
        ];
        for with_nan in [false, true] {
            if with_nan {
                src[5] = f32::NAN;
                src[44] = f32::INFINITY;
                src[45] = -0.0;
            }
            for n in lens {
                for act in [None, Some(Activation::Relu), Some(Activation::Relu6)] {
                    let (mut p, mut q) = (vec![9f32; n], vec![-9f32; n]);
                    correlate_on(isa, &mut p, 0.5, &src, &starts, &w, act);
                    correlate_on(Isa::Scalar, &mut q, 0.5, &src, &starts, &w, act);
                    assert_eq!(bits(&p), bits(&q), "{isa} correlate {act:?} n = {n} nan = {with_nan}");
                }
                for act in [Activation::Relu, Activation::Relu6] {
                    let (mut p, mut q) = (src[..n].to_vec(), src[..n].to_vec());
                    activate_on(isa, &mut p, act);
                    activate_on(Isa::Scalar, &mut q, act);
                    assert_eq!(bits(&p), bits(&q), "{isa} activate {act:?} n = {n}");
                }
                let (mut e, mut o) = (vec![0f32; n.div_ceil(2)], vec![0f32; n / 2]);
                let (mut e2, mut o2) = (e.clone(), o.clone());
                deinterleave2_on(isa, &src[..n], &mut e, &mut o);
                deinterleave2_on(Isa::Scalar, &src[..n], &mut e2, &mut o2);
                assert_eq!((bits(&e), bits(&o)), (bits(&e2), bits(&o2)), "{isa} deinterleave2 n = {n}");
                let (mut d, mut d2) = (vec![1f32; n], vec![2f32; n]);
                interleave2_on(isa, &e, &o, &mut d);
                interleave2_on(Isa::Scalar, &e, &o, &mut d2);
                assert_eq!(bits(&d), bits(&d2), "{isa} interleave2 n = {n}");
                assert_eq!(bits(&d), bits(&src[..n]), "{isa} interleave2 ∘ deinterleave2 n = {n}");
            }
        }
        for (rows, len, ds, ss) in [
            (7, 7, 11, 7),
            (3, 16, 16, 20),
            (2, 17, 30, 17),
            (4, 64, 70, 64),
            (5, 3, 4, 3),
            (3, 12, 13, 12),
            (2, 100, 100, 120),
            (1, 65, 65, 65),
        ] {
            let src: Vec<f32> = (0..rows * ss).map(|i| i as f32).collect();
            let mut dst = vec![std::mem::MaybeUninit::new(-1f32); rows * ds];
            copy_rows_on(isa, &mut dst, ds, &src, ss, rows, len);
            for r in 0..rows {
                for j in 0..ds {
                    let want = if j < len { src[r * ss + j] } else { -1.0 };
                    // SAFETY: every element was initialised above
                    assert_eq!(
                        unsafe { dst[r * ds + j].assume_init() },
                        want,
                        "{isa} copy_rows {rows}x{len}: ({r}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    #[cfg_attr(not(has_avx512), ignore = "this CPU has no AVX-512F: its kernels cannot run here")]
    fn avx512_kernels_equal_scalar_bit_for_bit() {
        agrees_with_scalar(Isa::Avx512);
    }

    #[test]
    #[cfg_attr(not(has_avx2), ignore = "this CPU has no AVX2 with FMA: its kernels cannot run here")]
    fn avx2_kernels_equal_scalar_bit_for_bit() {
        agrees_with_scalar(Isa::Avx2);
    }

    /// The scalar set itself, against the formulas written out.
    #[test]
    fn scalar_kernels_compute_the_formulas() {
        let src: Vec<f32> = (0..400).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let starts = [0usize, 3, 17, 40, 41];
        let w = [0.3f32, -1.25, 2.0, 0.001, -7.5];
        for n in [0usize, 1, 15, 16, 17, 77, 300] {
            let mut b = vec![0f32; n];
            correlate_on(Isa::Scalar, &mut b, 0.5, &src, &starts, &w, None);
            for (i, v) in b.iter().enumerate() {
                let mut e = 0.5f32;
                for (s, w) in starts.iter().zip(&w) {
                    e += w * src[s + i];
                }
                assert_eq!(*v, e);
            }
            let (mut e, mut o) = (vec![0f32; n.div_ceil(2)], vec![0f32; n / 2]);
            deinterleave2_on(Isa::Scalar, &src[..n], &mut e, &mut o);
            assert!(e.iter().enumerate().all(|(j, v)| *v == src[2 * j]), "n = {n}");
            assert!(o.iter().enumerate().all(|(j, v)| *v == src[2 * j + 1]), "n = {n}");
        }
        let mut v = vec![f32::NAN, -0.0, -3.0, 2.0, 7.0, f32::INFINITY];
        activate_on(Isa::Scalar, &mut v, Activation::Relu6);
        assert!(v[0].is_nan());
        assert_eq!(&v[1..], &[0.0, 0.0, 2.0, 6.0, 6.0]);
        activate_on(Isa::Scalar, &mut v[1..], Activation::Relu);
        assert_eq!(&v[1..], &[0.0, 0.0, 2.0, 6.0, 6.0]);
    }
}
