//! The AVX-512 set: 16 lanes, 32 registers, masked loads and stores for every tail.
//!
//! # Safety
//! Every function here needs AVX-512F; the dispatchers (`simd.rs`, `gemm.rs`) call them only when
//! [`crate::ops::isa::current`] is `Avx512`, which it is only where the CPU has it.

use super::super::act::Activation;
use super::{Add, Tiles};
use std::arch::x86_64::*;

/// `act` on a vector as [`Activation::apply`] does it lane by lane (`max(x, 0)`: NaN gives 0;
/// `clamp(x, 0, 6)`: NaN stays NaN).
#[target_feature(enable = "avx512f")]
#[inline]
fn act_v(v: __m512, act: Option<Activation>) -> __m512 {
    match act {
        None => v,
        // max_ps(a, b) is b when either is NaN
        Some(Activation::Relu) => _mm512_max_ps(v, _mm512_setzero_ps()),
        Some(Activation::Relu6) => _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(_mm512_setzero_ps(), v)),
    }
}

/// The first `k` ≤ 16 lanes.
#[inline]
fn lanes(k: usize) -> __mmask16 {
    if k >= 16 {
        u16::MAX
    } else {
        ((1u32 << k) - 1) as u16
    }
}

#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn activate(v: &mut [f32], act: Activation) {
    let p = v.as_mut_ptr();
    let mut i = 0;
    while i + 16 <= v.len() {
        _mm512_storeu_ps(p.add(i), act_v(_mm512_loadu_ps(p.add(i)), Some(act)));
        i += 16;
    }
    if i < v.len() {
        let m = lanes(v.len() - i);
        _mm512_mask_storeu_ps(p.add(i), m, act_v(_mm512_maskz_loadu_ps(m, p.add(i)), Some(act)));
    }
}

/// Blocks of 128 outputs held in eight registers across all taps, then one block of the rest (up to eight
/// vectors, the last one masked). Eight independent sums per tap keep both adders busy through the add's
/// latency (with four, a 7×7 map's 77 outputs took two passes, one of them a single dependent chain).
/// The caller checks that every read `src[starts[t] + i]`, i < out.len(), lies within `src`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn correlate(
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
        let mask = lanes(n - i - 16 * (v - 1));
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
        _mm512_mask_storeu_ps(op.add(16 * r), m(r), act_v(*acc, act));
    }
}

/// Rows of up to 64 values a masked vector move each (a `memcpy` call costs more for the 7 or 14 values of a
/// small feature map's rows); longer rows by `copy_nonoverlapping`. The caller checks the bounds.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn copy_rows(d: *mut f32, ds: usize, s: *const f32, ss: usize, rows: usize, len: usize) {
    if len > 64 {
        return super::scalar::copy_rows(d, ds, s, ss, rows, len);
    }
    for r in 0..rows {
        let mut j = 0;
        while j < len {
            let m = lanes(len - j);
            let v = _mm512_maskz_loadu_ps(m, s.add(r * ss + j));
            _mm512_mask_storeu_ps(d.add(r * ds + j), m, v);
            j += 16;
        }
    }
}

/// Blocks of 16 pairs, then the tail masked; returns how many pairs it wrote (the odd last value of `even`
/// included in the writes). The caller checks the lengths (even ⌈n/2⌉, odd ⌊n/2⌋).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn deinterleave2(src: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
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
        let a = _mm512_maskz_loadu_ps(lanes(r), src.as_ptr().add(2 * j));
        let b = _mm512_maskz_loadu_ps(lanes(r.saturating_sub(16)), src.as_ptr().add(2 * j + 16));
        _mm512_mask_storeu_ps(even.as_mut_ptr().add(j), lanes(r.div_ceil(2)), _mm512_permutex2var_ps(a, ie, b));
        _mm512_mask_storeu_ps(odd.as_mut_ptr().add(j), lanes(r / 2), _mm512_permutex2var_ps(a, io, b));
        j += r / 2;
    }
    j
}

/// Blocks of 16 pairs; returns how many it wrote. The caller checks the lengths.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn interleave2(even: &[f32], odd: &[f32], dst: &mut [f32]) -> usize {
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

/// The product's tiles: 6 rows × 64 columns of dst in 24 registers across a block of k, loading 4 vectors of
/// a row of B and broadcasting 6 values of A per step (24 fused multiply-adds).
pub(crate) struct Tiles512;

impl Tiles for Tiles512 {
    const LANES: usize = 16;
    const NV: usize = 4;
    const MR: usize = 6;

    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        dst: *mut f32,
        ldd: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const f32,
        tab: *const usize,
        kc: usize,
        rows: usize,
        cols: usize,
        add: Add,
        act: Option<Activation>,
    ) {
        let v = cols.div_ceil(16);
        let mask = lanes(cols - (v - 1) * 16);
        macro_rules! go {
            ($r:literal, $v:literal) => {
                if tab.is_null() {
                    kernel::<$r, $v, false>(dst, ldd, a, a_rs, a_cs, b, tab, kc, mask, add, act)
                } else {
                    kernel::<$r, $v, true>(dst, ldd, a, a_rs, a_cs, b, tab, kc, mask, add, act)
                }
            };
        }
        macro_rules! by_v {
            ($r:literal) => {
                match v {
                    1 => go!($r, 1),
                    2 => go!($r, 2),
                    3 => go!($r, 3),
                    _ => go!($r, 4),
                }
            };
        }
        match rows {
            1 => by_v!(1),
            2 => by_v!(2),
            3 => by_v!(3),
            4 => by_v!(4),
            5 => by_v!(5),
            _ => by_v!(6),
        }
    }
}

/// R rows × V vectors; the last vector's lanes limited by `mask`; the sums over this k block (from zero, in the
/// order of k) added to `add`, then `act` applied (as `Activation::apply` computes it) on the way out.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn kernel<const R: usize, const V: usize, const TAB: bool>(
    dst: *mut f32,
    ldd: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    tab: *const usize,
    kc: usize,
    mask: u16,
    add: Add,
    act: Option<Activation>,
) {
    let m = |j: usize| if j + 1 == V { mask } else { u16::MAX };
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let mut bp = b;
    let mut ap = a;
    for j in 0..kc {
        if TAB {
            bp = b.add(*tab.add(j));
        }
        let mut x = [_mm512_setzero_ps(); V];
        for (j, xv) in x.iter_mut().enumerate() {
            *xv =
                if j + 1 == V { _mm512_maskz_loadu_ps(mask, bp.add(16 * j)) } else { _mm512_loadu_ps(bp.add(16 * j)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(*ap.add(r * a_rs));
            for (c, xv) in row.iter_mut().zip(&x) {
                *c = _mm512_fmadd_ps(w, *xv, *c);
            }
        }
        if !TAB {
            bp = bp.add(ldd);
        }
        ap = ap.add(a_cs);
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, c) in row.iter().enumerate() {
            let at = dst.add(r * ldd + 16 * j);
            let c = match add {
                Add::Nothing => *c,
                Add::Dst => _mm512_add_ps(*c, _mm512_maskz_loadu_ps(m(j), at)),
                Add::Bias(bias) => _mm512_add_ps(*c, _mm512_set1_ps(*bias.add(r))),
            };
            _mm512_mask_storeu_ps(at, m(j), act_v(c, act));
        }
    }
}
