//! The AVX2 + FMA set: 8 lanes, 16 registers. Tails are done with `vmaskmovps` loads and stores (the
//! product's last column vector, the correlation's last vector) or with narrower moves (row copies, where a
//! masked store would cost more than the row).
//!
//! # Safety
//! Every function here needs AVX2 and FMA; the dispatchers (`simd.rs`, `gemm.rs`) call them only when
//! [`crate::ops::isa::current`] is `Avx2`, which it is only where the CPU has both.

use super::super::act::Activation;
use super::{Add, Tiles};
use std::arch::x86_64::*;

/// Eight lanes on, eight off: `mask(k)` reads the eight from `8 - k`.
static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The first `k` ≤ 8 lanes, as a `vmaskmovps` mask.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn mask(k: usize) -> __m256i {
    // SAFETY: 8 - min(k, 8) + 8 ≤ 16 values of MASKS
    unsafe { _mm256_loadu_si256(MASKS.as_ptr().add(8 - k.min(8)).cast()) }
}

/// `act` on a vector as [`Activation::apply`] does it lane by lane (`max(x, 0)`: NaN gives 0;
/// `clamp(x, 0, 6)`: NaN stays NaN), as in the AVX-512 set.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn act_v(v: __m256, act: Option<Activation>) -> __m256 {
    match act {
        None => v,
        // max_ps(a, b) is b when either is NaN
        Some(Activation::Relu) => _mm256_max_ps(v, _mm256_setzero_ps()),
        Some(Activation::Relu6) => _mm256_min_ps(_mm256_set1_ps(6.0), _mm256_max_ps(_mm256_setzero_ps(), v)),
    }
}

#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn activate(v: &mut [f32], act: Activation) {
    let p = v.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= v.len() {
        _mm256_storeu_ps(p.add(i), act_v(_mm256_loadu_ps(p.add(i)), Some(act)));
        i += 8;
    }
    v[i..].iter_mut().for_each(|x| *x = act.apply(*x));
}

/// Blocks of 64 outputs held in eight registers across all taps, then one block of the rest (up to eight
/// vectors, the last one masked). The caller checks that every read `src[starts[t] + i]`, i < out.len(), lies
/// within `src`.
#[target_feature(enable = "avx2,fma")]
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
    while i + 64 <= n {
        correlate_block::<8, false>(op.add(i), sp.add(i), init, starts, w, act, 8);
        i += 64;
    }
    if i < n {
        let v = (n - i).div_ceil(8);
        let last = n - i - 8 * (v - 1);
        let (o, s) = (op.add(i), sp.add(i));
        macro_rules! go {
            ($v:literal) => {
                if last == 8 {
                    correlate_block::<$v, false>(o, s, init, starts, w, act, last)
                } else {
                    correlate_block::<$v, true>(o, s, init, starts, w, act, last)
                }
            };
        }
        match v {
            1 => go!(1),
            2 => go!(2),
            3 => go!(3),
            4 => go!(4),
            5 => go!(5),
            6 => go!(6),
            7 => go!(7),
            _ => go!(8),
        }
    }
}

/// V vectors of outputs from `op`, reading from `sp` + each tap's start; where MASKED, the last vector's
/// lanes limited to `last`.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn correlate_block<const V: usize, const MASKED: bool>(
    op: *mut f32,
    sp: *const f32,
    init: f32,
    starts: &[usize],
    w: &[f32],
    act: Option<Activation>,
    last: usize,
) {
    let mk = mask(last);
    let mut a = [_mm256_set1_ps(init); V];
    for (s, w) in starts.iter().zip(w) {
        let wv = _mm256_set1_ps(*w);
        let p = sp.add(*s);
        for (r, acc) in a.iter_mut().enumerate() {
            let x =
                if MASKED && r + 1 == V { _mm256_maskload_ps(p.add(8 * r), mk) } else { _mm256_loadu_ps(p.add(8 * r)) };
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(wv, x));
        }
    }
    for (r, acc) in a.iter().enumerate() {
        let v = act_v(*acc, act);
        if MASKED && r + 1 == V {
            _mm256_maskstore_ps(op.add(8 * r), mk, v);
        } else {
            _mm256_storeu_ps(op.add(8 * r), v);
        }
    }
}

/// Rows of up to 64 values by 8-, 4- and 1-value moves (no masked store: on some AMD cores one costs more
/// than a short row); longer rows by `copy_nonoverlapping`. The caller checks the bounds.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn copy_rows(d: *mut f32, ds: usize, s: *const f32, ss: usize, rows: usize, len: usize) {
    if len > 64 {
        return super::scalar::copy_rows(d, ds, s, ss, rows, len);
    }
    for r in 0..rows {
        let (s, d) = (s.add(r * ss), d.add(r * ds));
        let mut j = 0;
        while j + 8 <= len {
            _mm256_storeu_ps(d.add(j), _mm256_loadu_ps(s.add(j)));
            j += 8;
        }
        if j + 4 <= len {
            _mm_storeu_ps(d.add(j), _mm_loadu_ps(s.add(j)));
            j += 4;
        }
        while j < len {
            *d.add(j) = *s.add(j);
            j += 1;
        }
    }
}

/// Blocks of 8 pairs; returns how many pairs it wrote (the callers do the rest). The caller checks the
/// lengths (even ⌈n/2⌉, odd ⌊n/2⌋).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn deinterleave2(src: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    let mut j = 0;
    while 2 * j + 16 <= src.len() {
        let a = _mm256_loadu_ps(src.as_ptr().add(2 * j));
        let b = _mm256_loadu_ps(src.as_ptr().add(2 * j + 8));
        // per 128-bit half: (a0 a2 b0 b2 | a4 a6 b4 b6), then the 64-bit quarters reordered 0 2 1 3
        let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
        let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
        let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
        _mm256_storeu_ps(even.as_mut_ptr().add(j), e);
        _mm256_storeu_ps(odd.as_mut_ptr().add(j), o);
        j += 8;
    }
    j
}

/// Blocks of 8 pairs; returns how many it wrote. The caller checks the lengths.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn interleave2(even: &[f32], odd: &[f32], dst: &mut [f32]) -> usize {
    let mut j = 0;
    while 2 * j + 16 <= dst.len() {
        let e = _mm256_loadu_ps(even.as_ptr().add(j));
        let o = _mm256_loadu_ps(odd.as_ptr().add(j));
        // per 128-bit half: (e0 o0 e1 o1 | e4 o4 e5 o5) and (e2 o2 e3 o3 | e6 o6 e7 o7)
        let lo = _mm256_unpacklo_ps(e, o);
        let hi = _mm256_unpackhi_ps(e, o);
        _mm256_storeu_ps(dst.as_mut_ptr().add(2 * j), _mm256_permute2f128_ps::<0x20>(lo, hi));
        _mm256_storeu_ps(dst.as_mut_ptr().add(2 * j + 8), _mm256_permute2f128_ps::<0x31>(lo, hi));
        j += 8;
    }
    j
}

/// The product's tiles: 6 rows × 16 columns of dst in 12 registers across a block of k, loading 2 vectors of
/// a row of B and broadcasting 6 values of A per step (12 fused multiply-adds; with the two loads and the
/// broadcast, 15 of the 16 registers).
pub(crate) struct Tiles256;

impl Tiles for Tiles256 {
    const LANES: usize = 8;
    const NV: usize = 2;
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
        let v = cols.div_ceil(8);
        let last = cols - (v - 1) * 8;
        macro_rules! go {
            ($r:literal, $v:literal) => {
                match (tab.is_null(), last == 8) {
                    (true, true) => kernel::<$r, $v, false, false>(dst, ldd, a, a_rs, a_cs, b, tab, kc, last, add, act),
                    (true, false) => kernel::<$r, $v, false, true>(dst, ldd, a, a_rs, a_cs, b, tab, kc, last, add, act),
                    (false, true) => kernel::<$r, $v, true, false>(dst, ldd, a, a_rs, a_cs, b, tab, kc, last, add, act),
                    (false, false) => kernel::<$r, $v, true, true>(dst, ldd, a, a_rs, a_cs, b, tab, kc, last, add, act),
                }
            };
        }
        macro_rules! by_v {
            ($r:literal) => {
                match v {
                    1 => go!($r, 1),
                    _ => go!($r, 2),
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

/// R rows × V vectors; where MASKED, the last vector's lanes limited to `last`; the sums over this k block
/// (from zero, in the order of k) added to `add`, then `act` applied on the way out.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn kernel<const R: usize, const V: usize, const TAB: bool, const MASKED: bool>(
    dst: *mut f32,
    ldd: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    tab: *const usize,
    kc: usize,
    last: usize,
    add: Add,
    act: Option<Activation>,
) {
    let mk = mask(last);
    let masked = |j: usize| MASKED && j + 1 == V;
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let mut bp = b;
    let mut ap = a;
    for k in 0..kc {
        if TAB {
            bp = b.add(*tab.add(k));
        }
        let mut x = [_mm256_setzero_ps(); V];
        for (j, xv) in x.iter_mut().enumerate() {
            *xv = if masked(j) { _mm256_maskload_ps(bp.add(8 * j), mk) } else { _mm256_loadu_ps(bp.add(8 * j)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let w = _mm256_broadcast_ss(&*ap.add(r * a_rs));
            for (c, xv) in row.iter_mut().zip(&x) {
                *c = _mm256_fmadd_ps(w, *xv, *c);
            }
        }
        if !TAB {
            bp = bp.add(ldd);
        }
        ap = ap.add(a_cs);
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, c) in row.iter().enumerate() {
            let at = dst.add(r * ldd + 8 * j);
            let c = match add {
                Add::Nothing => *c,
                Add::Dst if masked(j) => _mm256_add_ps(*c, _mm256_maskload_ps(at, mk)),
                Add::Dst => _mm256_add_ps(*c, _mm256_loadu_ps(at)),
                Add::Bias(bias) => _mm256_add_ps(*c, _mm256_set1_ps(*bias.add(r))),
            };
            let c = act_v(c, act);
            if masked(j) {
                _mm256_maskstore_ps(at, mk, c);
            } else {
                _mm256_storeu_ps(at, c);
            }
        }
    }
}
