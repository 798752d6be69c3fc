//! Direct convolution in pixel-major layout: the inner kernel of the dense 3x3-style
//! convolutions and of every HASTE patch.
//!
//! `out[j][co] = sum_{(ky, kx)} sum_b win[pix(j, ky, kx)][first_b] * W'[(ky, kx), b][co]`
//!
//! - `win` is an input region in pixel-major layout `[win_h][win_w][c_in]` (a zero-padded
//!   image for the dense convolution, one patch's window for HASTE). The receptive field of
//!   output `j` is addressed in place: no im2col copy.
//! - The filters come in one of two forms ([`Filters`]). The dense convolution sums every
//!   channel in order, with its weights in panels of 64 output channels
//!   (`[panel][(ky, kx)][c_in][64]`, [`weights_panels`]), so the filters one group of output
//!   channels reads are contiguous. HASTE lists one channel per bucket (`Filters::Rows`):
//!   term `b` is read from slot `first[b]` of each pixel (the bucket mean, stored in the slot
//!   of its first channel) and its filter row `W'[(ky, kx), b]` through a table of row
//!   addresses, `rows[kk * B + b]` for tap `kk`; merged buckets point at summed rows,
//!   singletons at the layer's weights, never copied.
//!
//! Every output is accumulated with fused multiply-adds in the fixed order (tap, channel), so
//! the AVX-512 kernel and the portable one ([`conv_generic`], `f32::mul_add`) give identical
//! bits. FLOPs: exactly `n * B * K^2 * c_out` multiply-adds.
//!
//! Why direct and not im2col + GEMM: at CIFAR and Tiny Darknet sizes the im2col copy costs as
//! much as the GEMM, while this kernel keeps 8 outputs x 32 output channels in registers and
//! reaches the machine's FMA peak (see `examples/haste_steps.rs`).

use super::grow;
use super::layout::{self, IoLayout};
use crate::ops::{Activation, Conv2dParams, ConvOp};
use std::ops::Range;

/// Geometry of one direct convolution call: a `ph x pw` block of outputs over a window.
#[derive(Clone, Copy, Debug)]
pub struct Geom {
    /// Window row length (pixels) and channels per window pixel.
    pub win_w: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    /// Output rows and columns computed (`n = ph * pw` outputs).
    pub ph: usize,
    pub pw: usize,
    /// Output row length (pixels) and pixel stride (floats): output `j = (oy, ox)` goes to
    /// `out[(oy * out_w + ox) * out_stride..][..c_out]` (pixel-major, so a patch writes into a
    /// whole HWC image in place; `out_stride` is larger than `c_out` when the call computes
    /// one slice of the image's channels).
    pub out_w: usize,
    pub out_stride: usize,
}

impl Geom {
    #[inline(always)]
    fn pix(&self, j: usize, ky: usize, kx: usize) -> usize {
        let (oy, ox) = (j / self.pw, j % self.pw);
        ((oy * self.sh + ky) * self.win_w + ox * self.sw + kx) * self.c_in
    }

    #[inline(always)]
    fn opix(&self, j: usize) -> usize {
        ((j / self.pw) * self.out_w + j % self.pw) * self.out_stride
    }

    /// Whether an output buffer of `len` floats holds every output of the call.
    fn fits(&self, len: usize) -> bool {
        let n = self.ph * self.pw;
        n == 0 || len >= self.opix(n - 1) + self.c_out
    }

    /// [`Self::opix`] of the `MR` outputs from `j0`, stepping along the output rows (one
    /// division for the block instead of one per output).
    #[inline(always)]
    fn out_offsets<const MR: usize>(&self, j0: usize) -> [usize; MR] {
        let (mut oy, mut ox) = (j0 / self.pw, j0 % self.pw);
        std::array::from_fn(|_| {
            let o = (oy * self.out_w + ox) * self.out_stride;
            ox += 1;
            if ox == self.pw {
                (oy, ox) = (oy + 1, 0);
            }
            o
        })
    }
}

/// The filters one call reads, and which window channels they multiply.
#[derive(Clone, Copy, Debug)]
pub enum Filters<'a> {
    /// Listed channels (HASTE): term `b` of the sum reads window slot `first[b]` and, at tap
    /// `kk`, the filter row (`c_out` floats) at address `base + rows[kk * first.len() + b]`
    /// (wrapping: a row below `base` has a wrapped-around offset). HASTE keeps one table per
    /// patch and moves `base` from one filter panel to the next, so only the merged rows'
    /// offsets change between panels.
    Rows {
        first: &'a [u32],
        rows: &'a [usize],
        base: usize,
    },
    /// Every window channel in order, with the weights in 64-channel panels (the dense
    /// convolution; see [`weights_panels`]).
    Panels(&'a [f32]),
}

impl Filters<'_> {
    /// Terms of the sum per tap.
    fn terms(&self, g: &Geom) -> usize {
        match self {
            Filters::Rows { first, .. } => first.len(),
            Filters::Panels(_) => g.c_in,
        }
    }
}

/// What happens to each output once its sum is complete: the bias is added, then a residual
/// connection's value, then the activation applied, while the output is still in cache (a
/// separate pass would read a large layer's output back from memory).
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// One value per output channel.
    pub bias: Option<&'a [f32]>,
    /// One value per output, laid out as the call's `out` (the same offsets).
    pub residual: Option<&'a [f32]>,
    pub activation: Activation,
}

/// An [`Activation`] on 16 lanes. One type per activation, so a loop over a block's vectors
/// is compiled once per activation with no branch inside ([`with_lanes`] picks the type).
#[cfg(target_arch = "x86_64")]
trait Lanes {
    /// # Safety
    /// Only called from AVX-512 code (it is inlined there).
    unsafe fn apply(&self, x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512;
}

#[cfg(target_arch = "x86_64")]
mod lanes {
    use super::Lanes;
    use std::arch::x86_64::*;

    pub struct Identity;
    pub struct Relu;
    pub struct LeakyRelu(pub f32);
    pub struct Clip(pub f32, pub f32);

    impl Lanes for Identity {
        #[inline(always)]
        unsafe fn apply(&self, x: __m512) -> __m512 {
            x
        }
    }

    impl Lanes for Relu {
        /// `max(0, x)` returns `x` when either is NaN, and keeps -0.0 as `x < 0` does.
        #[inline(always)]
        unsafe fn apply(&self, x: __m512) -> __m512 {
            _mm512_max_ps(_mm512_setzero_ps(), x)
        }
    }

    /// The comparisons are ordered, so NaN passes through as in the scalar code.
    impl Lanes for LeakyRelu {
        #[inline(always)]
        unsafe fn apply(&self, x: __m512) -> __m512 {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
            _mm512_mask_mul_ps(x, neg, x, _mm512_set1_ps(self.0))
        }
    }

    impl Lanes for Clip {
        #[inline(always)]
        unsafe fn apply(&self, x: __m512) -> __m512 {
            let (lo, hi) = (_mm512_set1_ps(self.0), _mm512_set1_ps(self.1));
            let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, hi);
            let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lo);
            _mm512_mask_mov_ps(_mm512_mask_mov_ps(x, above, hi), below, lo)
        }
    }
}

/// Evaluates `$body` with `$act` bound to the [`Lanes`] type of activation `$a`.
#[cfg(target_arch = "x86_64")]
macro_rules! with_lanes {
    ($a:expr, $act:ident => $body:expr) => {
        match $a {
            Activation::None => {
                let $act = lanes::Identity;
                $body
            }
            Activation::Relu => {
                let $act = lanes::Relu;
                $body
            }
            Activation::LeakyRelu(a) => {
                let $act = lanes::LeakyRelu(a);
                $body
            }
            Activation::Clip(lo, hi) => {
                let $act = lanes::Clip(lo, hi);
                $body
            }
        }
    };
}

impl Epilogue<'_> {
    /// Leaves the sums as they are.
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        residual: None,
        activation: Activation::None,
    };

    /// Output channels `co0..co0 + o.len()` of one output, whose first value sits at offset
    /// `at` of the call's output, as the separate passes would do them.
    fn apply(&self, co0: usize, at: usize, o: &mut [f32]) {
        if let Some(b) = self.bias {
            o.iter_mut().zip(&b[co0..]).for_each(|(v, b)| *v += b);
        }
        if let Some(r) = self.residual {
            o.iter_mut().zip(&r[at..]).for_each(|(v, r)| *v += r);
        }
        self.activation.apply(o);
    }

    /// The bias and the residual of [`Self::apply`] on 16 lanes (`mask` the lanes in use).
    ///
    /// # Safety
    /// Only called from AVX-512 code (it is inlined there); `co + 16` lanes of the bias and
    /// `at + 16` of the residual readable under `mask`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn add_avx512(
        &self,
        co: usize,
        at: usize,
        mask: u16,
        x: std::arch::x86_64::__m512,
    ) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let x = match self.bias {
            Some(b) => _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, b.as_ptr().add(co))),
            None => x,
        };
        match self.residual {
            Some(r) => _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, r.as_ptr().add(at))),
            None => x,
        }
    }

    /// [`Self::apply`] on 16 lanes, as [`finish_block`] computes it: the tests check that it
    /// gives the same bits.
    ///
    /// # Safety
    /// As [`Self::add_avx512`].
    #[cfg(all(test, target_arch = "x86_64"))]
    #[inline(always)]
    unsafe fn apply_avx512(
        &self,
        co: usize,
        at: usize,
        mask: u16,
        x: std::arch::x86_64::__m512,
    ) -> std::arch::x86_64::__m512 {
        let x = self.add_avx512(co, at, mask, x);
        with_lanes!(self.activation, act => act.apply(x))
    }
}

/// Output channels per weight panel of [`weights_panels`].
pub const PANEL: usize = 64;

/// Where output channel `co0`'s panel starts in a [`weights_panels`] layout, that panel's
/// width, and `co0`'s column in it.
#[inline(always)]
fn panel_of(g: &Geom, co0: usize) -> (usize, usize, usize) {
    let q = co0 / PANEL;
    let width = (g.c_out - PANEL * q).min(PANEL);
    (PANEL * q * g.kh * g.kw * g.c_in, width, co0 - PANEL * q)
}

/// Portable kernel (same arithmetic, same order as the AVX-512 one).
///
/// # Safety
/// For [`Filters::Rows`]: `rows` holds `kh * kw * first.len()` offsets from `base`, each
/// addressing `c_out` readable floats, and `first[b] < c_in`. For [`Filters::Panels`]: the slice
/// holds `kh * kw * c_in * c_out` weights. `win` must hold the whole window.
#[inline(always)]
pub unsafe fn conv_generic(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: &mut [f32]) {
    assert!(g.fits(out.len()));
    // SAFETY: forwarded from the caller; `out` holds every output (checked just above).
    unsafe { generic_at(g, win, f, e, out.as_mut_ptr()) }
}

/// [`conv_generic`] writing through a pointer (see [`conv_at`]).
///
/// # Safety
/// As [`conv_at`].
#[inline(always)]
unsafe fn generic_at(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: *mut f32) {
    let n = g.ph * g.pw;
    let chunk = match f {
        Filters::Rows { .. } => g.c_out.max(1),
        Filters::Panels(_) => PANEL,
    };
    for co0 in (0..g.c_out).step_by(chunk) {
        let width = chunk.min(g.c_out - co0);
        for j in 0..n {
            // SAFETY: the caller gives these floats to this call.
            let o = unsafe { std::slice::from_raw_parts_mut(out.add(g.opix(j) + co0), width) };
            o.fill(0.0);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let kk = ky * g.kw + kx;
                    let a = &win[g.pix(j, ky, kx)..][..g.c_in];
                    for b in 0..f.terms(g) {
                        let (slot, w) = match f {
                            Filters::Rows { first, rows, base } => {
                                let nb = first.len();
                                let at = base.wrapping_add(rows[kk * nb + b]);
                                let r = (at as *const f32).add(co0);
                                // SAFETY: the caller guarantees the row is readable.
                                (first[b] as usize, unsafe {
                                    std::slice::from_raw_parts(r, width)
                                })
                            }
                            Filters::Panels(w) => {
                                let (base, pw, _) = panel_of(g, co0);
                                (b, &w[base + (kk * g.c_in + b) * pw..][..width])
                            }
                        };
                        let av = a[slot];
                        for (d, &wv) in o.iter_mut().zip(w) {
                            *d = av.mul_add(wv, *d);
                        }
                    }
                }
            }
            e.apply(co0, g.opix(j) + co0, o);
        }
    }
}

/// AVX-512 kernel: output blocks held in registers (6 x 64 or up to 8 x 32 channels).
///
/// # Safety
/// As [`conv_generic`], and the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn conv_avx512(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: &mut [f32]) {
    assert!(g.fits(out.len()));
    // SAFETY: forwarded from the caller; `out` holds every output (checked just above).
    unsafe { avx512_at(g, win, f, e, out.as_mut_ptr()) }
}

/// [`conv_avx512`] writing through a pointer (see [`conv_at`]).
///
/// # Safety
/// As [`conv_at`], and the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512_at(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: *mut f32) {
    if let Filters::Panels(w) = f {
        assert!(w.len() >= g.kh * g.kw * g.c_in * g.c_out);
    }
    for kys in kernel_row_passes(g, f.terms(g)) {
        let pass = Pass {
            g,
            win,
            f,
            kys,
            e,
            prefetch: std::ptr::null(),
        };
        // SAFETY: forwarded from the caller.
        unsafe {
            match f {
                Filters::Panels(_) => blocks_pass::<true>(pass, out),
                Filters::Rows { .. } => blocks_pass::<false>(pass, out),
            }
        }
    }
}

/// What every block of one [`conv_avx512`] pass reads: the geometry, the window, the filters,
/// and the kernel rows `kys` summed in this pass (see [`kernel_row_passes`]).
#[derive(Clone, Copy)]
struct Pass<'a> {
    g: &'a Geom,
    win: &'a [f32],
    f: Filters<'a>,
    kys: (usize, usize),
    /// Applied by the last pass.
    e: Epilogue<'a>,
    /// Panel filters: where this block's part of the next group's filters starts, to be
    /// prefetched one cache line per term while it sums (null: none).
    prefetch: *const f32,
}

/// Filter bytes one 64-channel group may read per pass before the pass is split by kernel
/// rows: about half of the 1 MB L2 of the machines measured, so the group's filters stay
/// there while every output block of the call reuses them.
const GROUP_FILTER_BUDGET: usize = 512 * 1024;

/// The kernel-row ranges summed one after the other. A wide layer's filters for one group of
/// 64 output channels (`kh * kw * B * 64` floats: 1.2 MB for 512 input channels) would
/// not fit in L2, and every block of outputs would stream them again from memory (ResNet-18's
/// 512-channel stage ran at half speed). Split into kernel rows, each pass reads a slice that
/// fits, and the accumulators go through the output between passes. The sum keeps its order
/// (tap, channel), so the bits are the same as in one pass.
fn kernel_row_passes(g: &Geom, terms: usize) -> impl Iterator<Item = (usize, usize)> {
    let group_bytes = g.kh * g.kw * terms * PANEL * std::mem::size_of::<f32>();
    let kh = g.kh;
    let step = if group_bytes > GROUP_FILTER_BUDGET {
        1
    } else {
        kh
    };
    (0..kh)
        .step_by(step)
        .map(move |ky| (ky, (ky + step).min(kh)))
}

/// One pass of [`conv_avx512`] over every output and output channel; `PANELS` when the
/// filters are [`Filters::Panels`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn blocks_pass<const PANELS: bool>(p: Pass, out: *mut f32) {
    let g = p.g;
    let n = g.ph * g.pw;
    const ALL: [u16; 4] = [0xffff; 4];
    // Layers with 64 or more output channels: blocks of 6 outputs x 64 channels (24
    // accumulators), so each broadcast input value feeds 4 FMAs. Otherwise (and for the
    // channels left over) blocks of up to 8 outputs x 32 channels.
    // A small patch whose output count 6 does not divide (HASTE's 4 x 4) takes blocks of 4
    // outputs x 64 channels instead, so no block is left over at half speed.
    let wide = g.c_out / 64;
    let wide_mr = if n <= 64 && !n.is_multiple_of(6) && n.is_multiple_of(4) {
        4
    } else {
        6
    };
    // Channel group outer, output blocks inner: a group's filters (`c_in * taps` rows of 64)
    // stay in cache while every block of the call uses them; the whole filter bank of a wide
    // layer (1.2 MB for 64 -> 512) would not.
    let mut full = if wide > 0 { n - n % wide_mr } else { 0 };
    if wide_mr == 6 && (1..=2).contains(&(n - full)) && full >= 6 {
        // One or two outputs left over (7x7 = 8 x 6 + 1): a block of 1 or 2 outputs reads
        // all its filters for 4 or 8 FMAs per row. The last full block and them run as
        // blocks of 4 + 3 or 4 + 4 instead.
        full -= 6;
    }
    // SAFETY (every block below): forwarded from the caller; each block stays inside `n`
    // outputs and `c_out` channels.
    for q in 0..wide {
        let co0 = 64 * q;
        for (k, j0) in (0..full).step_by(wide_mr).enumerate() {
            let p = Pass {
                prefetch: next_filters_part(p, q, k),
                ..p
            };
            unsafe {
                if wide_mr == 4 {
                    block::<4, 4, PANELS>(p, out, j0, co0, ALL)
                } else {
                    block::<6, 4, PANELS>(p, out, j0, co0, ALL)
                }
            };
        }
    }
    if wide > 0 && !g.c_out.is_multiple_of(64) {
        // The channels past the last full group, for the same outputs.
        for j0 in (0..full).step_by(8) {
            unsafe { narrow_blocks::<PANELS>(p, out, j0, (full - j0).min(8), 64 * wide) };
        }
    }
    // The outputs past the last full block (fewer than 6, or 7 or 8 as above): still 64
    // channels at a time in wide layers, so each broadcast feeds 4 FMAs.
    let rest = n - full;
    let mut co_rest = 0;
    if wide > 0 && rest > 0 {
        for q in 0..wide {
            let co0 = 64 * q;
            let mut j0 = full;
            while j0 < n {
                let mr = if n - j0 > 5 { 4 } else { n - j0 };
                unsafe {
                    match mr {
                        5 => block::<5, 4, PANELS>(p, out, j0, co0, ALL),
                        4 => block::<4, 4, PANELS>(p, out, j0, co0, ALL),
                        3 => block::<3, 4, PANELS>(p, out, j0, co0, ALL),
                        2 => block::<2, 4, PANELS>(p, out, j0, co0, ALL),
                        _ => block::<1, 4, PANELS>(p, out, j0, co0, ALL),
                    }
                };
                j0 += mr;
            }
        }
        co_rest = 64 * wide;
    }
    if PANELS && wide == 0 && g.c_out <= 32 {
        // Narrow layers whose neighbouring outputs read inputs a common constant apart (the
        // RGB layers, 3; 16- and 32-channel inputs): see `row_block`.
        match g.sw * g.c_in {
            3 => return unsafe { row_blocks::<3>(p, out) },
            16 => return unsafe { row_blocks::<16>(p, out) },
            32 => return unsafe { row_blocks::<32>(p, out) },
            _ => {}
        }
    }
    // Whatever is left (every output of narrow layers), in blocks of 8 x 32.
    for j0 in (full..n).step_by(8) {
        unsafe { narrow_blocks::<PANELS>(p, out, j0, (n - j0).min(8), co_rest) };
    }
}

/// Every output of a narrow layer (at most 32 output channels) whose neighbouring outputs
/// read inputs `S` floats apart (`sw * c_in == S`), row by row: [`row_block`]s of 16
/// outputs (up to 16 channels) or of 8 (up to 32), the rest of each row as [`block`]s of up
/// to 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn row_blocks<const S: usize>(p: Pass, out: *mut f32) {
    let g = p.g;
    let lanes = |w: usize| if w >= 16 { 0xffff } else { (1u16 << w) - 1 };
    let masks = [lanes(g.c_out), lanes(g.c_out.saturating_sub(16))];
    for oy in 0..g.ph {
        let (mut j, end) = (oy * g.pw, (oy + 1) * g.pw);
        // SAFETY (every block): forwarded from the caller; each block stays in its row.
        if g.c_out <= 16 {
            while end - j >= 16 {
                unsafe { row_block::<16, 1, S>(p, out, j, masks) };
                j += 16;
            }
        } else {
            // Not 12 (24 accumulators): LLVM then kept the accumulators in memory too,
            // storing all of them on every term (half speed).
            while end - j >= 8 {
                unsafe { row_block::<8, 2, S>(p, out, j, masks) };
                j += 8;
            }
        }
        while j < end {
            let mr = (end - j).min(8);
            unsafe { narrow_blocks::<true>(p, out, j, mr, 0) };
            j += mr;
        }
    }
}

/// `MR` outputs from `j0`, all in one output row, x `16 * NV` output channels (lanes past
/// `masks` off), for layers whose neighbouring outputs read inputs `S` floats apart. With
/// that distance a constant, each output's input is one address plus a constant offset, so
/// 16 outputs fit in registers; [`block`] keeps one address register per output, and
/// beyond 8 they spilled (16 -> 16 layers ran at 87-93 GFLOP/s on one core in blocks of 8,
/// 100-106 in these). Same sums, in the same order, as [`block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn row_block<const MR: usize, const NV: usize, const S: usize>(
    p: Pass,
    out: *mut f32,
    j0: usize,
    masks: [u16; 2],
) {
    use std::arch::x86_64::*;
    let g = p.g;
    let Filters::Panels(weights) = p.f else {
        unreachable!("row blocks run panel filters")
    };
    let at = g.out_offsets::<MR>(j0);
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if p.kys.0 > 0 {
        for (row, &o) in acc.iter_mut().zip(&at) {
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm512_maskz_loadu_ps(masks[v], out.add(o + 16 * v));
            }
        }
    }
    let (oy, ox) = (j0 / g.pw, j0 % g.pw);
    let origin = (oy * g.sh * g.win_w + ox * g.sw) * g.c_in;
    let (terms, width) = (g.kw * g.c_in, g.c_out);
    for ky in p.kys.0..p.kys.1 {
        prefetch_block_io::<MR, NV>(p, out, &at, 0, ky);
        let a = p.win.as_ptr().add(origin + ky * g.win_w * g.c_in);
        let w0 = weights.as_ptr().add(ky * terms * width);
        for t in 0..terms {
            let w = w0.add(t * width);
            let wv: [__m512; NV] =
                std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], w.add(16 * v)));
            let a_t = a.add(t);
            for (i, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a_t.add(i * S));
                for (v, acc) in row.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(x, wv[v], *acc);
                }
            }
        }
    }
    if p.kys.1 < g.kh {
        for (row, &o) in acc.iter().zip(&at) {
            for (v, x) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add(o + 16 * v), masks[v], *x);
            }
        }
        return;
    }
    // The epilogue in registers (at most 16 accumulators here, so its constants fit beside
    // them; `finish_block` reloads a stored block instead).
    with_lanes!(p.e.activation, act => {
        for (row, &o) in acc.iter().zip(&at) {
            for (v, &x) in row.iter().enumerate() {
                let x = act.apply(p.e.add_avx512(16 * v, o + 16 * v, masks[v], x));
                _mm512_mask_storeu_ps(out.add(o + 16 * v), masks[v], x);
            }
        }
    })
}

/// The part of the filters read after group `q`'s (of 64 output channels) that block `k` of
/// that group prefetches, or null. A wide layer's filters do not stay in cache from one
/// image to the next (ResNet-18's 512-channel stage holds 31 MB), so each group's first
/// block waited on memory for filters it had not yet read (that stage ran at 170-195
/// GFLOP/s on two cores, 215-221 with this). Prefetched by the blocks before, they arrive
/// while those compute. A block sums `rows * kw * c_in` terms of 64 channels, four cache
/// lines each, and prefetches one line per term: the first four blocks of a group cover the
/// next group's slice of its kernel rows, or after the last group the first group's slice
/// of the next pass's rows.
fn next_filters_part(p: Pass, q: usize, k: usize) -> *const f32 {
    let g = p.g;
    let Filters::Panels(w) = p.f else {
        return std::ptr::null();
    };
    let (rows, terms) = (p.kys.1 - p.kys.0, g.kw * g.c_in);
    let next = if PANEL * (q + 2) <= g.c_out {
        (q + 1, p.kys.0)
    } else if p.kys.1 < g.kh {
        (0, p.kys.1)
    } else {
        return std::ptr::null();
    };
    if k >= 4 {
        return std::ptr::null();
    }
    let slice = PANEL * next.0 * g.kh * terms + next.1 * terms * PANEL;
    w.as_ptr().wrapping_add(slice + k * rows * terms * 16)
}

/// Outputs `j0..j0 + mr` (`mr <= 8`), output channels `co_start..c_out` in blocks of 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn narrow_blocks<const PANELS: bool>(
    p: Pass,
    out: *mut f32,
    j0: usize,
    mr: usize,
    co_start: usize,
) {
    let lane_mask = |width: usize| -> u16 {
        if width >= 16 {
            0xffff
        } else {
            (1u16 << width) - 1
        }
    };
    let mut co0 = co_start;
    while co0 < p.g.c_out {
        let width = (p.g.c_out - co0).min(32);
        let m0 = lane_mask(width);
        let m1 = lane_mask(width.saturating_sub(16));
        macro_rules! go {
            ($mr:literal) => {
                if width <= 16 {
                    block::<$mr, 1, PANELS>(p, out, j0, co0, [m0, 0, 0, 0])
                } else {
                    block::<$mr, 2, PANELS>(p, out, j0, co0, [m0, m1, 0, 0])
                }
            };
        }
        // SAFETY: forwarded from the caller; blocks stay inside `n` and `c_out`.
        unsafe {
            match mr {
                8 => go!(8),
                7 => go!(7),
                6 => go!(6),
                5 => go!(5),
                4 => go!(4),
                3 => go!(3),
                2 => go!(2),
                _ => go!(1),
            }
        }
        co0 += 32;
    }
}

/// `MR` outputs from `j0` x `16 * NV` output channels from `co0` (lanes past `masks` off),
/// summed over the pass's kernel rows: from zero on the first pass, from the stored partial
/// sums on the later ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn block<const MR: usize, const NV: usize, const PANELS: bool>(
    p: Pass,
    out: *mut f32,
    j0: usize,
    co0: usize,
    masks: [u16; 4],
) {
    use std::arch::x86_64::*;
    let g = p.g;
    let op = out;
    // Each output's offset in `out`.
    let at = g.out_offsets::<MR>(j0);
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if p.kys.0 > 0 {
        for (i, row) in acc.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm512_maskz_loadu_ps(masks[v], op.add(at[i] + co0 + 16 * v));
            }
        }
    }
    let wp = p.win.as_ptr();
    // Each output's tap-(0, 0) input pixel, computed once per block, stepping along the
    // output rows (divisions by the patch width would otherwise dominate layers with few
    // input channels).
    let origin: [usize; MR] = {
        let (mut oy, mut ox) = (j0 / g.pw, j0 % g.pw);
        std::array::from_fn(|_| {
            let o = (oy * g.sh * g.win_w + ox * g.sw) * g.c_in;
            ox += 1;
            if ox == g.pw {
                (oy, ox) = (oy + 1, 0);
            }
            o
        })
    };
    let load_w = |w: *const f32| -> [__m512; NV] {
        std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], w.add(16 * v)))
    };
    match p.f {
        Filters::Panels(weights) if PANELS => {
            // Every channel in order: the `kw * c_in` terms of a kernel row sit next to each
            // other in the window and in the panel, so they run as one loop (the first RGB
            // layer has only 3 terms per tap).
            let terms = g.kw * g.c_in;
            let (base, width, col) = panel_of(g, co0);
            let w_panel = weights.as_ptr().add(base + col);
            // Without a part of the next filters to prefetch, the lines of this block's
            // own (already in cache): one loop for both.
            let pf = if p.prefetch.is_null() {
                w_panel.add(p.kys.0 * terms * width)
            } else {
                p.prefetch
            };
            for ky in p.kys.0..p.kys.1 {
                prefetch_block_io::<MR, NV>(p, op, &at, co0, ky);
                let row_in = ky * g.win_w * g.c_in;
                let abase: [*const f32; MR] = std::array::from_fn(|i| wp.add(origin[i] + row_in));
                let w0 = w_panel.add(ky * terms * width);
                let pf_row = pf.wrapping_add((ky - p.kys.0) * terms * 16);
                for t in 0..terms {
                    if NV == 4 {
                        // Only wide blocks have a next group to prefetch; in narrow blocks
                        // (8 FMAs per term) the instruction would be a load slot for nothing.
                        _mm_prefetch::<_MM_HINT_T0>(pf_row.wrapping_add(t * 16).cast());
                    }
                    let wv = load_w(w0.add(t * width));
                    for i in 0..MR {
                        let a = _mm512_set1_ps(*abase[i].add(t));
                        for v in 0..NV {
                            acc[i][v] = _mm512_fmadd_ps(a, wv[v], acc[i][v]);
                        }
                    }
                }
            }
        }
        Filters::Rows { first, rows, base } => {
            let nb = first.len();
            assert!(rows.len() >= g.kh * g.kw * nb);
            let fp = first.as_ptr();
            for ky in p.kys.0..p.kys.1 {
                for kx in 0..g.kw {
                    let kk = ky * g.kw + kx;
                    let tap_in = (ky * g.win_w + kx) * g.c_in;
                    let abase: [*const f32; MR] =
                        std::array::from_fn(|i| wp.add(origin[i] + tap_in));
                    let rp = rows.as_ptr().add(kk * nb);
                    for b in 0..nb {
                        let f = *fp.add(b) as usize;
                        let wv = load_w((base.wrapping_add(*rp.add(b)) as *const f32).add(co0));
                        for i in 0..MR {
                            let a = _mm512_set1_ps(*abase[i].add(f));
                            for v in 0..NV {
                                acc[i][v] = _mm512_fmadd_ps(a, wv[v], acc[i][v]);
                            }
                        }
                    }
                }
            }
        }
        Filters::Panels(_) => unreachable!("PANELS is set exactly for panel filters"),
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(op.add(at[i] + co0 + 16 * v), masks[v], x);
        }
    }
    if p.kys.1 == g.kh {
        finish_block::<MR, NV>(p, op, at, co0, masks);
    }
}

/// Asks for the memory a block touches after its sums into L1 while it sums kernel row
/// `ky`: its output lines (for writing) halfway through the pass, the residual values its
/// epilogue adds at the start of the last kernel row. Both missed the cache when reached and
/// stalled the core (2.4 % of ResNet-18's time went to the epilogue, 1.1 % after).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_block_io<const MR: usize, const NV: usize>(
    p: Pass,
    op: *const f32,
    at: &[usize; MR],
    co0: usize,
    ky: usize,
) {
    use std::arch::x86_64::*;
    let lines = || (0..MR * NV).map(|k| at[k / NV] + co0 + 16 * (k % NV));
    if ky == p.kys.0 + (p.kys.1 - p.kys.0) / 2 {
        lines().for_each(|at| _mm_prefetch::<_MM_HINT_ET0>(op.wrapping_add(at).cast()));
    }
    if let (Some(r), true) = (p.e.residual, ky + 1 == p.g.kh) {
        lines().for_each(|at| _mm_prefetch::<_MM_HINT_T0>(r.as_ptr().wrapping_add(at).cast()));
    }
}

/// The epilogue of a block just stored (still in L1). Kept out of [`block`]: its constants,
/// hoisted into the block's loops, would push the 24 accumulators out of registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline(never)]
unsafe fn finish_block<const MR: usize, const NV: usize>(
    p: Pass,
    op: *mut f32,
    at: [usize; MR],
    co0: usize,
    masks: [u16; 4],
) {
    if p.e.bias.is_none() && p.e.residual.is_none() && p.e.activation == Activation::None {
        return;
    }
    // SAFETY: forwarded from the caller.
    with_lanes!(p.e.activation, act => unsafe { finish_with::<MR, NV>(p.e, &act, op, at, co0, masks) })
}

/// [`finish_block`] for one activation type: add the bias and the residual, then activate,
/// `NV` vectors of each output at offsets `at` (plus `co0`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn finish_with<const MR: usize, const NV: usize>(
    e: Epilogue,
    act: &impl Lanes,
    op: *mut f32,
    at: [usize; MR],
    co0: usize,
    masks: [u16; 4],
) {
    use std::arch::x86_64::*;
    for o in at {
        for (v, &mask) in masks.iter().enumerate().take(NV) {
            let offset = o + co0 + 16 * v;
            let x = _mm512_maskz_loadu_ps(mask, op.add(offset));
            let x = act.apply(e.add_avx512(co0 + 16 * v, offset, mask, x));
            _mm512_mask_storeu_ps(op.add(offset), mask, x);
        }
    }
}

/// Runs the fastest kernel this CPU supports ([`conv_avx512`] or [`conv_generic`]; both give
/// the same bits).
///
/// # Safety
/// As [`conv_generic`].
#[inline]
pub unsafe fn conv(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: &mut [f32]) {
    assert!(g.fits(out.len()));
    // SAFETY: forwarded from the caller; `out` holds every output (checked just above).
    unsafe { conv_at(g, win, f, e, out.as_mut_ptr()) }
}

/// [`conv`] writing through a pointer, so that threads can compute disjoint channel slices
/// of one pixel-major output (`g.c_out` channels of each pixel's `g.out_stride`).
///
/// # Safety
/// As [`conv_generic`], and the floats `opix(j)..opix(j) + c_out` past `out` of every output
/// `j` are writable and touched by nothing else during the call.
#[inline]
pub unsafe fn conv_at(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: *mut f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: forwarded from the caller; the CPU features are checked just above.
        unsafe { avx512_at(g, win, f, e, out) };
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe { generic_at(g, win, f, e, out) }
}

/// OIHW weights `[c_out][c_in][kh * kw]` in the panel layout of [`Filters::Panels`]: output
/// channels in panels of [`PANEL`] (the last one narrower), each panel `[(ky, kx)][c_in][width]`.
/// A panel is what one 64-channel group of the kernel reads, so it is contiguous: wide
/// layers' filters stream from memory in order instead of as 256-byte pieces of 2 KB rows.
pub fn weights_panels(weights: &[f32], c_in: usize, c_out: usize, taps: usize) -> Vec<f32> {
    let mut wp = vec![0.0f32; weights.len()];
    for co in 0..c_out {
        let q = co / PANEL;
        let width = (c_out - PANEL * q).min(PANEL);
        let base = PANEL * q * taps * c_in;
        for ci in 0..c_in {
            for kk in 0..taps {
                wp[base + (kk * c_in + ci) * width + co - PANEL * q] =
                    weights[(co * c_in + ci) * taps + kk];
            }
        }
    }
    wp
}

/// OIHW weights `[c_out][c_in][kh * kw]` re-laid out tap-major, `[(ky, kx)][c_in][c_out]`: the
/// layout [`conv`] reads, where each channel's slice of a tap is one contiguous `c_out` row.
pub fn weights_tap_major(weights: &[f32], c_in: usize, c_out: usize, taps: usize) -> Vec<f32> {
    let mut wt = vec![0.0f32; weights.len()];
    for co in 0..c_out {
        for ci in 0..c_in {
            for kk in 0..taps {
                wt[(kk * c_in + ci) * c_out + co] = weights[(co * c_in + ci) * taps + kk];
            }
        }
    }
    wt
}

/// A dense convolution (groups 1, no dilation) run by the direct kernel on NCHW tensors: the
/// input is transposed once into a zero-padded pixel-major image, the kernel computes every
/// output in place, and the epilogue transposes back with bias and activation.
#[derive(Clone, Debug)]
pub struct DirectConv {
    params: Conv2dParams,
    /// Weights in 64-output-channel panels ([`weights_panels`]).
    panels: Vec<f32>,
    bias: Option<Vec<f32>>,
    activation: Activation,
    /// The activation after a fused residual addition ([`ConvOp::residual`]).
    residual: Option<Activation>,
}

/// How [`DirectConv::forward_bands`] splits an image: `per` output rows a part, the input
/// pixel-major (`nhwc`) or planar, and the image's residual input if any.
#[derive(Clone, Copy)]
struct Bands<'a> {
    per: usize,
    nhwc: bool,
    residual: Option<&'a [f32]>,
}

/// The output of [`DirectConv::forward_channel_parts`], shared by parts that write disjoint
/// channels of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: each part writes its own channels only (see `forward_channel_parts`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The output from float `offset` on (taking `self`, so a closure captures the whole
    /// wrapper and not its pointer field).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Per-thread buffers of [`DirectConv`], grown on first use and then reused.
#[derive(Clone, Debug, Default)]
pub struct DirectScratch {
    /// Zero-padded pixel-major input `[hp][wp][c_in]`.
    padded: Vec<f32>,
    /// Pixel-major output `[oh][ow][c_out]`.
    out: Vec<f32>,
    /// Per part of [`DirectConv::forward_parallel`]: the padded input rows that part reads.
    bands: Vec<Vec<f32>>,
}

impl DirectConv {
    /// Whether the direct kernel can run `p` (one group, no dilation) and is the better
    /// choice. With pixel-major input and output it runs the shared models' spatial
    /// convolutions at 90-110 GFLOP/s on one core, against 60-100 for im2col + GEMM, first
    /// RGB layers included, and 1x1 convolutions with 64 or more output channels at 104-107
    /// against 68-88 for the GEMM crate; with fewer output channels the GEMM crate is as fast
    /// or faster (`cargo run --release --example conv_paths`, `--example one_conv`).
    pub fn suits(p: &Conv2dParams) -> bool {
        p.groups == 1 && p.dilation == (1, 1) && ((p.kh, p.kw) != (1, 1) || p.c_out >= 64)
    }

    /// `None` when the kernel cannot run the convolution (groups or dilation other than 1);
    /// whether it should is [`Self::suits`].
    pub fn new(op: &ConvOp) -> Option<DirectConv> {
        let p = op.params;
        if p.groups != 1 || p.dilation != (1, 1) {
            return None;
        }
        Some(DirectConv {
            params: p,
            panels: weights_panels(&op.weights, p.c_in, p.c_out, p.kh * p.kw),
            bias: op.bias.clone(),
            activation: op.activation,
            residual: op.residual,
        })
    }

    pub fn params(&self) -> &Conv2dParams {
        &self.params
    }

    /// One image `x = [c_in, h, w]` -> `out = [c_out, oh, ow]`, on the calling thread, each
    /// in the memory order `io` gives. For a convolution with a fused residual addition,
    /// `residual` is that input for this image (in the output's order); without it the output
    /// stops at the bias.
    pub fn forward(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
        s: &mut DirectScratch,
        io: IoLayout,
        residual: Option<&[f32]>,
    ) {
        let (oh, ow) = self.params.out_hw(h, w);
        let n = oh * ow * self.params.c_out;
        let win = if self.reads_in_place(io.input_nhwc) {
            x
        } else {
            self.pad_input(x, h, w, io.input_nhwc, s);
            &s.padded
        };
        if io.output_nhwc {
            let e = self.epilogue(residual);
            self.output_rows(win, w, 0..oh, ow, &mut out[..n], e);
            return;
        }
        grow(&mut s.out, n);
        self.output_rows(win, w, 0..oh, ow, &mut s.out[..n], Epilogue::NONE);
        let chans = 0..self.params.c_out;
        self.epilogue_channels(&s.out, oh * ow, chans, out, residual);
    }

    /// As [`Self::forward`], with the output rows shared among `parts` rayon tasks (for an
    /// image too large to leave one thread idle).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_parallel(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
        s: &mut DirectScratch,
        io: IoLayout,
        parts: usize,
        residual: Option<&[f32]>,
    ) {
        use rayon::prelude::*;
        let p = &self.params;
        let (oh, ow) = p.out_hw(h, w);
        let n = oh * ow * p.c_out;
        let per = oh.div_ceil(parts.max(1)).max(1);
        if io.output_nhwc {
            if let Some(groups) = self.channel_split((h, w), parts) {
                let e = self.epilogue(residual);
                return self.forward_channel_parts(x, (h, w), &mut out[..n], s, io, groups, e);
            }
            let bands = Bands {
                per,
                nhwc: io.input_nhwc,
                residual,
            };
            return self.forward_bands(x, (h, w), &mut out[..n], s, bands);
        }
        // A planar output: pixel-major rows first, then transposed with bias and activation.
        self.pad_input_parallel(x, h, w, io.input_nhwc, s);
        let padded = &s.padded[..];
        grow(&mut s.out, n);
        s.out[..n]
            .par_chunks_mut(per * ow * p.c_out)
            .enumerate()
            .for_each(|(k, chunk)| {
                let oy0 = k * per;
                let rows_here = chunk.len() / (ow * p.c_out);
                self.output_rows(padded, w, oy0..oy0 + rows_here, ow, chunk, Epilogue::NONE);
            });
        let hw = oh * ow;
        let per_c = p.c_out.div_ceil(parts.max(1)).max(1);
        let ohwc = &s.out[..];
        out[..p.c_out * hw]
            .par_chunks_mut(per_c * hw)
            .enumerate()
            .for_each(|(k, o)| {
                let c0 = k * per_c;
                let r = residual.map(|r| &r[c0 * hw..][..o.len()]);
                self.epilogue_channels(ohwc, hw, c0..c0 + o.len() / hw, o, r);
            });
    }

    /// [`Self::forward_parallel`] with a pixel-major output: each part pads just the input
    /// rows its `per` output rows read into a buffer of its own (transposing them from planar
    /// when `nhwc` is false) and computes them, so a layer is one parallel step, not two (at
    /// batch 1 a CIFAR layer is 10-30 us of work, and every join between the cores costs;
    /// the first layer's transpose no longer runs on one core).
    fn forward_bands(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
        s: &mut DirectScratch,
        Bands {
            per,
            nhwc,
            residual,
        }: Bands,
    ) {
        use rayon::prelude::*;
        let p = &self.params;
        let (oh, ow) = p.out_hw(h, w);
        let (wp, c) = (w + p.pads[1] + p.pads[3], p.c_in);
        let parts = oh.div_ceil(per);
        if s.bands.len() < parts {
            s.bands.resize_with(parts, Vec::new);
        }
        out.par_chunks_mut(per * ow * p.c_out)
            .zip(s.bands[..parts].par_iter_mut())
            .enumerate()
            .for_each(|(k, (chunk, band))| {
                let rows = chunk.len() / (ow * p.c_out);
                // Padded input rows `r0..r1` feed output rows `k * per..k * per + rows`.
                let r0 = k * per * p.stride.0;
                let r1 = (k * per + rows - 1) * p.stride.0 + p.kh;
                let r = residual.map(|r| &r[k * per * ow * p.c_out..][..chunk.len()]);
                if self.reads_in_place(nhwc) {
                    let win = &x[r0 * wp * c..r1 * wp * c];
                    return self.rows_from_window(win, wp, rows, ow, chunk, self.epilogue(r));
                }
                self.pad_rows(x, (h, w), nhwc, r0..r1, band);
                self.rows_from_window(band, wp, rows, ow, chunk, self.epilogue(r));
            });
    }

    /// How many 64-channel filter groups each of `parts` computes when the output rows do not
    /// split evenly among them (7 rows on 2 cores kept one busy for 4 while the other had 3)
    /// and the channel groups do: then each part computes every output pixel for its share
    /// of the filters. (Splitting by channels where rows split evenly too, so that each core
    /// reads half of a wide layer's filters, measured no faster.)
    fn channel_split(&self, (h, w): (usize, usize), parts: usize) -> Option<usize> {
        let p = &self.params;
        let groups = p.c_out / PANEL;
        let (oh, _) = p.out_hw(h, w);
        let even_channels = p.c_out.is_multiple_of(PANEL) && groups.is_multiple_of(parts);
        (parts >= 2 && even_channels && !oh.is_multiple_of(parts)).then_some(groups / parts)
    }

    /// [`Self::forward_parallel`] split by output channels: each part pads the whole input
    /// into a buffer of its own (a small copy next to its share of the filters) and computes
    /// `groups` filter groups of every output pixel, in place in the shared pixel-major output.
    #[allow(clippy::too_many_arguments)]
    fn forward_channel_parts(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
        s: &mut DirectScratch,
        io: IoLayout,
        groups: usize,
        e: Epilogue,
    ) {
        use rayon::prelude::*;
        let p = &self.params;
        let (oh, ow) = p.out_hw(h, w);
        let (hp, wp) = (h + p.pads[0] + p.pads[2], w + p.pads[1] + p.pads[3]);
        let (width, taps) = (groups * PANEL, p.kh * p.kw);
        let parts = p.c_out / width;
        if s.bands.len() < parts {
            s.bands.resize_with(parts, Vec::new);
        }
        assert_eq!(out.len(), oh * ow * p.c_out);
        let shared = SharedOut(out.as_mut_ptr());
        s.bands[..parts]
            .par_iter_mut()
            .enumerate()
            .for_each(|(k, band)| {
                let win = if self.reads_in_place(io.input_nhwc) {
                    x
                } else {
                    self.pad_rows(x, (h, w), io.input_nhwc, 0..hp, band);
                    &band[..]
                };
                let g = Geom {
                    c_out: width,
                    ..self.geom(wp, oh, ow)
                };
                let c0 = k * width;
                // The panels of full groups follow each other: this part's are one slice.
                let panels = &self.panels[c0 * taps * p.c_in..][..width * taps * p.c_in];
                let e = Epilogue {
                    bias: e.bias.map(|b| &b[c0..]),
                    residual: e.residual.map(|r| &r[c0..]),
                    activation: e.activation,
                };
                // SAFETY: the panels hold this part's weights, the band the whole padded
                // input; part `k` writes channels `c0..c0 + width` of each output pixel and
                // no other part does (`out` holds `oh * ow` pixels of `c_out`, asserted).
                unsafe { conv_at(&g, win, Filters::Panels(panels), e, shared.at(c0)) };
            });
    }

    /// Whether the kernel reads the input where it is: pixel-major and without padding, it is
    /// already the window the kernel addresses. (Copied, ResNet-18's 1x1 stride-2 shortcuts,
    /// which read a quarter of the copy, ran at 95-126 GFLOP/s at batch 1; in place, 143-165.)
    fn reads_in_place(&self, nhwc: bool) -> bool {
        nhwc && self.params.pads == [0; 4]
    }

    /// The kernel's geometry for `rows` whole output rows of `ow` outputs over a window of
    /// rows `win_w` pixels long, all output channels.
    fn geom(&self, win_w: usize, rows: usize, ow: usize) -> Geom {
        let p = &self.params;
        Geom {
            win_w,
            c_in: p.c_in,
            c_out: p.c_out,
            kh: p.kh,
            kw: p.kw,
            sh: p.stride.0,
            sw: p.stride.1,
            ph: rows,
            pw: ow,
            out_w: ow,
            out_stride: p.c_out,
        }
    }

    /// Rows `rows` of the zero-padded pixel-major image of `x` (NCHW, or NHWC with `nhwc`)
    /// into `band`.
    fn pad_rows(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        nhwc: bool,
        rows: Range<usize>,
        band: &mut Vec<f32>,
    ) {
        let p = &self.params;
        let (wp, c) = (w + p.pads[1] + p.pads[3], p.c_in);
        grow(band, rows.len() * wp * c);
        let top_left = (p.pads[0], p.pads[1]);
        for (r, row) in rows.zip(band.chunks_exact_mut(wp * c)) {
            if nhwc {
                layout::pad_hwc_row(x, c, (h, w), top_left, r, row);
            } else {
                layout::pad_chw_row(x, c, (h, w), top_left, r, row);
            }
        }
    }

    /// Copies `x` (NCHW, or NHWC with `nhwc`) into the zero-padded pixel-major buffer.
    fn pad_input(&self, x: &[f32], h: usize, w: usize, nhwc: bool, s: &mut DirectScratch) {
        let p = &self.params;
        let (hp, wp) = (h + p.pads[0] + p.pads[2], w + p.pads[1] + p.pads[3]);
        grow(&mut s.padded, hp * wp * p.c_in);
        let (top_left, padded) = ((p.pads[0], p.pads[1]), (hp, wp));
        if nhwc {
            layout::pad_hwc(x, p.c_in, (h, w), top_left, padded, &mut s.padded);
        } else {
            layout::to_hwc_padded(x, p.c_in, (h, w), top_left, padded, &mut s.padded);
        }
    }

    /// [`Self::pad_input`] with the rows of a pixel-major input copied in parallel.
    fn pad_input_parallel(&self, x: &[f32], h: usize, w: usize, nhwc: bool, s: &mut DirectScratch) {
        use rayon::prelude::*;
        if !nhwc {
            return self.pad_input(x, h, w, nhwc, s);
        }
        let p = &self.params;
        let (hp, wp, c) = (h + p.pads[0] + p.pads[2], w + p.pads[1] + p.pads[3], p.c_in);
        let (top, left) = (p.pads[0], p.pads[1]);
        grow(&mut s.padded, hp * wp * c);
        s.padded[..hp * wp * c]
            .par_chunks_mut(wp * c)
            .enumerate()
            .for_each(|(r, row)| layout::pad_hwc_row(x, c, (h, w), (top, left), r, row));
    }

    /// Bias, the residual (when this convolution has one and it is given) and activation, for
    /// pixel-major outputs (the kernel applies them).
    fn epilogue<'a>(&'a self, residual: Option<&'a [f32]>) -> Epilogue<'a> {
        let (residual, activation) = self.finish(residual);
        Epilogue {
            bias: self.bias.as_deref(),
            residual,
            activation,
        }
    }

    /// The residual the output gets and the activation after it: the fused residual
    /// addition's when this convolution has one and `residual` is given, else none and the
    /// convolution's own.
    fn finish<'a>(&self, residual: Option<&'a [f32]>) -> (Option<&'a [f32]>, Activation) {
        match (residual, self.residual) {
            (Some(r), Some(after)) => (Some(r), after),
            _ => (None, self.activation),
        }
    }

    /// Output rows `oys` into `ohwc` (pixel-major, starting at row `oys.start`), finished
    /// by `e`.
    fn output_rows(
        &self,
        padded: &[f32],
        w: usize,
        oys: std::ops::Range<usize>,
        ow: usize,
        ohwc: &mut [f32],
        e: Epilogue,
    ) {
        let p = &self.params;
        let wp = w + p.pads[1] + p.pads[3];
        let win = &padded[oys.start * p.stride.0 * wp * p.c_in..];
        self.rows_from_window(win, wp, oys.len(), ow, ohwc, e);
    }

    /// `rows` output rows into `ohwc`, reading the padded input rows from `win` on (rows of
    /// `wp` pixels).
    fn rows_from_window(
        &self,
        win: &[f32],
        wp: usize,
        rows: usize,
        ow: usize,
        ohwc: &mut [f32],
        e: Epilogue,
    ) {
        let p = &self.params;
        let g = self.geom(wp, rows, ow);
        if rows == 0 || ow == 0 {
            return;
        }
        let needed = ((rows - 1) * p.stride.0 + p.kh) * wp * p.c_in;
        assert!(win.len() >= needed, "window of {} for {needed}", win.len());
        // SAFETY: the panels hold every weight, and `win` holds every padded input row that
        // the output rows read (checked just above); `ohwc` holds `rows * ow * c_out` values.
        unsafe { conv(&g, win, Filters::Panels(&self.panels), e, ohwc) };
    }

    /// Output channels `chans` of the NCHW output (`out` starts at channel `chans.start`):
    /// transposed from `ohwc`, plus bias, then the activation.
    fn epilogue_channels(
        &self,
        ohwc: &[f32],
        hw: usize,
        chans: std::ops::Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let bias = self.bias.as_ref().map(|b| &b[chans.clone()]);
        layout::from_hwc(ohwc, self.params.c_out, hw, chans.clone(), bias, out);
        let out = &mut out[..chans.len() * hw];
        match self.finish(residual) {
            (Some(r), after) => after.add_then_apply(out, r),
            (None, activation) => activation.apply(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx512_matches_generic_bitwise() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            for &(c_in, c_out, ph, pw) in &[
                (5usize, 3usize, 3usize, 2usize),
                (20, 40, 4, 4),
                (7, 16, 3, 3),
                (9, 33, 1, 5),
                (9, 70, 3, 5),
                (16, 128, 2, 7),
                (12, 192, 4, 4),
                // 49 and 8 outputs: the last full block and the one or two left over run
                // as 4 + 3 and 4 + 4.
                (6, 64, 7, 7),
                (5, 70, 2, 4),
            ] {
                let (kh, kw, sh, sw) = (3, 3, 1, 1);
                let (wh, ww) = ((ph - 1) * sh + kh, (pw - 1) * sw + kw);
                let win: Vec<f32> = (0..wh * ww * c_in)
                    .map(|i| ((i * 31 % 17) as f32 - 8.0) / 7.0)
                    .collect();
                let taps = kh * kw;
                let wt: Vec<f32> = (0..taps * c_in * c_out)
                    .map(|i| ((i * 13 % 23) as f32 - 11.0) / 9.0)
                    .collect();
                let first: Vec<u32> = (0..c_in as u32).filter(|c| c % 3 != 1).collect();
                let rows: Vec<usize> = (0..taps)
                    .flat_map(|kk| first.iter().map(move |&f| (kk * c_in + f as usize) * c_out))
                    .map(|at| wt.as_ptr() as usize + at * 4)
                    .collect();
                let g = Geom {
                    win_w: ww,
                    c_in,
                    c_out,
                    kh,
                    kw,
                    sh,
                    sw,
                    ph,
                    pw,
                    out_w: pw + 1,
                    out_stride: c_out,
                };
                let mut a = vec![0.0; ph * (pw + 1) * c_out];
                let mut b = vec![0.0; ph * (pw + 1) * c_out];
                unsafe {
                    let f = Filters::Rows {
                        first: &first,
                        rows: &rows,
                        base: 0,
                    };
                    conv_generic(&g, &win, f, Epilogue::NONE, &mut a);
                    conv_avx512(&g, &win, f, Epilogue::NONE, &mut b);
                }
                assert_eq!(a, b);
            }
        }
    }

    /// Panel filters, over channel counts whose 64-channel group is larger than
    /// [`GROUP_FILTER_BUDGET`] (so the AVX-512 kernel sums kernel row by kernel row),
    /// output counts that leave a narrow last panel, and 3-, 16- and 32-input layers (run as
    /// [`row_blocks`], with rows that leave outputs over): the portable and AVX-512 kernels give the same
    /// bits, and those bits are the naive convolution's within rounding.
    #[test]
    fn panels_split_by_kernel_rows_match_generic_and_reference() {
        use crate::kernels::reference::conv2d_direct;
        for &(c_in, c_out, k, (h, w)) in &[
            (240usize, 70usize, 3usize, (5usize, 6usize)),
            (300, 130, 3, (5, 6)),
            (40, 16, 7, (5, 6)),
            (16, 16, 3, (4, 34)),
            (16, 12, 3, (3, 18)),
            (16, 32, 3, (3, 33)),
            (16, 20, 3, (2, 15)),
            (3, 16, 3, (3, 36)),
            (3, 7, 3, (3, 12)),
            (32, 32, 3, (4, 18)),
            (32, 24, 3, (3, 14)),
        ] {
            let taps = k * k;
            let group_bytes = taps * c_in * PANEL * 4;
            assert_eq!(group_bytes > GROUP_FILTER_BUDGET, c_in > 100, "case {c_in}");
            let weights: Vec<f32> = (0..c_out * c_in * taps)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
                .collect();
            let x: Vec<f32> = (0..c_in * h * w)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let p = Conv2dParams::new(c_in, c_out, k, k);
            let (oh, ow) = p.out_hw(h, w);
            let mut win = vec![0.0; x.len()];
            layout::nchw_to_nhwc(&x, c_in, h * w, &mut win);
            let g = Geom {
                win_w: w,
                c_in,
                c_out,
                kh: k,
                kw: k,
                sh: 1,
                sw: 1,
                ph: oh,
                pw: ow,
                out_w: ow,
                out_stride: c_out,
            };
            let panels = weights_panels(&weights, c_in, c_out, taps);
            let mut a = vec![f32::NAN; oh * ow * c_out];
            let mut b = a.clone();
            unsafe { conv_generic(&g, &win, Filters::Panels(&panels), Epilogue::NONE, &mut a) };
            // With bias, a residual and an activation too (in registers or after the store).
            let bias: Vec<f32> = (0..c_out).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
            let residual: Vec<f32> = (0..a.len()).map(|i| (i % 11) as f32 * 0.05 - 0.2).collect();
            let e = Epilogue {
                bias: Some(&bias),
                residual: Some(&residual),
                activation: Activation::LeakyRelu(0.25),
            };
            let mut a_e = a.clone();
            unsafe { conv_generic(&g, &win, Filters::Panels(&panels), e, &mut a_e) };
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("fma")
            {
                unsafe { conv_avx512(&g, &win, Filters::Panels(&panels), Epilogue::NONE, &mut b) };
                assert_eq!(a, b, "case {c_in} -> {c_out}");
                unsafe { conv_avx512(&g, &win, Filters::Panels(&panels), e, &mut b) };
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a_e), bits(&b), "case {c_in} -> {c_out}, epilogue");
            }
            let want = conv2d_direct(&p, &x, h, w, &weights, None);
            for co in 0..c_out {
                for j in 0..oh * ow {
                    let (got, want) = (a[j * c_out + co], want[co * oh * ow + j]);
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{got} vs {want}"
                    );
                }
            }
        }
    }

    /// The in-register epilogue gives the scalar one's bits, NaN, infinities and -0.0
    /// included, for every activation, with and without bias and residual, on full and
    /// partial lanes.
    #[test]
    fn epilogue_in_registers_matches_scalar_bits() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            use std::arch::x86_64::*;
            let xs: Vec<f32> = vec![
                -2.5,
                -0.0,
                0.0,
                1.5,
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.25,
                -0.75,
                3.0,
                -1e-30,
                7.0,
                -7.0,
                0.5,
                -0.5,
                f32::MIN_POSITIVE,
            ];
            let bias: Vec<f32> = (0..16).map(|i| (i as f32 - 8.0) * 0.125).collect();
            // A residual read from offset 1, -0.0 and a NaN among its values.
            let mut residual: Vec<f32> = (0..17).map(|i| (i as f32 - 9.0) * 0.375).collect();
            (residual[2], residual[5]) = (-0.0, f32::NAN);
            let activations = [
                Activation::None,
                Activation::Relu,
                Activation::LeakyRelu(0.1),
                Activation::Clip(-1.0, 2.0),
            ];
            for activation in activations {
                for b in [None, Some(&bias[..])] {
                    let e = Epilogue {
                        bias: b,
                        residual: b.map(|_| &residual[..]),
                        activation,
                    };
                    for (mask, lanes) in [(0xffffu16, 16), (0x01ff, 9)] {
                        let mut want = xs[..lanes].to_vec();
                        e.apply(0, 1, &mut want);
                        let mut got = vec![0.0f32; 16];
                        unsafe {
                            let x = _mm512_loadu_ps(xs.as_ptr());
                            _mm512_storeu_ps(got.as_mut_ptr(), e.apply_avx512(0, 1, mask, x));
                        }
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&got[..lanes]), bits(&want), "{activation:?} {b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn dense_direct_conv_matches_reference() {
        use crate::kernels::reference::conv2d_direct;
        for &(c_in, c_out, k, stride, pads, h, w) in &[
            (
                16usize,
                16usize,
                3usize,
                1usize,
                [1usize; 4],
                9usize,
                7usize,
            ),
            (8, 70, 3, 2, [1, 0, 2, 1], 11, 10),
            (5, 130, 5, 1, [2; 4], 6, 9),
            (20, 33, 7, 2, [3; 4], 15, 13),
        ] {
            let p = Conv2dParams::new(c_in, c_out, k, k)
                .with_pads(pads)
                .with_stride(stride, stride);
            let weights: Vec<f32> = (0..c_out * c_in * k * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let bias: Vec<f32> = (0..c_out).map(|i| i as f32 * 0.1 - 1.0).collect();
            let x: Vec<f32> = (0..c_in * h * w)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let mut want = conv2d_direct(&p, &x, h, w, &weights, Some(&bias));
            Activation::Relu.apply(&mut want);
            let op = ConvOp {
                params: p,
                weights,
                bias: Some(bias),
                activation: Activation::Relu,
                residual: None,
            };
            let d = DirectConv::new(&op).expect("a 1-group spatial conv suits");
            let mut s = DirectScratch::default();
            for parts in [0, 1, 2, 3] {
                let mut out = vec![f32::NAN; want.len()];
                if parts == 0 {
                    d.forward(&x, (h, w), &mut out, &mut s, IoLayout::NCHW, None);
                } else {
                    d.forward_parallel(&x, (h, w), &mut out, &mut s, IoLayout::NCHW, parts, None);
                }
                for (a, b) in out.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{p:?}: {a} vs {b}");
                }
            }
        }
    }

    /// Every memory order, sequential and split into 1, 2, 3 or more parts than output rows,
    /// over geometries that reach each block shape of the AVX-512 kernel (fewer than 16
    /// output channels, exactly 32 and 64, 64 plus a remainder, several groups of 64), input
    /// channel counts that do and do not fill the transposes' 8-channel blocks, strides,
    /// asymmetric padding, non-square and 1x1 kernels, each activation, with and without bias.
    /// The direct kernel does the same arithmetic in the same order whatever the memory order
    /// or the split, so every result is expected bit for bit equal to the sequential NCHW one
    /// (itself checked against the naive reference). One scratch serves every case, so stale
    /// data left by a larger case would show.
    #[test]
    fn every_memory_order_and_split_gives_the_nchw_bits_over_geometries() {
        use crate::kernels::reference::conv2d_direct;
        let io_all = [(false, false), (true, false), (false, true), (true, true)].map(
            |(input_nhwc, output_nhwc)| IoLayout {
                input_nhwc,
                output_nhwc,
            },
        );
        let mut s = DirectScratch::default();
        let cases = [
            (1, 5, (3, 3), (1, 1), [1; 4], (5, 6), Activation::Relu, true),
            (
                3,
                16,
                (3, 3),
                (2, 2),
                [1, 0, 2, 1],
                (9, 8),
                Activation::None,
                false,
            ),
            (
                8,
                32,
                (3, 3),
                (1, 1),
                [0; 4],
                (6, 7),
                Activation::LeakyRelu(0.1),
                true,
            ),
            (
                13,
                64,
                (3, 3),
                (1, 2),
                [1, 1, 0, 2],
                (7, 9),
                Activation::Relu,
                true,
            ),
            (
                10,
                70,
                (3, 3),
                (2, 1),
                [2, 1, 1, 0],
                (8, 6),
                Activation::LeakyRelu(0.1),
                true,
            ),
            (
                16,
                130,
                (1, 1),
                (1, 1),
                [0; 4],
                (5, 7),
                Activation::Relu,
                true,
            ),
            (
                64,
                64,
                (1, 1),
                (2, 2),
                [0; 4],
                (9, 9),
                Activation::None,
                true,
            ),
            (
                5,
                33,
                (5, 3),
                (1, 1),
                [2, 1, 2, 1],
                (6, 5),
                Activation::Clip(0.0, 0.5),
                true,
            ),
            (
                17,
                192,
                (7, 7),
                (2, 2),
                [3; 4],
                (11, 11),
                Activation::Relu,
                false,
            ),
            // Larger images, asymmetric padding, a 7x7 RGB layer, rows that leave row
            // blocks a rest.
            (
                16,
                16,
                (3, 3),
                (1, 1),
                [1; 4],
                (12, 16),
                Activation::Relu,
                true,
            ),
            (
                24,
                64,
                (3, 3),
                (2, 2),
                [1, 0, 2, 1],
                (20, 19),
                Activation::None,
                true,
            ),
            (
                3,
                64,
                (7, 7),
                (2, 2),
                [3; 4],
                (23, 22),
                Activation::Relu,
                true,
            ),
            (
                32,
                70,
                (5, 3),
                (1, 1),
                [2, 1, 2, 1],
                (10, 9),
                Activation::Clip(-0.5, 0.5),
                false,
            ),
            // Split by output channels on 2 parts (7 rows).
            (
                32,
                128,
                (3, 3),
                (1, 1),
                [1; 4],
                (7, 7),
                Activation::Relu,
                true,
            ),
        ];
        for (case, &(c_in, c_out, (kh, kw), (sh, sw), pads, (h, w), activation, bias)) in
            cases.iter().enumerate()
        {
            let p = Conv2dParams::new(c_in, c_out, kh, kw)
                .with_stride(sh, sw)
                .with_pads(pads);
            let op = ConvOp {
                params: p,
                weights: (0..c_out * c_in * kh * kw)
                    .map(|i| (((i + case) * 37 % 101) as f32 - 50.0) / 50.0)
                    .collect(),
                bias: bias.then(|| (0..c_out).map(|i| (i % 13) as f32 * 0.05 - 0.3).collect()),
                activation,
                residual: None,
            };
            let d = DirectConv::new(&op).expect("one group, no dilation");
            let x: Vec<f32> = (0..c_in * h * w)
                .map(|i| (((i + 7 * case) * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let mut x_hwc = vec![0.0; x.len()];
            layout::nchw_to_nhwc(&x, c_in, h * w, &mut x_hwc);
            let (oh, ow) = p.out_hw(h, w);
            let n = c_out * oh * ow;
            let mut want = vec![f32::NAN; n];
            d.forward(&x, (h, w), &mut want, &mut s, IoLayout::NCHW, None);
            let mut reference = conv2d_direct(&p, &x, h, w, &op.weights, op.bias.as_deref());
            activation.apply(&mut reference);
            for (a, b) in want.iter().zip(&reference) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{p:?}: {a} vs {b}");
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for io in io_all {
                let xin = if io.input_nhwc { &x_hwc } else { &x };
                for parts in [0, 1, 2, 3, oh + 3] {
                    let mut out = vec![f32::NAN; n];
                    if parts == 0 {
                        d.forward(xin, (h, w), &mut out, &mut s, io, None);
                    } else {
                        d.forward_parallel(xin, (h, w), &mut out, &mut s, io, parts, None);
                    }
                    let mut got = out.clone();
                    if io.output_nhwc {
                        layout::nhwc_to_nchw(&out, c_out, oh * ow, &mut got);
                    }
                    assert_eq!(bits(&got), bits(&want), "{p:?} {io:?} parts={parts}");
                }
            }
            // With a fused residual addition (in the output's memory order): every split adds
            // it as the whole-image call does.
            let fused = DirectConv::new(&ConvOp {
                residual: Some(Activation::Relu),
                ..op.clone()
            })
            .expect("one group, no dilation");
            let r: Vec<f32> = (0..n)
                .map(|i| ((i * 29 % 23) as f32 - 11.0) / 8.0)
                .collect();
            for io in io_all {
                let xin = if io.input_nhwc { &x_hwc } else { &x };
                let mut whole = vec![f32::NAN; n];
                fused.forward(xin, (h, w), &mut whole, &mut s, io, Some(&r));
                for parts in [2, 3] {
                    let mut out = vec![f32::NAN; n];
                    fused.forward_parallel(xin, (h, w), &mut out, &mut s, io, parts, Some(&r));
                    assert_eq!(
                        bits(&out),
                        bits(&whole),
                        "{p:?} {io:?} parts={parts} residual"
                    );
                }
            }
        }
    }
}
