//! The register blocks of the grouped convolution: `MR` output pixels x `NG` neighbouring
//! groups' `CO` output channels each, summed over the group's taps and input channels in the
//! order (kernel row, channel, kernel column) with fused multiply-adds, so every tier gives
//! the portable code's bits (the SSE2 tier's multiply-adds round twice). That order lets a
//! block of pixels in one output row load each input value once for all the kernel columns
//! that read it ([`avx512::row_block`]).

use crate::kernels::isa::MulAdd;

/// What one block reads.
pub(super) struct Block<'a, const MR: usize> {
    /// The zero-padded pixel-major image.
    pub padded: &'a [f32],
    /// Each pixel's tap-(0, 0) offset in `padded`, at the group's first input channel.
    pub origin: [usize; MR],
    /// Each tap's offset from the origin, `[ky][kx]`.
    pub tap_at: &'a [usize],
    /// Kernel columns (taps per kernel row).
    pub kw: usize,
    /// Input channels of a group (also how far apart two groups' channels are in a pixel).
    pub cig: usize,
    /// The block's groups' weights, `[group][tap][cig][CO]` from its first group.
    pub weights: &'a [f32],
    /// What a row block reads of an unpadded image ([`Present::ALL`] in a padded one).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub present: Present,
}

/// The kernel rows and the input pixels of its row that a row block
/// ([`avx512::row_block`]) reads: in an unpadded image, those inside it. The others are
/// zero padding, whose multiply-adds the block skips: a sum starts at +0 and is never -0, so
/// adding a zero product leaves it as it is (the weights are finite), and the sums keep the
/// bits of the padded image's.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct Present {
    pub rows: (usize, usize),
    /// Input pixels `p` of the row (`p` from the first output's first kernel column).
    pub cols: (usize, usize),
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Present {
    /// A padded image: every read.
    pub const ALL: Present = Present {
        rows: (0, usize::MAX),
        cols: (0, usize::MAX),
    };

    #[inline(always)]
    fn has_col(&self, p: usize) -> bool {
        p >= self.cols.0 && p < self.cols.1
    }
}

impl<const MR: usize> Block<'_, MR> {
    /// Whether every read of a block of `ng` groups of `co` channels lies inside the image
    /// and the weights (the vector blocks read through pointers). The loops check it once per
    /// call for every block (a check per block cost 5 % of the kernel's time).
    pub(super) fn in_bounds(&self, ng: usize, co: usize) -> bool {
        let last_tap = self.tap_at.iter().max().copied().unwrap_or(0);
        let last_origin = self.origin.iter().max().copied().unwrap_or(0);
        last_origin + last_tap + ng * self.cig <= self.padded.len()
            && ng * self.tap_at.len() * self.cig * co <= self.weights.len()
    }
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl<const MR: usize> Block<'_, MR> {
    /// Whether every read of a row block of `ng` groups of `co` channels over `inputs`
    /// pixels a row, `c_in` floats apart, lies inside the image and the weights: the
    /// present ones, from `origin[0]` (which, in an unpadded image, may lie before the
    /// image: reads start at the present ones).
    pub(super) fn row_in_bounds(&self, ng: usize, co: usize, inputs: usize, c_in: usize) -> bool {
        let rows = self.tap_at.len() / self.kw.max(1);
        let (r0, r1) = (self.present.rows.0, self.present.rows.1.min(rows));
        let (p0, p1) = (self.present.cols.0, self.present.cols.1.min(inputs));
        if r0 >= r1 || p0 >= p1 {
            return true;
        }
        let at = |r: usize, p: usize| {
            let o = self.origin[0].wrapping_add(self.tap_at[r * self.kw] + p * c_in);
            o as isize
        };
        let reads = self.weights.len() >= ng * self.tap_at.len() * self.cig * co;
        reads
            && at(r0, p0) >= 0
            && at(r1 - 1, p1 - 1) + (ng * self.cig) as isize <= self.padded.len() as isize
    }
}

/// The sums of a block: `[pixel][group][channel]`.
pub(super) type Sums<const CO: usize, const NG: usize, const MR: usize> = [[[f32; CO]; NG]; MR];

/// Portable block (the compiler vectorizes over the `CO` channels), its multiply-adds as `M`
/// computes them.
#[inline(always)]
pub(super) fn portable<const CO: usize, const NG: usize, const MR: usize, M: MulAdd>(
    b: &Block<MR>,
) -> Sums<CO, NG, MR> {
    let mut acc = [[[0.0f32; CO]; NG]; MR];
    let group_weights = b.tap_at.len() * b.cig * CO;
    for (ky, row_at) in b.tap_at.chunks_exact(b.kw).enumerate() {
        for i in 0..b.cig {
            for (kx, &tap_at) in row_at.iter().enumerate() {
                let t = ky * b.kw + kx;
                for g in 0..NG {
                    let at = g * group_weights + (t * b.cig + i) * CO;
                    let wv: &[f32; CO] = b.weights[at..at + CO].try_into().expect("CO weights");
                    for (a, &o) in acc.iter_mut().zip(&b.origin) {
                        let x = b.padded[o + tap_at + g * b.cig + i];
                        for (a, &wj) in a[g].iter_mut().zip(wv) {
                            *a = M::madd(x, wj, *a);
                        }
                    }
                }
            }
        }
    }
    acc
}

/// The vector block, written once over the operations each tier defines (`V`, `LANES`,
/// `zero`, `splat`, `fma`, and `load`/`store` of the first `n` lanes): `NV` vectors of
/// `LANES` channels per pixel and group, the last one partial when `CO` is not a multiple of
/// `LANES`, the sums in registers, each weight vector loaded once per term. A block of two
/// groups (`NG`) runs twice the chains of sums over the same pixels' addresses: with one
/// 16-channel group, 8 pixels gave 8 chains, which the multiply-add latency left
/// half-waiting.
macro_rules! vector_block {
    ($(#[$feat:meta])*) => {
        /// # Safety
        /// The CPU runs this tier's instructions, and every read lies inside the image and
        /// the weights (`b.in_bounds(NG, CO)`, which the caller checks once for all blocks).
        ///
        /// `CIG`: the group's input channels when known at compile time (`b.cig`), else 0.
        /// Known, the second group's inputs sit a constant offset from the first's, so a
        /// block of two groups keeps one address per pixel (with `b.cig` the compiler kept
        /// one per pixel and group, and spilled them). `KW`: the kernel's columns when known
        /// (`b.kw`), else 0; known, the innermost loop unrolls.
        $(#[$feat])*
        pub(crate) unsafe fn block<
            const CO: usize,
            const NG: usize,
            const MR: usize,
            const NV: usize,
            const CIG: usize,
            const KW: usize,
        >(
            b: &Block<MR>,
        ) -> super::Sums<CO, NG, MR> {
            debug_assert!(NV * LANES >= CO && b.in_bounds(NG, CO));
            debug_assert!(CIG == 0 || CIG == b.cig);
            debug_assert!(KW == 0 || KW == b.kw);
            let cig = if CIG > 0 { CIG } else { b.cig };
            let kw = if KW > 0 { KW } else { b.kw };
            let lanes: [usize; NV] = std::array::from_fn(|v| (CO - LANES * v).min(LANES));
            let mut acc = [[[zero(); NV]; NG]; MR];
            let (pp, wp) = (b.padded.as_ptr(), b.weights.as_ptr());
            let group_weights = b.tap_at.len() * cig * CO;
            for (ky, row_at) in b.tap_at.chunks_exact(kw).enumerate() {
                // SAFETY (the reads): inside `padded` and the weights (the caller's
                // contract); a partial vector reads only its lanes.
                let a: [*const f32; MR] =
                    std::array::from_fn(|q| unsafe { pp.add(b.origin[q]) });
                let wr = unsafe { wp.add(ky * kw * cig * CO) };
                for i in 0..cig {
                    for (kx, &tap_at) in row_at.iter().enumerate() {
                        let wv: [[V; NV]; NG] = std::array::from_fn(|g| {
                            let w = unsafe { wr.add(g * group_weights + (kx * cig + i) * CO) };
                            std::array::from_fn(|v| unsafe { load(w.add(LANES * v), lanes[v]) })
                        });
                        let off = tap_at + i;
                        for (row, a) in acc.iter_mut().zip(&a) {
                            for (g, (row, wv)) in row.iter_mut().zip(&wv).enumerate() {
                                let x = splat(unsafe { *a.add(off + g * cig) });
                                for (acc, &wv) in row.iter_mut().zip(wv) {
                                    *acc = fma(x, wv, *acc);
                                }
                            }
                        }
                    }
                }
            }
            let mut out = [[[0.0f32; CO]; NG]; MR];
            for (o, row) in out.iter_mut().zip(&acc) {
                for (o, row) in o.iter_mut().zip(row) {
                    for (v, &x) in row.iter().enumerate() {
                        // SAFETY: a partial vector writes only its lanes.
                        unsafe { store(o.as_mut_ptr().add(LANES * v), lanes[v], x) };
                    }
                }
            }
            out
        }
    };
}

/// AVX-512: 16 lanes, partial vectors under a mask (group widths 8, 24 and 48).
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use super::Block;
    use std::arch::x86_64::*;

    type V = __m512;
    const LANES: usize = 16;

    fn mask(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn zero() -> V {
        _mm512_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn splat(x: f32) -> V {
        _mm512_set1_ps(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn fma(a: V, b: V, c: V) -> V {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f32, n: usize) -> V {
        unsafe { _mm512_maskz_loadu_ps(mask(n), p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(p: *mut f32, n: usize, v: V) {
        unsafe { _mm512_mask_storeu_ps(p, mask(n), v) }
    }

    vector_block!(#[target_feature(enable = "avx512f,fma")]);

    /// [`block`] for `RM <= MR` neighbouring output pixels of one output row (the sums of the
    /// others are left 0), stride `S` (1 or 2), a 3-wide kernel and groups of at most 16
    /// channels (one vector): the same sums in the same order. The `(RM - 1) * S + 3` input
    /// pixels under a kernel row are `c_in` floats apart (`b.origin[q] == b.origin[0] + q *
    /// S * c_in`), and each input value, loaded once, feeds every output whose kernel column
    /// reads it (up to 3 at stride 1, 2 at stride 2). [`block`] loads it once per output, so
    /// its multiply-adds each wait on a load (the loads, not the multiply-adds, set its
    /// speed: 62 % of the peak at 16 channels).
    ///
    /// # Safety
    /// As [`block`], and the pixels lie as said above.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    pub(crate) unsafe fn row_block<
        const CO: usize,
        const NG: usize,
        const MR: usize,
        const RM: usize,
        const S: usize,
        const CIG: usize,
        const EDGES: bool,
    >(
        b: &Block<MR>,
        c_in: usize,
    ) -> super::Sums<CO, NG, MR> {
        const KW: usize = 3;
        // `RM <= MR` where it runs (the caller's check); the blocks of narrower `MR` are
        // instantiated, never run.
        debug_assert!(RM <= MR);
        let rm = RM.min(MR);
        debug_assert!(CO <= LANES && CIG == b.cig && b.kw == KW);
        debug_assert!(b.row_in_bounds(NG, CO, (rm - 1) * S + KW, c_in));
        if CO == 8 && NG == 2 {
            let mut out = [[[0.0f32; CO]; NG]; MR];
            // SAFETY: the caller's contract; `out` holds `MR` pixels of 16 floats.
            let out_at = out.as_mut_ptr().cast();
            unsafe { pair_row_block::<MR, RM, S, CIG, EDGES>(b, c_in, out_at) };
            return out;
        }
        let mut acc = [[zero(); NG]; MR];
        let group_weights = b.tap_at.len() * CIG * CO;
        for (row, wr) in kernel_rows(b, KW * CIG * CO) {
            for i in 0..CIG {
                let wv: [[V; KW]; NG] = std::array::from_fn(|g| {
                    std::array::from_fn(|kx| unsafe {
                        load(wr.add(g * group_weights + (kx * CIG + i) * CO), CO)
                    })
                });
                let x = |p: usize| -> [V; NG] {
                    std::array::from_fn(|g| splat(unsafe { *row.add(p * c_in + g * CIG + i) }))
                };
                let madd = |x: [V; NG], kx: usize, q: usize| {
                    for (g, (x, wv)) in x.iter().zip(&wv).enumerate() {
                        acc[q][g] = fma(*x, wv[kx], acc[q][g]);
                    }
                };
                sweep_row::<MR, RM, S, EDGES, _>(rm, b.present, x, madd);
            }
        }
        let mut out = [[[0.0f32; CO]; NG]; MR];
        for (o, row) in out.iter_mut().zip(&acc).take(rm) {
            for (o, &x) in o.iter_mut().zip(row) {
                // SAFETY: a partial vector writes only its lanes.
                unsafe { store(o.as_mut_ptr(), CO, x) };
            }
        }
        out
    }

    /// Per present kernel row of a row block (3 columns): where its input row starts under
    /// the block's first output, and where its weights start (`per_row` floats a kernel
    /// row). The row may start before the image (its first pixel padding): it is only read
    /// at its present pixels.
    #[inline(always)]
    fn kernel_rows<'a, const MR: usize>(
        b: &'a Block<'a, MR>,
        per_row: usize,
    ) -> impl Iterator<Item = (*const f32, *const f32)> + 'a {
        let (pp, wp) = (b.padded.as_ptr(), b.weights.as_ptr());
        let (r0, r1) = b.present.rows;
        b.tap_at
            .chunks_exact(3)
            .enumerate()
            .take(r1)
            .skip(r0)
            .map(move |(ky, row_at)| {
                let row = pp.wrapping_add(b.origin[0].wrapping_add(row_at[0]));
                // SAFETY: inside the weights (a row block's contract).
                (row, unsafe { wp.add(ky * per_row) })
            })
    }

    /// How a row block of `rm` outputs, stride `S` and 3 kernel columns feeds its inputs to
    /// its outputs: `madd(x, kx, q)` for input `p` (`x = load(p)`, loaded once) at kernel
    /// column `kx` of output `q`, each output's columns in increasing order, as in `block`.
    /// Stride 1: input `p` is column `kx` of output `p - kx`. Stride 2: input `2q` is column
    /// 0 of output `q` and column 2 of output `q - 1`, input `2q + 1` column 1 of output `q`;
    /// unrolled by hand (as a loop LLVM kept it rolled, with the sums in memory: a third of
    /// the speed). With `EDGES`, inputs outside `present` are neither loaded nor added;
    /// without, every input is present (the checks cost 5 % where none was needed).
    #[inline(always)]
    fn sweep_row<const MR: usize, const RM: usize, const S: usize, const EDGES: bool, X: Copy>(
        rm: usize,
        present: super::Present,
        load: impl Fn(usize) -> X,
        mut madd: impl FnMut(X, usize, usize),
    ) {
        const KW: usize = 3;
        if S == 1 {
            for p in 0..rm + KW - 1 {
                if EDGES && !present.has_col(p) {
                    continue;
                }
                let x = load(p);
                for kx in 0..KW {
                    if p >= kx && p - kx < rm {
                        madd(x, kx, p - kx);
                    }
                }
            }
        } else {
            unroll!(if RM < MR { RM + 1 } else { MR + 1 }, q => {
                if !EDGES || present.has_col(2 * q) {
                    let even = load(2 * q);
                    if q < rm {
                        madd(even, 0, q);
                    }
                    if q >= 1 {
                        madd(even, 2, q - 1);
                    }
                }
                if q < rm && (!EDGES || present.has_col(2 * q + 1)) {
                    madd(load(2 * q + 1), 1, q);
                }
            });
        }
    }

    /// [`row_block`] for two groups of 8 channels (`CO == 8`, `NG == 2`) in one vector:
    /// group 0's sums in the low 8 lanes, group 1's in the high 8, each input value of the
    /// two groups set into its half and each kernel column's weights of both joined. One
    /// full multiply-add does what two half-empty ones did (ResNeXt-50's groups of 8, and
    /// its groups of 4 run in pairs). The same sums in the same order. Writes `rm` pixels'
    /// 16 sums to `out`, one pixel after another.
    ///
    /// # Safety
    /// As [`row_block`], and `out` holds `MR * 16` floats.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn pair_row_block<
        const MR: usize,
        const RM: usize,
        const S: usize,
        const CIG: usize,
        const EDGES: bool,
    >(
        b: &Block<MR>,
        c_in: usize,
        out: *mut f32,
    ) {
        const KW: usize = 3;
        const CO: usize = 8;
        let rm = RM.min(MR);
        let mut acc = [zero(); MR];
        let group_weights = b.tap_at.len() * CIG * CO;
        for (row, wr) in kernel_rows(b, KW * CIG * CO) {
            for i in 0..CIG {
                let wv: [V; KW] = std::array::from_fn(|kx| unsafe {
                    let at = (kx * CIG + i) * CO;
                    let lo = _mm256_castps_pd(_mm256_loadu_ps(wr.add(at)));
                    let hi = _mm256_castps_pd(_mm256_loadu_ps(wr.add(group_weights + at)));
                    _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1))
                });
                let x = |p: usize| unsafe {
                    let lo = _mm512_set1_ps(*row.add(p * c_in + i));
                    _mm512_mask_mov_ps(lo, 0xff00, _mm512_set1_ps(*row.add(p * c_in + CIG + i)))
                };
                let madd = |x, kx, q: usize| acc[q] = fma(x, wv[kx], acc[q]);
                sweep_row::<MR, RM, S, EDGES, _>(rm, b.present, x, madd);
            }
        }
        for (q, &a) in acc.iter().enumerate().take(rm) {
            // SAFETY: `out` holds `MR * 16` floats.
            unsafe { _mm512_storeu_ps(out.add(16 * q), a) };
        }
    }
}

/// AVX2: 8 lanes; every group width the kernel takes is a multiple of 8, so no vector is
/// partial.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::Block;
    use std::arch::x86_64::*;

    type V = __m256;
    const LANES: usize = 8;

    #[inline]
    #[target_feature(enable = "avx")]
    fn zero() -> V {
        _mm256_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx")]
    fn splat(x: f32) -> V {
        _mm256_set1_ps(x)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fma(a: V, b: V, c: V) -> V {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn load(p: *const f32, n: usize) -> V {
        debug_assert_eq!(n, LANES);
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn store(p: *mut f32, n: usize, v: V) {
        debug_assert_eq!(n, LANES);
        unsafe { _mm256_storeu_ps(p, v) }
    }

    vector_block!(#[target_feature(enable = "avx2,fma")]);
}

/// NEON: 4 lanes; every group width the kernel takes is a multiple of 4, so no vector is
/// partial. `vfmaq_f32` is fused, as `f32::mul_add` is: the portable code's bits.
#[cfg(target_arch = "aarch64")]
pub(super) mod neon {
    use super::Block;
    use crate::kernels::neon::{splat, zero, LANES, V};
    use std::arch::aarch64::*;

    #[inline(always)]
    fn fma(a: V, b: V, c: V) -> V {
        // SAFETY: NEON is in aarch64's baseline.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32, n: usize) -> V {
        debug_assert_eq!(n, LANES);
        // SAFETY: the caller's.
        unsafe { crate::kernels::neon::load(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, n: usize, v: V) {
        debug_assert_eq!(n, LANES);
        // SAFETY: the caller's.
        unsafe { crate::kernels::neon::store(p, v) }
    }

    vector_block!();
}
