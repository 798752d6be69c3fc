//! The grouped convolution's AVX-512 row blocks straight from the unpadded pixel-major
//! image: each block reads the kernel rows and input pixels that lie inside the image and
//! skips the padding's multiply-adds ([`Present`]), so no zero-padded copy of the input is
//! written and read again. The copy cost 4 % of a stride-1 layer and 13-15 % of a stride-2
//! one (which reads four input pixels per output) with the input in cache, more out of it.

#[cfg(target_arch = "x86_64")]
use super::blocks::{Block, Present, Sums};
#[cfg(target_arch = "x86_64")]
use super::loops::SPAN;
use super::GroupedConv;
use crate::kernels::isa::Isa;
use std::ops::Range;

/// Output pixels of a row block (the largest the blocks of groups of 8 or 16 run).
#[cfg(target_arch = "x86_64")]
const MR: usize = 8;

/// A row block of `NG` groups of `CO` channels: its sums from the block and `c_in`.
#[cfg(target_arch = "x86_64")]
type RowFn<const CO: usize, const NG: usize> = unsafe fn(&Block<MR>, usize) -> Sums<CO, NG, MR>;

impl GroupedConv {
    /// Whether [`Self::unpadded`] runs output pixels `pixels` of an `h x w` image on tier
    /// `isa`: AVX-512, a 3-wide kernel at stride 1 or 2 over groups of 8 or 16 channels in
    /// and out (the row blocks), rows the blocks of 7 or 8 pixels tile, whole rows, and
    /// finite weights (see [`Present`]).
    pub(super) fn reads_unpadded(
        &self,
        isa: Isa,
        (h, w): (usize, usize),
        pixels: &Range<usize>,
    ) -> bool {
        let p = &self.params;
        let (cig, cog) = (p.c_in / p.groups, p.c_out / p.groups);
        let ow = p.out_hw(h, w).1;
        cfg!(target_arch = "x86_64")
            && isa == Isa::Avx512
            && self.weights_finite
            && p.kw == 3
            && cig == cog
            && matches!(cog, 8 | 16)
            && matches!(p.stride.1, 1 | 2)
            && ow > 0
            && (ow.is_multiple_of(8) || ow.is_multiple_of(7))
            && pixels.start.is_multiple_of(ow)
            && pixels.end.is_multiple_of(ow)
    }

    /// Output pixels each of `parts` workers takes of an `h x w` image (pixel-major if
    /// `input_nhwc`) on tier `isa`: whole rows where the row blocks read it unpadded (7
    /// rows over two workers: 4 and 3, where 25 and 24 pixels from padded rows ran slower),
    /// else an equal share.
    pub fn pixels_per_part(
        &self,
        isa: Isa,
        (h, w): (usize, usize),
        input_nhwc: bool,
        parts: usize,
    ) -> usize {
        let (oh, ow) = self.params.out_hw(h, w);
        let parts = parts.max(1);
        if input_nhwc && self.reads_unpadded(isa, (h, w), &(0..oh * ow)) {
            oh.div_ceil(parts) * ow
        } else {
            (oh * ow).div_ceil(parts).max(1)
        }
    }

    /// Output pixels `pixels` (whole rows) of the unpadded pixel-major image `x` (`h x w`)
    /// into `out` (pixel-major, from the first of them), bias, residual (theirs,
    /// pixel-major) and activation included, on tier `isa`. Needs [`Self::reads_unpadded`].
    pub(super) fn unpadded(
        &self,
        isa: Isa,
        x: &[f32],
        hw: (usize, usize),
        pixels: Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        assert!(self.reads_unpadded(isa, hw, &pixels) && isa.supported());
        #[cfg(target_arch = "x86_64")]
        {
            let cog = self.params.c_out / self.params.groups;
            // SAFETY (both): the CPU has AVX-512 (asserted).
            match cog {
                8 => unsafe { self.unpadded_avx512::<8>(x, hw, pixels, out, residual) },
                _ => unsafe { self.unpadded_avx512::<16>(x, hw, pixels, out, residual) },
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (x, pixels, out, residual);
    }

    /// [`Self::unpadded`] for groups of `CO` channels. The loops of `rows_impl`: spans of
    /// whole rows, group pair by group pair within a span (the last odd group alone), row
    /// blocks along each row.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn unpadded_avx512<const CO: usize>(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        pixels: Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let p = &self.params;
        let (c_in, c_out, groups) = (p.c_in, p.c_out, p.groups);
        let (taps, (sy, sx)) = (p.kh * p.kw, p.stride);
        let ow = p.out_hw(h, w).1;
        let rm = if ow.is_multiple_of(8) { 8 } else { 7 };
        let inputs = (rm - 1) * sx + 3;
        let tap_at: Vec<usize> = (0..p.kh)
            .flat_map(|ky| (0..3).map(move |kx| (ky * w + kx) * c_in))
            .collect();
        let (r0, r1) = (pixels.start / ow, pixels.end / ow);
        assert!(out.len() >= (r1 - r0) * ow * c_out);
        // Kernel rows (or input pixels) `0..n` at `start` in an image of `size`: those inside.
        let inside = |start: isize, n: usize, size: usize| {
            let lo = (-start).clamp(0, n as isize) as usize;
            let hi = (size as isize - start).clamp(lo as isize, n as isize) as usize;
            (lo, hi)
        };
        let span = SPAN.div_ceil(ow);
        for s0 in (r0..r1).step_by(span) {
            let s1 = r1.min(s0 + span);
            let mut g = 0;
            while g < groups {
                let ng = if g + 2 <= groups { 2 } else { 1 };
                let wg = &self.weights[g * taps * CO * CO..][..ng * taps * CO * CO];
                for oy in s0..s1 {
                    let iy = (oy * sy) as isize - p.pads[0] as isize;
                    for ox in (0..ow).step_by(rm) {
                        let ix = (ox * sx) as isize - p.pads[1] as isize;
                        let present = Present {
                            rows: inside(iy, p.kh, h),
                            cols: inside(ix, inputs, w),
                        };
                        // Where the block's first output's tap (0, 0) would read: before
                        // the image at its top or left edge (wrapping; only present pixels
                        // are read).
                        let first = (iy * w as isize + ix) * c_in as isize + (g * CO) as isize;
                        let b = Block {
                            padded: x,
                            origin: std::array::from_fn(|q| {
                                (first + (q * sx * c_in) as isize) as usize
                            }),
                            tap_at: &tap_at,
                            kw: 3,
                            cig: CO,
                            weights: wg,
                            present,
                        };
                        assert!(b.row_in_bounds(ng, CO, inputs, c_in));
                        let edges = present.cols != (0, inputs);
                        let at = (((oy - r0) * ow + ox) * c_out, g * CO);
                        // SAFETY (both): the CPU has AVX-512 (this function's contract), and
                        // the block's reads lie inside `x` and the weights (asserted).
                        if ng == 2 {
                            let sums = unsafe { row_fn::<CO, 2>(rm, sx, edges)(&b, c_in) };
                            self.store(&sums[..rm], (out, at), c_out, residual);
                        } else {
                            let sums = unsafe { row_fn::<CO, 1>(rm, sx, edges)(&b, c_in) };
                            self.store(&sums[..rm], (out, at), c_out, residual);
                        }
                    }
                }
                g += ng;
            }
            let o = &mut out[(s0 - r0) * ow * c_out..(s1 - r0) * ow * c_out];
            self.finish.activate(o, residual);
        }
    }
}

/// The row block of `rm` pixels at stride `s`, with or without the checks of its `edges`.
#[cfg(target_arch = "x86_64")]
fn row_fn<const CO: usize, const NG: usize>(rm: usize, s: usize, edges: bool) -> RowFn<CO, NG> {
    use super::blocks::avx512::row_block;
    match (rm, s, edges) {
        (8, 1, false) => row_block::<CO, NG, MR, 8, 1, CO, false>,
        (8, 1, true) => row_block::<CO, NG, MR, 8, 1, CO, true>,
        (7, 1, false) => row_block::<CO, NG, MR, 7, 1, CO, false>,
        (7, 1, true) => row_block::<CO, NG, MR, 7, 1, CO, true>,
        (8, _, false) => row_block::<CO, NG, MR, 8, 2, CO, false>,
        (8, _, true) => row_block::<CO, NG, MR, 8, 2, CO, true>,
        (_, _, false) => row_block::<CO, NG, MR, 7, 2, CO, false>,
        (_, _, true) => row_block::<CO, NG, MR, 7, 2, CO, true>,
    }
}
