//! Single-threaded matrix products on the instruction-set tier [`Isa::current`] selects:
//! the fully connected layers ([`super::linear`]) and the im2col path of the convolutions
//! the pixel-major kernels do not run (dilated, some grouped).
//!
//! Each output is one chain of fused multiply-adds over `k` in order, starting from zero
//! (or from the output's value when accumulating), on every tier and in every block, so the
//! tiers give the same bits (SSE2's chains round each product too: [`super::isa::Unfused`]). Where `b`'s and `c`'s rows are contiguous, `R` rows x 64
//! columns of sums stay in registers while `b` streams once per `R` rows of `a`, in its own
//! layout (no packing); other strides take a plain loop (only the narrow 1x1 layers' small
//! products do).
//!
//! haste parallelizes around these products (over images, patches, channel or column
//! ranges), never inside one.

use super::isa::{Fused, Isa, MulAdd, Unfused};

/// `c[m x n] (+)= a[m x k] * b[k x n]`, all row-major with the given leading dimensions
/// (row strides). With `accumulate`, the product is added to `c`; otherwise `c` is overwritten.
///
/// Panics if a slice is too short for its shape: callers size buffers from validated shapes.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    assert!(
        m == 0 || n == 0 || k == 0 || (lda >= k && ldb >= n && ldc >= n),
        "sgemm: leading dimension too small"
    );
    sgemm_strided((m, n, k), (a, lda, 1), (b, ldb, 1), (c, ldc, 1), accumulate);
}

/// `c = a * b` (or `c += a * b` with `accumulate`) for `m x k` times `k x n`, every matrix
/// given by its row and column strides (element `(i, j)` of `a` is `a[i * a_rs + j * a_cs]`),
/// so transposed operands and outputs cost no copy. Single-threaded, on [`Isa::current`].
pub fn sgemm_strided(
    shape: (usize, usize, usize),
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    c: (&mut [f32], usize, usize),
    accumulate: bool,
) {
    sgemm_strided_on(Isa::current(), shape, a, b, c, accumulate)
}

/// [`sgemm_strided`] on tier `isa` (which the CPU must support).
pub fn sgemm_strided_on(
    isa: Isa,
    (m, n, k): (usize, usize, usize),
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    (c, c_rs, c_cs): (&mut [f32], usize, usize),
    accumulate: bool,
) {
    assert!(isa.supported(), "tier {isa} on a CPU without it");
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        c.len() > last(m, n, c_rs, c_cs),
        "sgemm_strided: c too short"
    );
    if k > 0 {
        assert!(
            a.len() > last(m, k, a_rs, a_cs),
            "sgemm_strided: a too short"
        );
        assert!(
            b.len() > last(k, n, b_rs, b_cs),
            "sgemm_strided: b too short"
        );
    }
    let p = Product {
        shape: (m, n, k),
        a: (a.as_ptr(), a_rs, a_cs),
        b: (b.as_ptr(), b_rs, b_cs),
        c: (c.as_mut_ptr(), c_rs, c_cs),
        accumulate,
    };
    // SAFETY: every element the shapes and strides address lies inside the slices (asserted
    // above), and `c` is borrowed mutably, so nothing else reads or writes it.
    unsafe { product_on(isa, p) }
}

/// One product through pointers: `c = a * b` (`+=` with `accumulate`), each matrix as
/// (pointer, row stride, column stride).
#[derive(Clone, Copy)]
pub(crate) struct Product {
    pub(crate) shape: (usize, usize, usize),
    pub(crate) a: (*const f32, usize, usize),
    pub(crate) b: (*const f32, usize, usize),
    pub(crate) c: (*mut f32, usize, usize),
    pub(crate) accumulate: bool,
}

/// [`Product`] on tier `isa`.
///
/// # Safety
/// Every element the shape and strides address is readable (`a`, `b`), or writable and
/// touched by nothing else during the call (`c`); the CPU runs `isa`.
pub(crate) unsafe fn product_on(isa: Isa, p: Product) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => product_avx512(p),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => product_avx2(p),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => product_neon(p),
            Isa::Sse2 => product::<1, 64, Unfused>(p),
            _ => product::<1, 64, Fused>(p),
        }
    }
}

/// 4 rows of 64 sums: 16 registers of 16 lanes. (8 rows of 32, so a classifier's batch of
/// 8 would read its weights once, ran AlexNet's 8 x 9216 -> 4096 in 12.8 ms against 8.7:
/// each pass over a 64-column panel then fetched lines the other pass read.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn product_avx512(p: Product) {
    // SAFETY: forwarded from the caller.
    unsafe { product::<4, 64, Fused>(p) }
}

/// One row of 64 sums: 8 of the 16 registers of 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(p: Product) {
    // SAFETY: forwarded from the caller.
    unsafe { product::<1, 64, Fused>(p) }
}

/// 2 rows of 64 sums: all 32 registers of 4 lanes.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn product_neon(p: Product) {
    // SAFETY: forwarded from the caller.
    unsafe { product::<2, 64, Fused>(p) }
}

/// Blocks of 64 (at most `W`), 32, 16, 8 and single columns over `R` rows at a time (then
/// the rows left one at a time) where `b`'s and `c`'s rows are contiguous; a plain loop
/// otherwise. (A 96-column product ran its last 32 columns in blocks of 8, at a quarter of
/// the rate.)
///
/// # Safety
/// As [`product_on`].
#[inline(always)]
unsafe fn product<const R: usize, const W: usize, M: MulAdd>(p: Product) {
    let (m, n, _) = p.shape;
    if p.b.2 != 1 || p.c.2 != 1 {
        // SAFETY: forwarded from the caller.
        return unsafe { strided::<M>(p) };
    }
    let mut j = 0;
    while j < n {
        let width = match n - j {
            64.. if W >= 64 => 64,
            32.. => 32,
            16.. => 16,
            8.. => 8,
            _ => 1,
        };
        let mut i = 0;
        // SAFETY (each block): rows `i..i + R` and columns `j..j + width` lie inside the
        // shape.
        while i + R <= m {
            unsafe {
                match width {
                    64 => block::<R, 64, M>(p, i, j),
                    32 => block::<R, 32, M>(p, i, j),
                    16 => block::<R, 16, M>(p, i, j),
                    8 => block::<R, 8, M>(p, i, j),
                    _ => block::<R, 1, M>(p, i, j),
                }
            }
            i += R;
        }
        for i in i..m {
            unsafe {
                match width {
                    64 => block::<1, 64, M>(p, i, j),
                    32 => block::<1, 32, M>(p, i, j),
                    16 => block::<1, 16, M>(p, i, j),
                    8 => block::<1, 8, M>(p, i, j),
                    _ => block::<1, 1, M>(p, i, j),
                }
            }
        }
        j += width;
    }
}

/// Rows `i0..i0 + R`, columns `j0..j0 + W` (contiguous in `b` and `c`): the sums in
/// registers over every `k`.
///
/// # Safety
/// As [`product_on`], with the rows and columns inside the shape.
#[inline(always)]
unsafe fn block<const R: usize, const W: usize, M: MulAdd>(p: Product, i0: usize, j0: usize) {
    let (_, _, k) = p.shape;
    let (a, a_rs, a_cs) = p.a;
    let (b, b_rs, _) = p.b;
    let (c, c_rs, _) = p.c;
    let mut acc = [[0.0f32; W]; R];
    if p.accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: the caller gives this block these columns of row `i0 + r`.
            *row = unsafe { *c.add((i0 + r) * c_rs + j0).cast::<[f32; W]>() };
        }
    }
    for q in 0..k {
        // SAFETY: row `q` of `b` holds columns `j0..j0 + W`, contiguous.
        let w = unsafe { &*b.add(q * b_rs + j0).cast::<[f32; W]>() };
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: element `(i0 + r, q)` of `a` is readable.
            let v = unsafe { *a.add((i0 + r) * a_rs + q * a_cs) };
            for (s, &wv) in row.iter_mut().zip(w) {
                *s = M::madd(v, wv, *s);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: the caller gives this block these columns of row `i0 + r`.
        unsafe {
            c.add((i0 + r) * c_rs + j0)
                .cast::<[f32; W]>()
                .write_unaligned(*row)
        };
    }
}

/// Any strides: each output's chain in turn.
///
/// # Safety
/// As [`product_on`].
#[inline(always)]
unsafe fn strided<M: MulAdd>(p: Product) {
    let (m, n, k) = p.shape;
    let ((a, a_rs, a_cs), (b, b_rs, b_cs), (c, c_rs, c_cs)) = (p.a, p.b, p.c);
    for i in 0..m {
        for j in 0..n {
            // SAFETY: every element addressed lies inside the shape (the caller's promise).
            unsafe {
                let o = c.add(i * c_rs + j * c_cs);
                let mut s = if p.accumulate { *o } else { 0.0 };
                for q in 0..k {
                    s = M::madd(*a.add(i * a_rs + q * a_cs), *b.add(q * b_rs + j * b_cs), s);
                }
                *o = s;
            }
        }
    }
}

#[cfg(test)]
mod tests;
