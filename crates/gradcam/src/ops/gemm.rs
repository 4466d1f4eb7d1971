//! The matrix product of the convolutions: dst (m×n) (+)= A (m×k, any strides) · B (k×n, rows n apart).
//!
//! B is row-major (an image's pixels, im2col's columns, or an output gradient) and A a weight matrix, read
//! through strides (transposed in the backward passes), so no packing is needed: a register-blocked tile of the
//! instruction set `isa::current` chose (`kernels/`: AVX-512, 6 rows × 4 vectors of 16; AVX2, 6 rows × 2
//! vectors of 8) keeps a block of dst in registers across a block of k, loading a row of B and broadcasting
//! values of A per step. Columns are cut into tiles, k into blocks whose tile of B stays in the core's L2 while
//! every row tile of A passes over it. Tiles are spread over the rayon pool. The bias, the accumulation onto dst
//! and the activation happen in the tile's one store. The scalar set uses the `gemm` crate (with its own
//! dispatch).
//!
//! Every element is computed exactly as the `gemm` crate computes it (the scalar set's path, and the one the
//! golden tests were first passed with), whatever the instruction set, the tiling or the number of threads: k
//! is cut into the same blocks (see [`k_block`]), each block is summed from zero by fused multiply-adds in the
//! order of k, and its sum is added to what dst holds (the bias, for the first block of a convolution). So the
//! tiles change the speed, never a figure.

use super::act::Activation;
use super::isa::{self, Isa};
#[cfg(target_arch = "x86_64")]
use super::kernels::{avx2::Tiles256, avx512::Tiles512};
use super::kernels::{Add, Tiles};
use rayon::prelude::*;

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
/// b (k×n, row stride n): the tiles of the chosen instruction set, or the `gemm` crate (same figures).
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
    matmul_on(isa::current(), dst, accumulate, a, a_rs, a_cs, b, m, n, k)
}

/// [`matmul`] with the given instruction set.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_on(
    isa: Isa,
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
    if isa == Isa::Scalar || m == 0 || n == 0 || k == 0 {
        return matmul_crate(dst, accumulate, a, a_rs, a_cs, b, m, n, k);
    }
    check(dst.len(), a, a_rs, a_cs, b, m, n, k);
    let start = if accumulate { Start::Dst } else { Start::Zero };
    tiled_on(isa, Shared(dst.as_mut_ptr()), start, a, a_rs, a_cs, b, None, m, n, k, None);
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

/// dst (m×n, uninitialised) = act(bias[i] + a · b) on every element: a convolution's output written once (with
/// the tiles; with the scalar set, bias fill, the `gemm` crate and an activation pass).
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
    matmul_bias_act_on(isa::current(), dst, bias, a, a_rs, a_cs, b, m, n, k, act)
}

/// [`matmul_bias_act`] with the given instruction set.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_bias_act_on(
    isa: Isa,
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
    if isa != Isa::Scalar {
        let (d, start) = (Shared(dst.as_mut_ptr().cast()), Start::Bias(bias.as_ptr()));
        return tiled_on(isa, d, start, a, a_rs, a_cs, b, None, m, n, k, act);
    }
    for (row, b) in dst[..m * n].chunks_mut(n).zip(bias) {
        row.fill(std::mem::MaybeUninit::new(*b));
    }
    // SAFETY: every element was initialised just above
    let dst = unsafe { &mut *(&mut dst[..m * n] as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
    matmul_crate(dst, true, a, a_rs, a_cs, b, m, n, k);
    if let Some(act) = act {
        dst.par_chunks_mut(1 << 14).for_each(|c| super::simd::activate_on(isa, c, act));
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
    matmul_bias_act_into_on(isa::current(), dst, bias, a, a_rs, a_cs, b, m, n, k, act)
}

/// [`matmul_bias_act_into`] with the given instruction set.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_bias_act_into_on(
    isa: Isa,
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
    matmul_bias_act_on(isa, dst, bias, a, a_rs, a_cs, b, m, n, k, act)
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
    matmul_bias_act_rows_on(isa::current(), dst, bias, a, a_rs, a_cs, b, b_rows, m, n, k, act)
}

/// [`matmul_bias_act_rows`] with the given instruction set.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_bias_act_rows_on(
    isa: Isa,
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
    if isa != Isa::Scalar {
        let (d, start) = (Shared(dst.as_mut_ptr().cast()), Start::Bias(bias.as_ptr()));
        return tiled_on(isa, d, start, a, a_rs, a_cs, b, Some(b_rows), m, n, k, act);
    }
    let mut rows = Vec::with_capacity(k * n);
    for r in b_rows {
        rows.extend_from_slice(&b[*r..r + n]);
    }
    matmul_bias_act_on(isa, dst, bias, a, a_rs, a_cs, &rows, m, n, k, act)
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

/// The tiles of `isa` (not the scalar set, which has none).
#[allow(clippy::too_many_arguments)]
fn tiled_on(
    isa: Isa,
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
    assert!(isa.available(), "matmul: this CPU has no {isa}");
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => tiled::<Tiles512>(d, start, a, a_rs, a_cs, b, b_rows, m, n, k, act),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => tiled::<Tiles256>(d, start, a, a_rs, a_cs, b, b_rows, m, n, k, act),
        _ => unreachable!("the {isa} set has no tiles: its products go to the gemm crate"),
    }
}

/// The product by tiles of `T`, whose instruction set the caller checked the CPU has.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn tiled<T: Tiles>(
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
    // Columns are cut into tiles of at most NV vectors, spread evenly (AVX-512, 13 vectors: 4+3+3+3, not
    // 4+4+4+1): a one-vector tile does MR multiply-adds per MR + 1 loads and would run at half speed.
    let vectors = n.div_ceil(T::LANES);
    let col_tiles = vectors.div_ceil(T::NV);
    let (base, extra) = (vectors / col_tiles, vectors % col_tiles);
    let tile_at = move |t: usize| T::LANES * (t * base + t.min(extra));
    let row_tiles = m.div_ceil(T::MR);
    let kb = k_block(m, n, k);
    // Narrow products (up to 256 columns: a k block of B is then at most 512 KB, in L2) take all their
    // columns in every job, so that each strip of A is read once and reused across the columns; wide ones one
    // column tile per job. Rows are cut into groups until there are enough jobs to balance the pool.
    let tiles_per_job = if n <= 256 { col_tiles } else { 1 };
    let col_groups = col_tiles.div_ceil(tiles_per_job);
    let want = 4 * super::threads();
    let groups = if col_groups >= want { 1 } else { want.div_ceil(col_groups).min(row_tiles) };
    let per_group = row_tiles.div_ceil(groups);
    let groups = row_tiles.div_ceil(per_group);
    let job = move |j: usize| {
        let (cg, gi) = (j / groups, j % groups);
        let (t_lo, t_hi) = (cg * tiles_per_job, ((cg + 1) * tiles_per_job).min(col_tiles));
        let (r_lo, r_hi) = (gi * per_group * T::MR, ((gi + 1) * per_group * T::MR).min(m));
        let mut k0 = 0;
        while k0 < k {
            let kc = kb.min(k - k0);
            let act = if k0 + kc == k { act } else { None };
            let mut r0 = r_lo;
            while r0 < r_hi {
                let rows = T::MR.min(r_hi - r0);
                let add = match start {
                    _ if k0 > 0 => Add::Dst,
                    Start::Zero => Add::Nothing,
                    Start::Dst => Add::Dst,
                    Start::Bias(bias) => Add::Bias(bias.wrapping_add(r0)),
                };
                for ct in t_lo..t_hi {
                    let c0 = tile_at(ct);
                    let cols = (tile_at(ct + 1) - c0).min(n - c0);
                    // SAFETY: the CPU has T's set (checked by the caller); rows r0..r0+rows < m and columns
                    // c0..c0+cols ≤ n of dst, rows k0..k0+kc < k of b, and A's elements (r0 + i, k0 + j) with
                    // i < rows, j < kc lie within `a` (checked in `check`); this job alone writes those
                    // elements of dst.
                    unsafe {
                        let (bp, tab) = match b_rows {
                            None => (b.as_ptr().add(k0 * n + c0), std::ptr::null()),
                            Some(t) => (b.as_ptr().add(c0), t.as_ptr().add(k0)),
                        };
                        T::tile(
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

    /// Odd sizes around the tile edges (6 rows, 8/16/64/256 columns, 512-deep k blocks), both layouts of A:
    /// `matmul` with and without accumulation, and the tiles from a zero bias, against a double-precision
    /// triple loop.
    fn matches_a_triple_loop_on_odd_sizes(isa: Isa) {
        assert!(isa.available(), "built where the CPU had {isa} (build.rs), run where it has not: rebuild");
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
                    matmul_on(isa, &mut ours, acc, &a, rs, cs, &b, m, n, k);
                    let w = worst(&ours);
                    assert!(w <= tol, "{isa} matmul {m}x{n}x{k} transposed={transposed} acc={acc}: off by {w}");
                    if !acc {
                        let mut tiles = init.clone();
                        matmul_bias_act_into_on(isa, &mut tiles, &vec![0.0; m], &a, rs, cs, &b, m, n, k, None);
                        let w = worst(&tiles);
                        assert!(w <= tol, "{isa} with a bias {m}x{n}x{k} transposed={transposed}: off by {w}");
                    }
                }
            }
        }
    }

    /// Bias and activation fused into the tiles' stores equal the product, plus the bias, then the
    /// activation as `Activation::apply` computes it (NaN included).
    fn fused_bias_and_activation_match_the_separate_steps(isa: Isa) {
        let (m, n, k) = (13, 530, 70);
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
            matmul_bias_act_into_on(isa, &mut ours, &bias, &a, k, 1, &b, m, n, k, act);
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
    fn tiles_equal_the_gemm_crate_bit_for_bit(isa: Isa) {
        assert!(isa.available(), "built where the CPU had {isa} (build.rs), run where it has not: rebuild");
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
            (6, 9, 8),
            (5, 33, 17),
            (64, 147, 3000),
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
                    matmul_on(isa, &mut ours, acc, &a, rs, cs, &b, m, n, k);
                    matmul_crate(&mut theirs, acc, &a, rs, cs, &b, m, n, k);
                    assert!(same(&ours, &theirs), "{isa} {m}x{n}x{k} transposed={transposed} acc={acc}");
                }
                let mut theirs: Vec<f32> = (0..m * n).map(|j| bias[j / n]).collect();
                matmul_crate(&mut theirs, true, &a, rs, cs, &b, m, n, k);
                let mut ours = vec![f32::NAN; m * n];
                matmul_bias_act_into_on(isa, &mut ours, &bias, &a, rs, cs, &b, m, n, k, None);
                assert!(same(&ours, &theirs), "{isa} {m}x{n}x{k} transposed={transposed} with a bias");
                // B's rows through a row table (in reverse order of memory): the same figures
                let moved: Vec<f32> = (0..k).rev().flat_map(|j| b[j * n..(j + 1) * n].iter().copied()).collect();
                let table: Vec<usize> = (0..k).map(|j| (k - 1 - j) * n).collect();
                let mut rows = vec![std::mem::MaybeUninit::new(f32::NAN); m * n];
                matmul_bias_act_rows_on(isa, &mut rows, &bias, &a, rs, cs, &moved, &table, m, n, k, None);
                // SAFETY: every element was initialised above
                let rows: Vec<f32> = rows.iter().map(|v| unsafe { v.assume_init() }).collect();
                assert!(same(&rows, &theirs), "{isa} {m}x{n}x{k} transposed={transposed} through a row table");
            }
        }
    }

    #[test]
    fn scalar_matches_a_triple_loop_on_odd_sizes() {
        matches_a_triple_loop_on_odd_sizes(Isa::Scalar);
    }

    #[test]
    fn scalar_fuses_bias_and_activation_as_the_separate_steps() {
        fused_bias_and_activation_match_the_separate_steps(Isa::Scalar);
    }

    #[test]
    #[cfg_attr(not(has_avx512), ignore = "this CPU has no AVX-512F: its tiles cannot run here")]
    fn avx512_tiles_match_a_triple_loop_fuse_and_equal_the_gemm_crate() {
        matches_a_triple_loop_on_odd_sizes(Isa::Avx512);
        fused_bias_and_activation_match_the_separate_steps(Isa::Avx512);
        tiles_equal_the_gemm_crate_bit_for_bit(Isa::Avx512);
    }

    #[test]
    #[cfg_attr(not(has_avx2), ignore = "this CPU has no AVX2 with FMA: its tiles cannot run here")]
    fn avx2_tiles_match_a_triple_loop_fuse_and_equal_the_gemm_crate() {
        matches_a_triple_loop_on_odd_sizes(Isa::Avx2);
        fused_bias_and_activation_match_the_separate_steps(Isa::Avx2);
        tiles_equal_the_gemm_crate_bit_for_bit(Isa::Avx2);
    }

    /// Figures, not a check: GFLOP/s of each instruction set's tiles on the shapes of ResNet-50's layers
    /// (`cargo test --release -p gradcam --lib gemm_speed -- --ignored --nocapture`).
    #[test]
    #[ignore = "a benchmark: prints figures"]
    fn gemm_speed() {
        for (m, k, n) in [
            (64, 576, 3136),
            (128, 1152, 784),
            (256, 2304, 196),
            (512, 4608, 49),
            (2048, 512, 49),
            (512, 2048, 49),
            (1024, 256, 196),
        ] {
            let a: Vec<f32> = crate::util::xorshift_unit(1, m * k);
            let b: Vec<f32> = crate::util::xorshift_unit(2, k * n);
            let bias = vec![0.1f32; m];
            let mut line = format!("{m:>5}x{k:>5}x{n:>5}");
            for isa in crate::ops::isa::available() {
                let mut dst = vec![0f32; m * n];
                let reps = (2e9 / (2.0 * (m * n * k) as f64)).ceil() as usize;
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let t = std::time::Instant::now();
                    for _ in 0..reps {
                        matmul_bias_act_into_on(isa, &mut dst, &bias, &a, k, 1, &b, m, n, k, Some(Activation::Relu));
                    }
                    best = best.min(t.elapsed().as_secs_f64() / reps as f64);
                }
                line += &format!("  {isa} {:>6.0}", 2.0 * (m * n * k) as f64 / best / 1e9);
            }
            println!("{line}");
        }
    }
}
