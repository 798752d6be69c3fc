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
//!   of its first channel) and its filter row `W'[(ky, kx), b]` through one pointer per
//!   bucket, `rows[b] + kk * tap_stride` for tap `kk`; merged buckets point at summed rows,
//!   singletons at the layer's weights, never copied.
//!
//! Every output is accumulated with fused multiply-adds in the fixed order (tap, channel), so
//! the AVX-512 kernel, the AVX2 one and the portable one ([`conv_generic`], `f32::mul_add`)
//! give identical bits (the SSE2 tier runs the portable loops with each product rounded:
//! [`Unfused`]); [`conv`] runs the tier [`Isa::current`] selects. FLOPs: at most
//! `n * B * K^2 * c_out` multiply-adds, fewer where a call skips taps on the padding
//! ([`Geom::kys`], [`Geom::kxs`]; `padding` splits a call that way).
//!
//! Why direct and not im2col + GEMM: at CIFAR and Tiny Darknet sizes the im2col copy costs as
//! much as the GEMM, while this kernel keeps 8 outputs x 32 output channels in registers and
//! reaches the machine's FMA peak (see `cargo bench --bench kernels`).
//!
//! Where things are: this file holds the geometry, the filter forms, the portable kernel and
//! the entry points; `blocks` the AVX-512 register blocks (and what they prefetch;
//! `broadcast` the assembly of their 64-channel row-filter loop);
//! `blocks_avx2` the AVX2 ones; `ahead` which part of the next call's filters each block
//! prefetches;
//! `epilogue` what happens to a finished output (bias, residual, activation); `layer` the
//! dense convolution layer that pads an image and splits it over threads (`scratch` its
//! per-thread buffers).

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod ahead;
#[cfg(target_arch = "x86_64")]
mod blocks;
#[cfg(target_arch = "x86_64")]
mod blocks_avx2;
#[cfg(target_arch = "aarch64")]
mod blocks_neon;
#[cfg(target_arch = "x86_64")]
mod broadcast;
mod epilogue;
#[cfg(target_arch = "x86_64")]
mod half;
#[cfg(target_arch = "x86_64")]
mod joined;
mod layer;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod narrow;
mod padding;
#[cfg(target_arch = "x86_64")]
mod pairs;
#[cfg(target_arch = "x86_64")]
mod panel_terms;
mod passes;
#[cfg(target_arch = "x86_64")]
mod prefetch;
#[cfg(target_arch = "x86_64")]
mod probe;
#[cfg(target_arch = "x86_64")]
mod row_blocks;
mod scratch;

pub use epilogue::Epilogue;
pub use layer::DirectConv;
pub use padding::{conv_live_at_on, conv_live_on, conv_live_row_at_on, Live};
pub use scratch::DirectScratch;

use crate::kernels::isa::{Fused, Isa, MulAdd, Unfused};

/// Geometry of one direct convolution call: a `ph x pw` block of outputs over a window.
#[derive(Clone, Copy, Debug)]
pub struct Geom {
    /// Window row length (pixels) and channels per window pixel.
    pub win_w: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub kh: usize,
    /// The kernel rows summed, `(0, kh)` unless every output of the call would read only
    /// zero padding in the others (an image's first and last output rows; see `padding`):
    /// those taps are skipped, not multiplied.
    pub kys: (usize, usize),
    pub kw: usize,
    /// The kernel columns summed, as `kys` (panel filters only: row filters sum every
    /// column).
    pub kxs: (usize, usize),
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
    /// Whether the call starts its outputs' sums and finishes them: [`Sums::WHOLE`] but for
    /// a sum split by kernel rows over several calls ([`conv_live_row_at_on`]).
    pub sums: Sums,
}

/// The part of its outputs' sums a call computes. A sum split over several calls, in the
/// order (tap, channel), keeps its bits: the partial sums wait in the outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sums {
    /// The call starts the sums from zero (else it adds to the partial sums its outputs
    /// hold).
    pub start: bool,
    /// The call ends them: the epilogue runs (else its outputs keep the partial sums).
    pub finish: bool,
}

impl Sums {
    /// The whole sum in one call.
    pub const WHOLE: Sums = Sums {
        start: true,
        finish: true,
    };
}

impl Geom {
    /// A 1x1 layer without stride over `ph x pw` pixels, its outputs `c_out` floats apart.
    pub fn pointwise(c_in: usize, c_out: usize, (ph, pw): (usize, usize)) -> Geom {
        Geom {
            win_w: pw,
            c_in,
            c_out,
            kh: 1,
            kys: (0, 1),
            kw: 1,
            kxs: (0, 1),
            sh: 1,
            sw: 1,
            ph,
            pw,
            out_w: pw,
            out_stride: c_out,
            sums: Sums::WHOLE,
        }
    }

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
    pub fn fits(&self, len: usize) -> bool {
        let n = self.ph * self.pw;
        n == 0 || len >= self.opix(n - 1) + self.c_out
    }

    /// [`Self::opix`] of the `MR` outputs from `j0`, stepping along the output rows (one
    /// division for the block instead of one per output).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline(always)]
    fn out_offsets<const MR: usize>(&self, j0: usize) -> [usize; MR] {
        if self.out_w == self.pw {
            // Whole output rows (a layer's call, not a patch's): one pixel apart.
            return std::array::from_fn(|i| (j0 + i) * self.out_stride);
        }
        // A loop, not `std::array::from_fn`: that stayed a call per block (5 % of
        // MobileNetV2's time on one core).
        let (mut oy, mut ox) = (j0 / self.pw, j0 % self.pw);
        let mut offsets = [0; MR];
        for o in &mut offsets {
            *o = (oy * self.out_w + ox) * self.out_stride;
            ox += 1;
            if ox == self.pw {
                (oy, ox) = (oy + 1, 0);
            }
        }
        offsets
    }
}

impl Geom {
    /// The window offset of the tap-(0, 0) input pixel of each of the `MR` outputs from
    /// `j0`, stepping along the output rows (a division by the patch width per output would
    /// dominate layers with few input channels).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline(always)]
    fn in_offsets<const MR: usize>(&self, j0: usize) -> [usize; MR] {
        if self.sh * self.win_w == self.sw * self.pw {
            // A window without padding columns (the 1x1 layers): one stride apart.
            return std::array::from_fn(|i| (j0 + i) * self.sw * self.c_in);
        }
        // A loop, as in `out_offsets`.
        let (mut oy, mut ox) = (j0 / self.pw, j0 % self.pw);
        let mut offsets = [0; MR];
        for o in &mut offsets {
            *o = (oy * self.sh * self.win_w + ox * self.sw) * self.c_in;
            ox += 1;
            if ox == self.pw {
                (oy, ox) = (oy + 1, 0);
            }
        }
        offsets
    }
}

/// The filters one call reads, and which window channels they multiply.
#[derive(Clone, Copy, Debug)]
pub enum Filters<'a> {
    /// Listed channels (HASTE): term `b` of the sum reads window slot `first[b]` and, at tap
    /// `kk`, the filter row (`c_out` floats) at `rows[b] + kk * tap_stride` (a row of the
    /// layer's weights for a singleton, a summed row for a merged bucket, laid out with the
    /// weights' tap stride: each pointer comes from the allocation it reads).
    Rows {
        first: &'a [u32],
        rows: &'a [*const f32],
        tap_stride: usize,
        /// Filters the next call reads (the next filter panel, or a part of it), asked for
        /// into L2 a line or a row per term while this call computes; empty: none. The
        /// AVX-512 wide blocks and the 16-channel tiers' blocks prefetch it (`ahead`); the
        /// AVX-512 narrow blocks and the portable kernel do not.
        ahead: &'a [f32],
    },
    /// Every window channel in order, with the weights in panels of `width` output
    /// channels (the dense convolution; see [`weights_panels`] and [`panel_width`]).
    Panels { weights: &'a [f32], width: usize },
}

impl Filters<'_> {
    /// Terms of the sum per tap.
    fn terms(&self, g: &Geom) -> usize {
        match self {
            Filters::Rows { first, .. } => first.len(),
            Filters::Panels { .. } => g.c_in,
        }
    }
}

/// Output channels per weight panel of the AVX-512 kernel (its widest register blocks), and
/// of HASTE's filter panels on every tier.
pub const PANEL: usize = 64;

/// Output channels per weight panel of the dense kernel on tier `isa`: one group of its
/// register blocks, so that the filters a group reads are contiguous. On the 16-channel
/// tiers (AVX2, NEON) a 64-channel panel made each group read one cache line in four of
/// every 256-byte row: the 16 KB a pass of 256 terms reads then fall on a quarter of the L1
/// sets and did not stay there from one block to the next (AVX2, one core, in ResNet-18:
/// the 512 -> 512 layers at 7 x 7 ran at 56-60 GFLOP/s against 62-65 in 16-channel panels,
/// 256 -> 512 stride 2 at 54 against 63; of a 90 GFLOP/s peak).
pub fn panel_width(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => PANEL,
        _ => 16,
    }
}

/// Where output channel `co0`'s panel starts in a [`weights_panels`] layout of panels `panel`
/// channels wide, that panel's width, and `co0`'s column in it.
#[inline(always)]
fn panel_of(g: &Geom, panel: usize, co0: usize) -> (usize, usize, usize) {
    let q = co0 / panel;
    let width = (g.c_out - panel * q).min(panel);
    (panel * q * g.kh * g.kw * g.c_in, width, co0 - panel * q)
}

/// Portable kernel (same arithmetic, same order as the AVX-512 one).
///
/// # Safety
/// For [`Filters::Rows`]: `rows` holds `first.len()` pointers, and `rows[b] + kk *
/// tap_stride` addresses `c_out` readable floats for every tap `kk`; `first[b] < c_in`. For [`Filters::Panels`]: the slice
/// holds `kh * kw * c_in * c_out` weights. `win` must hold the whole window.
#[inline(always)]
pub unsafe fn conv_generic(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: &mut [f32]) {
    assert!(g.fits(out.len()));
    // SAFETY: forwarded from the caller; `out` holds every output (checked just above).
    unsafe { generic_at::<Fused>(g, win, f, e, out.as_mut_ptr()) }
}

/// [`conv_generic`] writing through a pointer (see [`conv_at`]), its multiply-adds as `M`
/// computes them.
///
/// # Safety
/// As [`conv_at`].
#[inline(always)]
unsafe fn generic_at<M: MulAdd>(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: *mut f32) {
    let n = g.ph * g.pw;
    let chunk = match f {
        Filters::Rows { .. } => g.c_out.max(1),
        Filters::Panels { width, .. } => width,
    };
    for co0 in (0..g.c_out).step_by(chunk) {
        let width = chunk.min(g.c_out - co0);
        if let (
            Filters::Panels {
                weights,
                width: GENERIC_LANES,
            },
            GENERIC_LANES,
        ) = (f, width)
        {
            // SAFETY: as this function's.
            unsafe { panel_lanes_at::<M>(g, win, weights, co0, e, out) };
            continue;
        }
        for j in 0..n {
            // SAFETY: the caller gives these floats to this call.
            let o = unsafe { std::slice::from_raw_parts_mut(out.add(g.opix(j) + co0), width) };
            if g.sums.start {
                o.fill(0.0);
            }
            // Row filters sum every kernel column (see `Geom::kxs`).
            let kxs = match f {
                Filters::Rows { .. } => (0, g.kw),
                Filters::Panels { .. } => g.kxs,
            };
            for ky in g.kys.0..g.kys.1 {
                for kx in kxs.0..kxs.1 {
                    let kk = ky * g.kw + kx;
                    let a = &win[g.pix(j, ky, kx)..][..g.c_in];
                    for b in 0..f.terms(g) {
                        let (slot, w) = match f {
                            Filters::Rows {
                                first,
                                rows,
                                tap_stride,
                                ..
                            } => {
                                let r = rows[b].add(kk * tap_stride + co0);
                                // SAFETY: the caller guarantees the row is readable.
                                (first[b] as usize, unsafe {
                                    std::slice::from_raw_parts(r, width)
                                })
                            }
                            Filters::Panels {
                                weights,
                                width: panel,
                            } => {
                                let (base, pw, _) = panel_of(g, panel, co0);
                                (b, &weights[base + (kk * g.c_in + b) * pw..][..width])
                            }
                        };
                        let av = a[slot];
                        for (d, &wv) in o.iter_mut().zip(w) {
                            *d = M::madd(av, wv, *d);
                        }
                    }
                }
            }
            if g.sums.finish {
                e.apply(co0, g.opix(j) + co0, o);
            }
        }
    }
}

/// Output channels of [`panel_lanes_at`]'s sums: one panel of the tiers other than AVX-512.
const GENERIC_LANES: usize = 16;

/// [`generic_at`] for a full panel of [`GENERIC_LANES`] output channels from `co0`: each
/// output pixel's sums in an array the compiler keeps in vector registers, over the taps and
/// input channels in the same order.
///
/// # Safety
/// As [`generic_at`], with `weights` in panels of [`GENERIC_LANES`] channels.
#[inline(always)]
unsafe fn panel_lanes_at<M: MulAdd>(
    g: &Geom,
    win: &[f32],
    weights: &[f32],
    co0: usize,
    e: Epilogue,
    out: *mut f32,
) {
    let (base, _, _) = panel_of(g, GENERIC_LANES, co0);
    let taps = g.kh * g.kw;
    let panel = &weights[base..][..taps * g.c_in * GENERIC_LANES];
    for j in 0..g.ph * g.pw {
        // SAFETY: the caller gives these floats to this call.
        let o = unsafe { std::slice::from_raw_parts_mut(out.add(g.opix(j) + co0), GENERIC_LANES) };
        let mut acc = [0.0f32; GENERIC_LANES];
        if !g.sums.start {
            acc.copy_from_slice(o);
        }
        for ky in g.kys.0..g.kys.1 {
            for kx in g.kxs.0..g.kxs.1 {
                let kk = ky * g.kw + kx;
                let a = &win[g.pix(j, ky, kx)..][..g.c_in];
                let wk = &panel[kk * g.c_in * GENERIC_LANES..][..g.c_in * GENERIC_LANES];
                for (&av, w) in a.iter().zip(wk.chunks_exact(GENERIC_LANES)) {
                    for (s, &wv) in acc.iter_mut().zip(w) {
                        *s = M::madd(av, wv, *s);
                    }
                }
            }
        }
        o.copy_from_slice(&acc);
        if g.sums.finish {
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
    unsafe { blocks::avx512_at(g, win, f, e, out.as_mut_ptr()) }
}

/// AVX2 + FMA kernel: output blocks of 6 outputs x 16 channels in registers.
///
/// # Safety
/// As [`conv_generic`], and the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn conv_avx2(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: &mut [f32]) {
    assert!(g.fits(out.len()));
    // SAFETY: forwarded from the caller; `out` holds every output (checked just above).
    unsafe { blocks_avx2::conv_at(g, win, f, e, out.as_mut_ptr()) }
}

/// Runs the kernel of the tier [`Isa::current`] selects (every tier gives the same bits).
///
/// # Safety
/// As [`conv_generic`].
#[inline]
pub unsafe fn conv(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: &mut [f32]) {
    // SAFETY: forwarded from the caller; `Isa::current` only returns supported tiers.
    unsafe { conv_on(Isa::current(), g, win, f, e, out) }
}

/// [`conv`] on tier `isa`.
///
/// # Safety
/// As [`conv_generic`], and the CPU must support `isa`.
#[inline]
pub unsafe fn conv_on(isa: Isa, g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: &mut [f32]) {
    assert!(g.fits(out.len()));
    // SAFETY: forwarded from the caller; `out` holds every output (checked just above).
    unsafe { conv_at_on(isa, g, win, f, e, out.as_mut_ptr()) }
}

/// [`conv`] writing through a pointer, so that threads can compute disjoint channel slices
/// of one pixel-major output (`g.c_out` channels of each pixel's `g.out_stride`).
///
/// # Safety
/// As [`conv_generic`], and the floats `opix(j)..opix(j) + c_out` past `out` of every output
/// `j` are writable and touched by nothing else during the call.
#[inline]
pub unsafe fn conv_at(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: *mut f32) {
    // SAFETY: forwarded from the caller; `Isa::current` only returns supported tiers.
    unsafe { conv_at_on(Isa::current(), g, win, f, e, out) }
}

/// [`conv_at`] on tier `isa`.
///
/// # Safety
/// As [`conv_at`], and the CPU must support `isa`.
#[inline]
pub unsafe fn conv_at_on(isa: Isa, g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: *mut f32) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => blocks::avx512_at(g, win, f, e, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => blocks_avx2::conv_at(g, win, f, e, out),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => blocks_neon::conv_at(g, win, f, e, out),
            Isa::Sse2 => generic_at::<Unfused>(g, win, f, e, out),
            _ => generic_at::<Fused>(g, win, f, e, out),
        }
    }
}

/// OIHW weights `[c_out][c_in][kh * kw]` in the panel layout of [`Filters::Panels`]: output
/// channels in panels of `panel` (the last one narrower), each panel `[(ky, kx)][c_in][width]`.
/// A panel is what one group of the kernel's output channels reads, so it is contiguous:
/// wide layers' filters stream from memory in order instead of as pieces of long rows.
pub fn weights_panels(
    weights: &[f32],
    c_in: usize,
    c_out: usize,
    taps: usize,
    panel: usize,
) -> Vec<f32> {
    let mut wp = vec![0.0f32; weights.len()];
    for co in 0..c_out {
        let q = co / panel;
        let width = (c_out - panel * q).min(panel);
        let base = panel * q * taps * c_in;
        for ci in 0..c_in {
            for kk in 0..taps {
                wp[base + (kk * c_in + ci) * width + co - panel * q] =
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

#[cfg(test)]
mod epilogue_tests;
#[cfg(test)]
mod split_tests;
#[cfg(test)]
mod tests;
