//! Grouped convolution (`1 < groups < c_in`, RegNet- and ResNeXt-style) on pixel-major
//! images.
//!
//! Output channel `g * cog + j` sums, over the kernel taps and the `cig` input channels of
//! group `g`, the input value under the tap times its weight. With the image zero-padded and
//! pixel-major and the weights laid out `[g][tap][i][j]`, each (tap, input channel) step is a
//! broadcast of one input value and a multiply-add over the group's `cog` outputs, for
//! several output pixels at once, so the sums of a block (pixels x `cog` values) stay in
//! registers over every step and each weight vector is loaded once per block. The steps run
//! in the order (kernel row, input channel, kernel column), so that a block of pixels of one
//! row can load each input value once for every kernel column that reads it (AVX-512's row
//! blocks, groups of up to 16 channels). The bias, a fused residual and the activation follow
//! per pixel, as each block's sums are stored. The loops over blocks are shared
//! (`loops.rs`); the blocks (`blocks.rs`) are written once over each tier's vector
//! operations (AVX-512, AVX2, NEON) beside a portable one, all with the same fused
//! multiply-adds in the same order, so the tiers give identical bits (the SSE2 tier runs the
//! portable block with each product rounded). On AVX-512, row blocks read a pixel-major
//! image as it is, skipping the padding (`unpadded.rs`); elsewhere a part's input rows are
//! zero-padded first.

use super::grow;
use super::isa::{Fused, Isa, Unfused};
use super::layout::{
    nchw_to_nhwc, nhwc_to_nchw, pad_chw_row, pad_hwc, pad_hwc_row, to_hwc_padded, IoLayout,
};
use super::PixelFinish;
#[cfg(target_arch = "x86_64")]
use blocks::Block;
use loops::Geometry;
#[cfg(target_arch = "x86_64")]
use loops::RowBlocks;

mod blocks;
mod loops;
mod unpadded;
use crate::ops::{Conv2dParams, ConvOp};

/// A grouped convolution with its weights laid out for the kernel.
#[derive(Clone, Debug)]
pub struct GroupedConv {
    params: Conv2dParams,
    /// `[g][kh * kw][cig][cog]`.
    weights: Vec<f32>,
    /// Whether every weight is finite (see [`blocks::Present`]).
    weights_finite: bool,
    finish: PixelFinish,
}

/// Per-thread buffers of [`GroupedConv`].
#[derive(Clone, Debug, Default)]
pub struct GroupedScratch {
    /// The zero-padded pixel-major image (or the rows of it one worker reads).
    pub(crate) padded: Vec<f32>,
    /// A pixel-major output, or an NCHW image's pixel-major residual.
    output: Vec<f32>,
    residual: Vec<f32>,
}

impl crate::kernels::ScratchBytes for GroupedScratch {
    fn scratch_bytes(&self) -> u64 {
        use crate::kernels::buffer_bytes;
        buffer_bytes(&self.padded) + buffer_bytes(&self.output) + buffer_bytes(&self.residual)
    }
}

/// Runs `$body` with `$co` bound to the group width `$cog` as a constant.
macro_rules! with_group_width {
    ($cog:expr, $co:ident => $body:expr) => {
        match $cog {
            8 => {
                const $co: usize = 8;
                $body
            }
            16 => {
                const $co: usize = 16;
                $body
            }
            24 => {
                const $co: usize = 24;
                $body
            }
            32 => {
                const $co: usize = 32;
                $body
            }
            48 => {
                const $co: usize = 48;
                $body
            }
            64 => {
                const $co: usize = 64;
                $body
            }
            _ => unreachable!("group width checked by GroupedConv::suits"),
        }
    };
}

/// The narrowest group width the blocks run: groups of fewer output channels run
/// [`GroupedConv::merged_groups`] at a time.
const NARROWEST_WIDTH: usize = 8;

impl GroupedConv {
    /// Whether `p` is a grouped convolution this kernel runs: more than one group, several
    /// input channels per group, a group width of 8, 16, 24, 32, 48 or 64 outputs (or 2 or 4,
    /// with a multiple of as many groups as make 8), no dilation.
    pub fn suits(p: &Conv2dParams) -> bool {
        let cog = p.c_out / p.groups.max(1) * Self::merged_groups(p);
        p.groups > 1
            && p.c_in.is_multiple_of(p.groups)
            && p.c_out.is_multiple_of(p.groups)
            && p.c_in / p.groups > 1
            && matches!(cog, 8 | 16 | 24 | 32 | 48 | 64)
            && p.dilation == (1, 1)
    }

    /// How many neighbouring groups of `p` run as one: a group of fewer than 8 output
    /// channels (ResNeXt-50's first stage: 32 groups of 4) runs with its neighbours as one
    /// group of 8, whose weights are zero between channels of different groups. It does
    /// `8 / width` times the multiply-adds, in the blocks of 8 channels a vector holds,
    /// instead of a path that ran them at 9-10 GFLOP/s (ResNeXt-50's 128-channel layers
    /// 2.5 times onnxruntime's time). The sums add the other groups' inputs times zero:
    /// the same values for finite inputs; an infinite or NaN input makes the merged
    /// group's outputs NaN, not only its own group's.
    fn merged_groups(p: &Conv2dParams) -> usize {
        let cog = p.c_out / p.groups.max(1);
        // One output channel a group would do 8 times the work: no faster than the
        // im2col path.
        if !matches!(cog, 2 | 4) {
            return 1;
        }
        let k = NARROWEST_WIDTH / cog;
        if p.groups.is_multiple_of(k) {
            k
        } else {
            1
        }
    }

    /// `None` unless [`Self::suits`] the op.
    pub fn new(op: &ConvOp) -> Option<GroupedConv> {
        let p = op.params;
        if !Self::suits(&p) {
            return None;
        }
        let (groups, taps) = (p.groups, p.kh * p.kw);
        let (cig, cog) = (p.c_in / groups, p.c_out / groups);
        if op.weights.len() != p.c_out * cig * taps {
            return None;
        }
        // The kernel's groups: `k` of the op's at a time, their weights block-diagonal.
        let k = Self::merged_groups(&p);
        let (mcig, mcog) = (k * cig, k * cog);
        let mut weights = vec![0.0; p.c_out * mcig * taps];
        for co in 0..p.c_out {
            let (g, j) = (co / mcog, co % mcog);
            // The op's group of `co`, as the `sub`-th of the merged group's.
            let sub = (co / cog) % k;
            for i in 0..cig {
                let mi = sub * cig + i;
                for t in 0..taps {
                    weights[((g * taps + t) * mcig + mi) * mcog + j] =
                        op.weights[(co * cig + i) * taps + t];
                }
            }
        }
        let p = p.with_groups(groups / k);
        Some(GroupedConv {
            params: p,
            weights_finite: weights.iter().all(|w| w.is_finite()),
            weights,
            finish: PixelFinish::of(op),
        })
    }

    /// The kernel's parameters: the op's, but with [`Self::merged_groups`] of its groups
    /// counted as one.
    pub fn params(&self) -> &Conv2dParams {
        &self.params
    }

    /// One image `x = [c_in, h, w]` -> `out = [c_out, oh, ow]`, in the memory orders `io`
    /// gives; `residual` is this image's fused residual (in the output's order), if any.
    pub fn forward(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
        s: &mut GroupedScratch,
        io: IoLayout,
        residual: Option<&[f32]>,
    ) {
        let p = &self.params;
        let (oh, ow) = p.out_hw(h, w);
        let (hp, wp) = (h + p.pads[0] + p.pads[2], w + p.pads[1] + p.pads[3]);
        let n_out = oh * ow * p.c_out;
        let isa = Isa::current();
        if io.output_nhwc {
            let pixels = 0..oh * ow;
            self.padded_pixels(isa, x, (h, w), io.input_nhwc, pixels, out, residual, s);
            return;
        }
        let n_in = hp * wp * p.c_in;
        grow(&mut s.padded, n_in);
        let padded = &mut s.padded[..n_in];
        if io.input_nhwc {
            pad_hwc(x, p.c_in, (h, w), (p.pads[0], p.pads[1]), (hp, wp), padded);
        } else {
            to_hwc_padded(x, p.c_in, (h, w), (p.pads[0], p.pads[1]), (hp, wp), padded);
        }
        let residual = residual.map(|r| {
            grow(&mut s.residual, n_out);
            nchw_to_nhwc(r, p.c_out, oh * ow, &mut s.residual[..n_out]);
            &s.residual[..n_out]
        });
        grow(&mut s.output, n_out);
        let o = &mut s.output[..n_out];
        self.rows(isa, &s.padded[..n_in], (hp, wp), 0..oh, o, residual);
        nhwc_to_nchw(o, p.c_out, oh * ow, out);
    }

    /// Output pixels `pixels` of the image `x` (pixel-major if `input_nhwc`, else planar)
    /// into `out` (pixel-major, from the first of them), bias, residual (theirs,
    /// pixel-major) and activation included, on tier `isa`: in bands of output rows, each
    /// from its input rows zero-padded into `s`. Padding the whole image first wrote and read
    /// again up to a megabyte (861 KB for 64 channels at 56 x 56), beyond L2 beside the
    /// rest; a band's rows stay there.
    #[allow(clippy::too_many_arguments)]
    pub fn padded_pixels(
        &self,
        isa: Isa,
        x: &[f32],
        (h, w): (usize, usize),
        input_nhwc: bool,
        pixels: std::ops::Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
        s: &mut GroupedScratch,
    ) {
        if input_nhwc && self.reads_unpadded(isa, (h, w), &pixels) {
            return self.unpadded(isa, x, (h, w), pixels, out, residual);
        }
        let p = &self.params;
        let (ow, wp) = (p.out_hw(h, w).1.max(1), w + p.pads[1] + p.pads[3]);
        let row_bytes = p.stride.0 * wp * p.c_in * std::mem::size_of::<f32>();
        let band_pixels = (BAND_BYTES / row_bytes).max(1) * ow;
        let top_left = (p.pads[0], p.pads[1]);
        let mut start = pixels.start;
        while start < pixels.end {
            // Bands end at row ends, so the next one starts a row.
            let end = ((start / ow) * ow + band_pixels).min(pixels.end);
            let rows = self.padded_rows((h, w), &(start..end));
            grow(&mut s.padded, rows.len() * wp * p.c_in);
            let band = &mut s.padded[..rows.len() * wp * p.c_in];
            for (r, row) in rows.clone().zip(band.chunks_exact_mut(wp * p.c_in)) {
                if input_nhwc {
                    pad_hwc_row(x, p.c_in, (h, w), top_left, r, row);
                } else {
                    pad_chw_row(x, p.c_in, (h, w), top_left, r, row);
                }
            }
            let at = (start - pixels.start) * p.c_out..(end - pixels.start) * p.c_out;
            let part = &mut out[at.clone()];
            let r = residual.map(|r| &r[at]);
            self.pixels(isa, (band, rows.start), (h, w), start..end, part, r);
            start = end;
        }
    }

    /// Output rows `rows` of the zero-padded pixel-major image `padded` (`hp x wp`), into
    /// `out` (pixel-major), bias, residual (the rows' part, pixel-major) and activation
    /// included, on tier `isa`. Parts of one image can run on different threads.
    pub fn rows(
        &self,
        isa: Isa,
        padded: &[f32],
        (hp, wp): (usize, usize),
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let p = &self.params;
        assert_eq!(
            padded.len(),
            hp * wp * p.c_in,
            "grouped conv: padded input length"
        );
        let hw = (hp - p.pads[0] - p.pads[2], wp - p.pads[1] - p.pads[3]);
        let ow = p.out_hw(hw.0, hw.1).1;
        let pixels = rows.start * ow..rows.end * ow;
        self.pixels(isa, (padded, 0), hw, pixels, out, residual)
    }

    /// The zero-padded rows that output pixels `pixels` (row-major over the output of an
    /// `h x w` input) read.
    pub fn padded_rows(
        &self,
        (h, w): (usize, usize),
        pixels: &std::ops::Range<usize>,
    ) -> std::ops::Range<usize> {
        let p = &self.params;
        let ow = p.out_hw(h, w).1.max(1);
        if pixels.is_empty() {
            return 0..0;
        }
        (pixels.start / ow) * p.stride.0..((pixels.end - 1) / ow) * p.stride.0 + p.kh
    }

    /// Output pixels `pixels` (row-major over the output of an `h x w` input) into `out`
    /// (pixel-major, from the first of them), bias, residual (theirs, pixel-major) and
    /// activation included, on tier `isa`. `band` holds the zero-padded pixel-major image
    /// from padded row `row0` on, at least the rows [`Self::padded_rows`] names. Parts of
    /// one image can run on different threads, each with the rows it reads.
    pub fn pixels(
        &self,
        isa: Isa,
        (band, row0): (&[f32], usize),
        (h, w): (usize, usize),
        pixels: std::ops::Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        assert!(isa.supported(), "tier {isa} on a CPU without it");
        let p = &self.params;
        let (oh, ow) = p.out_hw(h, w);
        let wp = w + p.pads[1] + p.pads[3];
        let n = pixels.len();
        assert!(pixels.end <= oh * ow && out.len() >= n * p.c_out);
        assert!(self.padded_rows((h, w), &pixels).start >= row0 || n == 0);
        let r = residual.map(|r| &r[..n * p.c_out]);
        let g = Geometry {
            band,
            row0,
            wp,
            ow,
            pixels,
        };
        let cog = p.c_out / p.groups;
        // SAFETY (both): the CPU supports the tier (asserted).
        with_group_width!(cog, CO => match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe {
                const MR: usize = block_pixels(CO, 16, 20);
                self.rows_avx512::<CO, MR, { CO.div_ceil(16) }, { pair_groups(CO, 16) }>(g, out, r)
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe {
                const MR: usize = block_pixels(CO, 8, 10);
                self.rows_avx2::<CO, MR, { CO / 8 }>(g, out, r)
            },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                const MR: usize = block_pixels(CO, 4, 20);
                // SAFETY (both): NEON is in aarch64's baseline; `rows_impl` checks that every
                // block's reads lie inside `padded` and the weights.
                self.rows_impl::<CO, MR, 1>(
                    g,
                    out,
                    r,
                    |a| unsafe { blocks::neon::block::<CO, 1, MR, { CO / 4 }, 0, 0>(a) },
                    |a| unsafe { blocks::neon::block::<CO, 1, MR, { CO / 4 }, 0, 0>(a) },
                    None,
                )
            }
            Isa::Sse2 => {
                const MR: usize = block_pixels(CO, 4, 12);
                let one = blocks::portable::<CO, 1, MR, Unfused>;
                self.rows_impl::<CO, MR, 1>(g, out, r, one, one, None)
            }
            _ => {
                const MR: usize = block_pixels(CO, 4, 12);
                let one = blocks::portable::<CO, 1, MR, Fused>;
                self.rows_impl::<CO, MR, 1>(g, out, r, one, one, None)
            }
        })
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn rows_avx512<const CO: usize, const MR: usize, const NV: usize, const NG: usize>(
        &self,
        g: Geometry,
        out: &mut [f32],
        r: Option<&[f32]>,
    ) {
        use blocks::avx512::{block, row_block};
        // SAFETY (every block): the CPU has AVX-512 (this function's contract); `rows_impl`
        // checks that every block's reads lie inside `padded` and the weights.
        match (self.params.c_in == self.params.c_out, self.params.kw) {
            // As many input channels as outputs per group (RegNet, ResNeXt), 3 x 3: constants.
            (true, 3) => {
                // Stride 1 or 2, one vector per group: the pixels of a row share their
                // inputs. Row blocks of 7 pixels where 8 do not divide the rows (224 x 224
                // images halved: 7, 14, 28 columns), so no block is left over per row.
                let (c_in, ow) = (self.params.c_in, g.ow);
                // SAFETY (every row block): as above; `rows_impl` passes pixels of one row.
                let r8s1 =
                    |a: &Block<MR>| unsafe { row_block::<CO, NG, MR, 8, 1, CO, false>(a, c_in) };
                let r7s1 =
                    |a: &Block<MR>| unsafe { row_block::<CO, NG, MR, 7, 1, CO, false>(a, c_in) };
                let r8s2 =
                    |a: &Block<MR>| unsafe { row_block::<CO, NG, MR, 8, 2, CO, false>(a, c_in) };
                let r7s2 =
                    |a: &Block<MR>| unsafe { row_block::<CO, NG, MR, 7, 2, CO, false>(a, c_in) };
                let seven = ow.is_multiple_of(7) && !ow.is_multiple_of(8);
                let rows: Option<RowBlocks<CO, NG, MR>> = match (self.params.stride.1, seven) {
                    _ if NV > 1 || MR < 8 => None,
                    (1, false) => Some((8, &r8s1)),
                    (1, true) => Some((7, &r7s1)),
                    (2, false) => Some((8, &r8s2)),
                    (2, true) => Some((7, &r7s2)),
                    _ => None,
                };
                self.rows_impl::<CO, MR, NG>(
                    g,
                    out,
                    r,
                    |a| unsafe { block::<CO, NG, MR, NV, CO, 3>(a) },
                    |a| unsafe { block::<CO, 1, MR, NV, CO, 3>(a) },
                    rows,
                )
            }
            _ => self.rows_impl::<CO, MR, NG>(
                g,
                out,
                r,
                |a| unsafe { block::<CO, NG, MR, NV, 0, 0>(a) },
                |a| unsafe { block::<CO, 1, MR, NV, 0, 0>(a) },
                None,
            ),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2<const CO: usize, const MR: usize, const NV: usize>(
        &self,
        g: Geometry,
        out: &mut [f32],
        r: Option<&[f32]>,
    ) {
        // SAFETY (both): the CPU has AVX2 and FMA (this function's contract); `rows_impl`
        // checks that every block's reads lie inside `padded` and the weights.
        use blocks::avx2::block;
        if self.params.kw == 3 {
            // The innermost loop (kernel columns) unrolled: 7 % faster at 16 channels.
            let b = |a: &Block<MR>| unsafe { block::<CO, 1, MR, NV, 0, 3>(a) };
            self.rows_impl::<CO, MR, 1>(g, out, r, b, b, None)
        } else {
            let b = |a: &Block<MR>| unsafe { block::<CO, 1, MR, NV, 0, 0>(a) };
            self.rows_impl::<CO, MR, 1>(g, out, r, b, b, None)
        }
    }
}

/// Input bytes (padded rows) a band of [`GroupedConv::forward`] reads: well inside L2 beside
/// the band's outputs.
const BAND_BYTES: usize = 128 * 1024;

/// Output pixels of a register block for group width `co` on a tier with `lanes`-float
/// vectors: as many as keep the block's sums in at most `sums` registers (the rest hold
/// weights, a broadcast and what the compiler keeps ahead), at most 8 (each pixel keeps its
/// input address in a register), at least 1. On 32 registers (AVX-512, NEON) 20 sums. On
/// AVX2's 16, 10: with 12 the compiler loaded the next kernel column's weights early and
/// sent sums to the stack between multiply-adds; groups of 16 ran at 48 GFLOP/s, at 96 with
/// 10 (groups of 24 65 -> 101, of 32 46 -> 76, of 48 44 -> 54; `examples/grouped`, one Zen 4
/// core). The portable block on 16 registers keeps 12: 10 was faster at groups of 16 and
/// slower at 8 and 24.
const fn block_pixels(co: usize, lanes: usize, sums: usize) -> usize {
    let per_pixel = co.div_ceil(lanes);
    let fit = sums / per_pixel;
    if fit > 8 {
        8
    } else if fit == 0 {
        1
    } else {
        fit
    }
}

/// Groups of `co` channels a block of the tier with `lanes`-float vectors sums together: two
/// where one group fills a single vector (AVX-512 at 8 or 16 channels), so a block of 8
/// pixels keeps 16 chains of sums; one otherwise (the blocks already hold 16 or more).
#[cfg(target_arch = "x86_64")]
const fn pair_groups(co: usize, lanes: usize) -> usize {
    if co <= lanes {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests;
