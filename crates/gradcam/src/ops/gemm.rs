//! The matrix product of the convolutions: dst (m×n) (+)= A (m×k, any strides) · B (k×n, rows n apart).
//!
//! B is row-major (an image's pixels, im2col's columns, or an output gradient) and A a weight matrix, read
//! through strides (transposed in the backward passes), so no packing is needed: an AVX-512 tile keeps 6 rows ×
//! 64 columns of dst in 24 registers across a block of k, loading 4 vectors of a row of B and broadcasting 6
//! values of A per step (24 fused multiply-adds). Columns are cut into tiles of up to 4 vectors (the last vector
//! masked), k into blocks whose tile of B stays in the core's L2 while every row tile of A passes over it. Tiles are spread over
//! the rayon pool. The bias, the accumulation onto dst and the activation happen in the tile's one store.
//!
//! Every element is computed exactly as the `gemm` crate computes it (the path on machines without AVX-512, and
//! the one the golden tests were first passed with), whatever the tiling or the number of threads: k is cut into
//! the same blocks (see [`k_block`]), each block is summed from zero by fused multiply-adds in the order of k,
//! and its sum is added to what dst holds (the bias, for the first block of a convolution). So the tiles change
//! the speed, never a figure.

use super::act::Activation;
use rayon::prelude::*;

/// Vectors (of 16 columns) per tile, at most.
const NV: usize = 4;
/// Rows per tile.
const MR: usize = 6;

/// The depth of the k blocks, as the `gemm` crate (0.19) cuts them for this product: each block's sum is
/// added to dst, so the blocks decide the rounding. k is split into equal blocks of at most 512 (its
/// `kernel_params`, whose L1-derived block is 512 on every common cache geometry), except where both
/// dimensions are ≤ 64, where blocks are 512 deep with a shorter last one. (The crate sees the product
/// transposed: its m is our n.) `tiles_equal_the_gemm_crate_bit_for_bit` checks this on the running machine.
/// Degenerate products take other paths in the crate (a dimension of 1, k ≤ 2, or m·n ≤ 256 with k over
/// 512: vector products and blocks of 1024) and may round differently there; no layer of the models is one.
fn k_block(m: usize, n: usize, k: usize) -> usize {
    if m <= 64 && n <= 64 {
        k.min(512)
    } else {
        k.div_ceil(k.div_ceil(512))
    }
}

/// dst (m×n, row stride n) = (dst if `accumulate`, else 0) + a (m×k; element (i, j) at `i·a_rs + j·a_cs`) ·
/// b (k×n, row stride n): the AVX-512 tiles where the CPU has them, else the `gemm` crate (same figures).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    if !tiles_available() || m == 0 || n == 0 || k == 0 {
        return matmul_crate(dst, accumulate, a, a_rs, a_cs, b, m, n, k);
    }
    check(dst.len(), a, a_rs, a_cs, b, m, n, k);
    let start = if accumulate { Start::Dst } else { Start::Zero };
    tiled(Shared(dst.as_mut_ptr()), start, a, a_rs, a_cs, b, None, m, n, k, None);
}

/// The sizes every product checks before touching memory through raw pointers.
#[allow(clippy::too_many_arguments)]
fn check(dst_len: usize, a: &[f32], a_rs: usize, a_cs: usize, b: &[f32], m: usize, n: usize, k: usize) {
    assert!(dst_len >= m * n && b.len() >= k * n, "matmul: sizes");
    assert!(m == 0 || k == 0 || (m - 1) * a_rs + (k - 1) * a_cs < a.len(), "matmul: a too short");
}

/// [`matmul`] by the `gemm` crate.
#[allow(clippy::too_many_arguments)]
fn matmul_crate(
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    check(dst.len(), a, a_rs, a_cs, b, m, n, k);
    if m == 0 || n == 0 || k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    let par = if m * n * k >= 48 * 48 * 48 && super::threads() > 1 {
        gemm::Parallelism::Rayon(super::threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices hold at least the m×n, m×k (through the given strides) and k×n elements gemm reads
    // and writes (checked above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Whether this CPU runs the AVX-512 tiles.
pub(crate) fn tiles_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return true;
    }
    false
}

/// dst (m×n, uninitialised) = act(bias[i] + a · b) on every element: a convolution's output written once (with
/// the tiles; without AVX-512, bias fill, the `gemm` crate and an activation pass).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_bias_act(
    dst: &mut [std::mem::MaybeUninit<f32>],
    bias: &[f32],
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    act: Option<Activation>,
) {
    check(dst.len(), a, a_rs, a_cs, b, m, n, k);
    assert!(bias.len() >= m && k > 0, "matmul_bias_act: sizes");
    if m == 0 || n == 0 {
        return;
    }
    if tiles_available() {
        return tiled(
            Shared(dst.as_mut_ptr().cast()),
            Start::Bias(bias.as_ptr()),
            a,
            a_rs,
            a_cs,
            b,
            None,
            m,
            n,
            k,
            act,
        );
    }
    for (row, b) in dst[..m * n].chunks_mut(n).zip(bias) {
        row.fill(std::mem::MaybeUninit::new(*b));
    }
    // SAFETY: every element was initialised just above
    let dst = unsafe { &mut *(&mut dst[..m * n] as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
    matmul_crate(dst, true, a, a_rs, a_cs, b, m, n, k);
    if let Some(act) = act {
        dst.par_chunks_mut(1 << 14).for_each(|c| super::simd::activate(c, act));
    }
}

/// [`matmul_bias_act`] into initialised memory.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_bias_act_into(
    dst: &mut [f32],
    bias: &[f32],
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    act: Option<Activation>,
) {
    // SAFETY: f32 and MaybeUninit<f32> have the same layout, and only initialised values are written
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) };
    matmul_bias_act(dst, bias, a, a_rs, a_cs, b, m, n, k, act)
}

/// [`matmul_bias_act`] with B's rows anywhere in `b`: row j is `b[b_rows[j]..b_rows[j] + n]` (a convolution
/// reading its input's shifted planes in place of an im2col matrix). The same figures as with those rows
/// copied into a matrix.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_bias_act_rows(
    dst: &mut [std::mem::MaybeUninit<f32>],
    bias: &[f32],
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rows: &[usize],
    m: usize,
    n: usize,
    k: usize,
    act: Option<Activation>,
) {
    assert!(b_rows.len() == k && b_rows.iter().all(|r| r + n <= b.len()), "matmul_bias_act_rows: rows");
    assert!(dst.len() >= m * n && bias.len() >= m && k > 0, "matmul_bias_act_rows: sizes");
    assert!(m == 0 || (m - 1) * a_rs + (k - 1) * a_cs < a.len(), "matmul_bias_act_rows: a too short");
    if m == 0 || n == 0 {
        return;
    }
    if tiles_available() {
        let (d, start) = (Shared(dst.as_mut_ptr().cast()), Start::Bias(bias.as_ptr()));
        return tiled(d, start, a, a_rs, a_cs, b, Some(b_rows), m, n, k, act);
    }
    let mut rows = Vec::with_capacity(k * n);
    for r in b_rows {
        rows.extend_from_slice(&b[*r..r + n]);
    }
    matmul_bias_act(dst, bias, a, a_rs, a_cs, &rows, m, n, k, act)
}

/// What the first k block's sum is added to: nothing, dst, or the row's bias. Later blocks add to dst.
#[derive(Clone, Copy, Debug)]
enum Start {
    Zero,
    Dst,
    Bias(*const f32),
}
// SAFETY: the bias pointer is only read, and the slice it comes from outlives the parallel loop.
unsafe impl Send for Start {}
unsafe impl Sync for Start {}

/// A raw pointer the tiles share; each tile writes only its own rows × columns of dst.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: tiles write disjoint parts of dst (see `tiled`), and the borrow of dst outlives the parallel loop.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

#[allow(clippy::too_many_arguments)]
fn tiled(
    d: Shared,
    start: Start,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rows: Option<&[usize]>,
    m: usize,
    n: usize,
    k: usize,
    act: Option<Activation>,
) {
    // Columns are cut into tiles of at most 4 vectors, spread evenly (13 vectors: 4+3+3+3, not 4+4+4+1): a
    // one-vector tile does 6 multiply-adds per 7 loads and would run at half speed.
    let vectors = n.div_ceil(16);
    let col_tiles = vectors.div_ceil(NV);
    let (base, extra) = (vectors / col_tiles, vectors % col_tiles);
    let tile_at = move |t: usize| 16 * (t * base + t.min(extra));
    let row_tiles = m.div_ceil(MR);
    let kb = k_block(m, n, k);
    // Narrow products (up to 4 column tiles: a k block of B is then at most 512 KB, in L2) take all their
    // columns in every job, so that each 6-row strip of A is read once and reused across the columns; wide
    // ones one column tile per job. Rows are cut into groups until there are enough jobs to balance the pool.
    let tiles_per_job = if col_tiles <= 4 { col_tiles } else { 1 };
    let col_groups = col_tiles.div_ceil(tiles_per_job);
    let want = 4 * super::threads();
    let groups = if col_groups >= want { 1 } else { want.div_ceil(col_groups).min(row_tiles) };
    let per_group = row_tiles.div_ceil(groups);
    let groups = row_tiles.div_ceil(per_group);
    let job = move |j: usize| {
        let (cg, gi) = (j / groups, j % groups);
        let (t_lo, t_hi) = (cg * tiles_per_job, ((cg + 1) * tiles_per_job).min(col_tiles));
        let (r_lo, r_hi) = (gi * per_group * MR, ((gi + 1) * per_group * MR).min(m));
        let mut k0 = 0;
        while k0 < k {
            let kc = kb.min(k - k0);
            let act = if k0 + kc == k { act } else { None };
            let mut r0 = r_lo;
            while r0 < r_hi {
                let rows = MR.min(r_hi - r0);
                let add = match start {
                    _ if k0 > 0 => Add::Dst,
                    Start::Zero => Add::Nothing,
                    Start::Dst => Add::Dst,
                    Start::Bias(bias) => Add::Bias(bias.wrapping_add(r0)),
                };
                for ct in t_lo..t_hi {
                    let c0 = tile_at(ct);
                    let cols = (tile_at(ct + 1) - c0).min(n - c0);
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!("no AVX-512 tiles here ({add:?}, {act:?}, {cols})");
                    // SAFETY: AVX-512F is there (checked by the caller); rows r0..r0+rows < m and columns
                    // c0..c0+cols ≤ n of dst, rows k0..k0+kc < k of b, and A's elements (r0 + i, k0 + j) with
                    // i < rows, j < kc lie within `a` (checked in `check`); this job alone writes those
                    // elements of dst.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        let (bp, tab) = match b_rows {
                            None => (b.as_ptr().add(k0 * n + c0), std::ptr::null()),
                            Some(t) => (b.as_ptr().add(c0), t.as_ptr().add(k0)),
                        };
                        tile(
                            d.at(r0 * n + c0),
                            n,
                            a.as_ptr().add(r0 * a_rs + k0 * a_cs),
                            a_rs,
                            a_cs,
                            bp,
                            tab,
                            kc,
                            rows,
                            cols,
                            add,
                            act,
                        )
                    };
                }
                r0 += rows;
            }
            k0 += kc;
        }
    };
    let jobs = col_groups * groups;
    if jobs == 1 || super::threads() == 1 || m * n * k < 32 * 32 * 32 {
        (0..jobs).for_each(job);
    } else {
        (0..jobs).into_par_iter().for_each(job);
    }
}

/// What a tile adds its block's sums to on the way out.
#[derive(Clone, Copy, Debug)]
enum Add {
    Nothing,
    Dst,
    /// bias[row]
    Bias(*const f32),
}

/// One tile of `rows` ≤ 6 rows and `cols` ≤ 64 columns over `kc` steps of k. B's rows are `ldd` apart from
/// `b`, or, where `tab` is not null, row j starts at `b + tab[j]`.
///
/// # Safety
/// AVX-512F must be available; dst, a, b and tab must be valid for the elements named in `tiled`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
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
    let last = cols - (v - 1) * 16;
    let mask: u16 = if last == 16 { u16::MAX } else { ((1u32 << last) - 1) as u16 };
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

/// R rows × V vectors; the last vector's lanes limited by `mask`; the sums over this k block (from zero, in the
/// order of k) added to `add`, then `act` applied (as `Activation::apply` computes it) on the way out.
#[cfg(target_arch = "x86_64")]
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
    use std::arch::x86_64::*;
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
            _mm512_mask_storeu_ps(at, m(j), super::simd::act_avx512(c, act));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn reference(
        dst: &mut [f32],
        acc: bool,
        a: &[f32],
        a_rs: usize,
        a_cs: usize,
        b: &[f32],
        m: usize,
        n: usize,
        k: usize,
    ) {
        for i in 0..m {
            for j in 0..n {
                let mut s = if acc { dst[i * n + j] as f64 } else { 0.0 };
                for t in 0..k {
                    s += a[i * a_rs + t * a_cs] as f64 * b[t * n + j] as f64;
                }
                dst[i * n + j] = s as f32;
            }
        }
    }

    /// Odd sizes around the tile edges (6 rows, 16/64/256 columns, 512-deep k blocks), both layouts of A:
    /// `matmul` (the `gemm` crate) with and without accumulation and, where the CPU has AVX-512, the tiles
    /// at every size, against a double-precision triple loop.
    #[test]
    fn matches_a_triple_loop_on_odd_sizes() {
        let sizes = [
            (1, 1, 1),
            (5, 17, 3),
            (6, 64, 16),
            (7, 65, 9),
            (13, 49, 27),
            (12, 200, 600),
            (96, 130, 16),
            (11, 15, 1100),
            (7, 515, 9),
            (13, 1000, 600),
            (96, 784, 16),
            (5, 577, 1030),
        ];
        let mut seed = 1u64;
        let mut rnd = |len: usize| -> Vec<f32> {
            seed += 1;
            crate::util::xorshift_unit(seed * 7919, len).into_iter().map(|v| 2.0 * v - 1.0).collect()
        };
        for (m, n, k) in sizes {
            for transposed in [false, true] {
                for acc in [false, true] {
                    let a = rnd(m * k);
                    let b = rnd(k * n);
                    let init = rnd(m * n);
                    let (rs, cs) = if transposed { (1, m) } else { (k, 1) };
                    let mut want = init.clone();
                    reference(&mut want, acc, &a, rs, cs, &b, m, n, k);
                    let tol = 1e-6 * (k as f32).sqrt() * 4.0;
                    let worst = |got: &[f32]| got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                    let mut ours = init.clone();
                    matmul(&mut ours, acc, &a, rs, cs, &b, m, n, k);
                    let w = worst(&ours);
                    assert!(w <= tol, "matmul {m}x{n}x{k} transposed={transposed} acc={acc}: off by {w}");
                    if tiles_available() && !acc {
                        // the tiles from a zero bias
                        let mut tiles = init.clone();
                        matmul_bias_act_into(&mut tiles, &vec![0.0; m], &a, rs, cs, &b, m, n, k, None);
                        let w = worst(&tiles);
                        assert!(w <= tol, "tiles with bias {m}x{n}x{k} transposed={transposed}: off by {w}");
                    }
                }
            }
        }
    }

    /// Bias and activation fused into the tiles' stores equal the product, plus the bias, then the
    /// activation as `Activation::apply` computes it (NaN included).
    #[test]
    fn fused_bias_and_activation_match_the_separate_steps() {
        let (m, n, k) = (13, 530, 70);
        if !tiles_available() {
            eprintln!("no AVX-512 here: the tiles are not used, nothing to compare");
            return;
        }
        let a: Vec<f32> = crate::util::xorshift_unit(11, m * k).into_iter().map(|v| 4.0 * v - 2.0).collect();
        let mut b: Vec<f32> = crate::util::xorshift_unit(12, k * n).into_iter().map(|v| 4.0 * v - 2.0).collect();
        b[3] = f32::NAN;
        let bias: Vec<f32> = crate::util::xorshift_unit(13, m).into_iter().map(|v| v - 0.5).collect();
        for act in [None, Some(Activation::Relu), Some(Activation::Relu6)] {
            let mut want: Vec<f32> = (0..m * n).map(|i| bias[i / n]).collect();
            reference(&mut want, true, &a, k, 1, &b, m, n, k);
            if let Some(act) = act {
                want.iter_mut().for_each(|v| *v = act.apply(*v));
            }
            let mut ours = vec![0f32; m * n];
            matmul_bias_act_into(&mut ours, &bias, &a, k, 1, &b, m, n, k, act);
            for (i, (x, y)) in ours.iter().zip(&want).enumerate() {
                assert!(
                    (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                    "{act:?}: element {i}: {x} instead of {y}"
                );
            }
            assert_eq!(ours.iter().filter(|v| v.is_nan()).count(), want.iter().filter(|v| v.is_nan()).count());
        }
    }

    /// The tiles compute every element exactly as the `gemm` crate does (the same k blocks, each summed from
    /// zero in the order of k and added to dst), so they change no figure: bit-for-bit equality on shapes of the
    /// models' layers (k within one block, split into 2–9 blocks, both dimensions ≤ 64), both layouts of A, with
    /// and without accumulation, with a bias.
    #[test]
    fn tiles_equal_the_gemm_crate_bit_for_bit() {
        if !tiles_available() {
            eprintln!("no AVX-512 here: matmul is the gemm crate itself, nothing to compare");
            return;
        }
        let shapes = [
            (480, 80, 196),
            (112, 672, 196),
            (192, 1152, 49),
            (64, 576, 3136),
            (300, 513, 49),
            (100, 1024, 49),
            (256, 2304, 196),
            (40, 4608, 49),
            (32, 1300, 60),
            (7, 700, 9),
            (64, 64, 64),
            (65, 1025, 64),
            (13, 27, 530),
        ];
        for (i, (m, k, n)) in shapes.into_iter().enumerate() {
            let seed = 100 + 10 * i as u64;
            let rnd = |s: u64, len: usize, scale: f32| -> Vec<f32> {
                crate::util::xorshift_unit(s, len).into_iter().map(|v| scale * (v - 0.5)).collect()
            };
            let (a, b, init, bias) =
                (rnd(seed, m * k, 1.0), rnd(seed + 1, k * n, 1.0), rnd(seed + 2, m * n, 8.0), rnd(seed + 3, m, 8.0));
            let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
            for transposed in [false, true] {
                let (rs, cs) = if transposed { (1, m) } else { (k, 1) };
                for acc in [false, true] {
                    let (mut ours, mut theirs) = (init.clone(), init.clone());
                    matmul(&mut ours, acc, &a, rs, cs, &b, m, n, k);
                    matmul_crate(&mut theirs, acc, &a, rs, cs, &b, m, n, k);
                    assert!(same(&ours, &theirs), "{m}x{n}x{k} transposed={transposed} acc={acc}");
                }
                let mut theirs: Vec<f32> = (0..m * n).map(|j| bias[j / n]).collect();
                matmul_crate(&mut theirs, true, &a, rs, cs, &b, m, n, k);
                let mut ours = vec![f32::NAN; m * n];
                matmul_bias_act_into(&mut ours, &bias, &a, rs, cs, &b, m, n, k, None);
                assert!(same(&ours, &theirs), "{m}x{n}x{k} transposed={transposed} with a bias");
            }
        }
    }
}
