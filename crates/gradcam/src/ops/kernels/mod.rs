//! The kernels of each instruction set, one module per set behind one interface (the same functions with the
//! same signatures): [`avx512`], [`avx2`], and [`scalar`], the plain loops every machine runs. `simd.rs` and
//! `gemm.rs` choose among them by [`super::isa::current`]; a NEON set later is one more module here and one more
//! arm there.
//!
//! Every set computes every element in the same order as the scalar one (the correlation: a multiply, then an
//! add, rounded each, taps in order; the products: fused multiply-adds in the order of k within the `gemm`
//! crate's k blocks), so the figures do not depend on the set.
//!
//! Each set provides:
//! - `correlate(out, init, src, starts, w, act)`: `out[i] = act(init + Σ_t w[t] · src[starts[t] + i])`;
//! - `activate(v, act)`;
//! - `copy_rows(d, ds, s, ss, rows, len)`: rows of `len` values between strided buffers;
//! - `deinterleave2(src, even, odd)` / `interleave2(even, odd, dst)`: the vector part, returning how many
//!   pairs it did (the callers finish the rest);
//! - a [`Tiles`] implementation for the matrix products (not the scalar set: it uses the `gemm` crate).

use super::act::Activation;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod scalar;

/// What a product tile adds its block's sums to on the way out.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Add {
    Nothing,
    Dst,
    /// bias[row]
    Bias(*const f32),
}

/// A register-blocked tile of the matrix product: `rows` ≤ `MR` rows × `cols` ≤ `NV · LANES` columns of dst
/// over `kc` steps of k, each element summed from zero by fused multiply-adds in the order of k, then added to
/// `add` and passed through `act` in its one store.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) trait Tiles {
    /// f32 lanes per vector.
    const LANES: usize;
    /// Vectors of columns per tile, at most.
    const NV: usize;
    /// Rows per tile, at most.
    const MR: usize;

    /// One tile. B's rows are `ldd` apart from `b`, or, where `tab` is not null, row j starts at `b + tab[j]`;
    /// A's element (i, j) is at `a + i·a_rs + j·a_cs`; dst's rows are `ldd` apart.
    ///
    /// # Safety
    /// The CPU must have the set; dst (rows × cols), a (rows × kc), b (kc rows of cols) and tab (kc entries)
    /// must be valid for those elements, and no other thread may write the same elements of dst.
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
    );
}
