//! Depthwise convolution (one filter per channel, `groups = c_in = c_out`) on pixel-major
//! images, the spatial layer of MobileNet- and EfficientNet-style networks.
//!
//! Each output pixel is the sum over the kernel taps of the input pixel under the tap times
//! that tap's weights, channel by channel: with the image pixel-major (`[h][w][c]`) and the
//! weights tap-major (`[kh][kw][c]`), every tap is one contiguous multiply-add over the
//! channels. Kernels 3, 5 or 7 wide with stride 1 or 2 across run in register blocks
//! (`block.rs`: a vector of channels of 8 neighbouring pixels, each input column loaded once
//! per kernel row, bias, residual and activation applied before the store); other shapes
//! go a pixel at a time over the taps inside the image. On small images of many channels,
//! where every block reaches past an edge, the blocks read one vector of channels at a time
//! packed between zero columns (`packing.rs`), so none of them clamps or masks a column.
//! Every tier runs the same block code compiled for its instructions, with the same fused
//! multiply-adds in the same order, so the tiers give identical bits.

mod block;
mod packing;

/// [`DepthwiseConv::rows`] on a vector tier: `$lanes` channels a block, `$wide` pixels (4 at a
/// row's end).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! tier_rows {
    ($(#[$doc:meta])* $name:ident, $feat:literal, $tier:ident, $lanes:literal, $wide:literal) => {
        $(#[$doc])*
        #[target_feature(enable = $feat)]
        unsafe fn $name(&self, image: Image, rows: Range<usize>, out: &mut [f32], r: Option<&[f32]>) {
            macro_rules! go {
                ($kw:literal, $s:literal) => {
                    self.rows_impl::<$lanes, $wide>(image, rows, out, r, |x, at, o| {
                        // SAFETY: this function runs only where the tier does.
                        unsafe {
                            match (at.pixels, at.packed) {
                                (..=4, false) => block::$tier::block::<$kw, $s, 4>(self, x, at, o),
                                (_, false) => block::$tier::block::<$kw, $s, $wide>(self, x, at, o),
                                (..=4, true) => block::$tier::block_packed::<$kw, $s, 4>(self, x, at, o),
                                (_, true) => block::$tier::block_packed::<$kw, $s, $wide>(self, x, at, o),
                            }
                        }
                    })
                };
            }
            by_shape!(self.params, go, self.rows_by_pixel::<Fused>(image, rows, out, r))
        }
    };
}

/// `$go!(KW, S)` for the kernel widths and strides across that have a block, else `$other`.
macro_rules! by_shape {
    ($p:expr, $go:ident, $other:expr) => {
        match ($p.kw, $p.stride.1) {
            (3, 1) => $go!(3, 1),
            (3, 2) => $go!(3, 2),
            (5, 1) => $go!(5, 1),
            (5, 2) => $go!(5, 2),
            (7, 1) => $go!(7, 1),
            (7, 2) => $go!(7, 2),
            _ => $other,
        }
    };
}

/// [`DepthwiseConv::band_rows`] on a tier without `target_feature` (`sse2`, `portable`):
/// blocks of 4 pixels from `block::$tier`, other shapes a pixel at a time with `$madd`.
macro_rules! baseline_rows {
    ($dw:expr, $tier:ident, $madd:ty, $image:expr, $rows:expr, $out:expr, $r:expr) => {{
        macro_rules! go {
            ($kw:literal, $s:literal) => {
                $dw.rows_impl::<{ block::$tier::LANES }, 4>($image, $rows, $out, $r, |x, at, o| {
                    // SAFETY: no instructions beyond the baseline.
                    unsafe {
                        if at.packed {
                            block::$tier::block_packed::<$kw, $s, 4>($dw, x, at, o)
                        } else {
                            block::$tier::block::<$kw, $s, 4>($dw, x, at, o)
                        }
                    }
                })
            };
        }
        by_shape!(
            $dw.params,
            go,
            $dw.rows_by_pixel::<$madd>($image, $rows, $out, $r)
        )
    }};
}

use super::grow;
use super::isa::{Fused, Isa, MulAdd, Unfused};
use super::layout::{nchw_to_nhwc, nhwc_to_nchw, IoLayout};
use super::PixelFinish;
use crate::ops::{Conv2dParams, ConvOp};
use packing::{pack_channels, Packing};
use std::ops::Range;

/// A depthwise convolution with its weights laid out tap-major.
#[derive(Clone, Debug)]
pub struct DepthwiseConv {
    params: Conv2dParams,
    /// `[kh][kw][c]`.
    weights: Vec<f32>,
    finish: PixelFinish,
}

/// Per-thread buffers of [`DepthwiseConv`]: the pixel-major input or output of an image
/// given or wanted in NCHW.
#[derive(Clone, Debug, Default)]
pub struct DepthwiseScratch {
    input: Vec<f32>,
    output: Vec<f32>,
    residual: Vec<f32>,
}

impl crate::kernels::ScratchBytes for DepthwiseScratch {
    fn scratch_bytes(&self) -> u64 {
        use crate::kernels::buffer_bytes;
        buffer_bytes(&self.input) + buffer_bytes(&self.output) + buffer_bytes(&self.residual)
    }
}

impl DepthwiseConv {
    /// Whether `p` is a depthwise convolution this kernel runs: one group per channel, one
    /// output per channel, no dilation.
    pub fn suits(p: &Conv2dParams) -> bool {
        p.groups > 1 && p.groups == p.c_in && p.c_out == p.c_in && p.dilation == (1, 1)
    }

    /// `None` unless [`Self::suits`] the op.
    pub fn new(op: &ConvOp) -> Option<DepthwiseConv> {
        let p = op.params;
        if !Self::suits(&p) || op.weights.len() != p.c_in * p.kh * p.kw {
            return None;
        }
        let taps = p.kh * p.kw;
        // OIHW with one input channel per group: `[c][kh][kw]` -> `[kh][kw][c]`.
        let mut weights = vec![0.0; op.weights.len()];
        for c in 0..p.c_in {
            for t in 0..taps {
                weights[t * p.c_in + c] = op.weights[c * taps + t];
            }
        }
        Some(DepthwiseConv {
            params: p,
            weights,
            finish: PixelFinish::of(op),
        })
    }

    pub fn params(&self) -> &Conv2dParams {
        &self.params
    }

    /// One image `x = [c, h, w]` -> `out = [c, oh, ow]`, each in the memory order `io`
    /// gives; `residual` is this image's fused residual input (in the output's order), if
    /// the op has one.
    pub fn forward(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
        s: &mut DepthwiseScratch,
        io: IoLayout,
        residual: Option<&[f32]>,
    ) {
        let c = self.params.c_in;
        let (oh, ow) = self.params.out_hw(h, w);
        let hwc = self.pixel_major_input(x, (h, w), io, &mut s.input);
        if io.output_nhwc {
            self.rows(
                Isa::current(),
                hwc,
                (h, w),
                0..oh,
                &mut out[..oh * ow * c],
                residual,
            );
            return;
        }
        // The NCHW residual, pixel-major like the rows the kernel writes.
        let n = oh * ow * c;
        let residual = residual.map(|r| {
            grow(&mut s.residual, n);
            nchw_to_nhwc(r, c, oh * ow, &mut s.residual[..n]);
            &s.residual[..n]
        });
        grow(&mut s.output, oh * ow * c);
        let o = &mut s.output[..oh * ow * c];
        self.rows(Isa::current(), hwc, (h, w), 0..oh, o, residual);
        nhwc_to_nchw(o, c, oh * ow, out);
    }

    /// The input rows (inside the image's `h`) that output rows `rows` read.
    pub fn input_rows(&self, h: usize, rows: Range<usize>) -> Range<usize> {
        let p = &self.params;
        if rows.is_empty() {
            return 0..0;
        }
        let first = kernel_span(rows.start, p.stride.0, p.pads[0], p.kh, h);
        let last = kernel_span(rows.end - 1, p.stride.0, p.pads[0], p.kh, h);
        let start = (rows.start * p.stride.0 + first.start).saturating_sub(p.pads[0]);
        let end = ((rows.end - 1) * p.stride.0 + last.end).saturating_sub(p.pads[0]);
        start..end.max(start)
    }

    /// The image pixel-major: `x` itself, or its transpose in `buf`.
    fn pixel_major_input<'a>(
        &self,
        x: &'a [f32],
        (h, w): (usize, usize),
        io: IoLayout,
        buf: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        let n = self.params.c_in * h * w;
        if io.input_nhwc {
            return &x[..n];
        }
        grow(buf, n);
        nchw_to_nhwc(x, self.params.c_in, h * w, &mut buf[..n]);
        &buf[..n]
    }

    /// Output rows `rows` of a pixel-major image into `out` (`rows.len() * ow * c` values,
    /// pixel-major), bias, residual (the rows' part of a pixel-major residual) and
    /// activation included, on tier `isa`. Parts of one image can run on different threads.
    pub fn rows(
        &self,
        isa: Isa,
        hwc: &[f32],
        hw: (usize, usize),
        rows: Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        assert_eq!(
            hwc.len(),
            hw.0 * hw.1 * self.params.c_in,
            "depthwise input length"
        );
        self.band_rows(isa, (hwc, 0), hw, rows, out, residual);
    }

    /// [`Self::rows`] from a band of the image: `band` holds the input rows from `row0` on,
    /// at least those the output rows `rows` read (what [`Self::input_rows`] gives).
    pub fn band_rows(
        &self,
        isa: Isa,
        (hwc, row0): (&[f32], usize),
        hw: (usize, usize),
        rows: Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        assert!(isa.supported(), "tier {isa} on a CPU without it");
        let (oh, ow) = self.params.out_hw(hw.0, hw.1);
        let c = self.params.c_in;
        assert!(rows.end <= oh && out.len() >= rows.len() * ow * c);
        let needed = self.input_rows(hw.0, rows.clone());
        assert!(
            needed.is_empty()
                || (row0 <= needed.start && needed.end <= row0 + hwc.len() / (hw.1 * c)),
            "depthwise band rows {row0}.. lack the input rows {needed:?}"
        );
        let r = residual.map(|r| &r[..rows.len() * ow * c]);
        let image = Image { hwc, hw, row0 };
        // SAFETY (both): the CPU supports the tier (asserted).
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.rows_avx512(image, rows, out, r) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.rows_avx2(image, rows, out, r) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { self.rows_neon(image, rows, out, r) },
            Isa::Sse2 => baseline_rows!(self, sse2, Unfused, image, rows, out, r),
            _ => baseline_rows!(self, portable, Fused, image, rows, out, r),
        }
    }

    #[cfg(target_arch = "x86_64")]
    tier_rows!(
        /// One register of channels x 8 pixels (4 at a row's end): 8 chains of sums, the
        /// weights of a kernel row and the input column in 32 registers.
        rows_avx512, "avx512f,fma", avx512, 16, 8
    );

    #[cfg(target_arch = "x86_64")]
    tier_rows!(
        /// One register x 4 pixels: with a kernel row of weights and the masks of the
        /// columns, within the 16 registers (8 pixels spilled: 3x3 stride 2 and 7x7 images
        /// ran slower than 4, measured with HASTE_ISA=avx2 by `--example depthwise`).
        rows_avx2, "avx2,fma", avx2, 8, 4
    );

    #[cfg(target_arch = "aarch64")]
    tier_rows!(
        /// One register of 4 channels x 8 pixels (4 at a row's end).
        rows_neon, "neon", neon, 4, 8
    );

    /// The loops, inlined into each tier's copy above: every output row in blocks of
    /// neighbouring pixels (`block` decides how many, up to the row's end) and of `LANES`
    /// channels (fewer for the last), each finished (bias, residual, activation) in its
    /// registers (`P` pixels a block, 4 for a row's last 4 or fewer). `block` reads the
    /// input it is given, laid out as its `BlockAt` says: the image itself, or one vector
    /// of channels of it packed between zero columns ([`Self::packing`]).
    #[inline(always)]
    fn rows_impl<const LANES: usize, const P: usize>(
        &self,
        image: Image,
        rows: Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
        block: impl Fn(&[f32], BlockAt<'_>, &mut [f32]) -> usize,
    ) {
        let p = &self.params;
        let (h, w) = image.hw;
        let c = p.c_in;
        let (_, ow) = p.out_hw(h, w);
        // The block of output row `oy` (over kernel rows `kys`) from column `ox`, channels
        // `c0..`, reading `x`.
        let at = |(oy, kys): (usize, &Range<usize>), ox: usize, c0: usize, x: XLayout| {
            let k = oy - rows.start;
            BlockAt {
                w: x.w,
                row0: x.row0,
                packed: x.packed,
                pixel: (oy, ox),
                kys: kys.clone(),
                c0,
                c1: if x.packed { (c0 + LANES).min(c) } else { c },
                pixels: ow - ox,
                next_row: ow * c,
                residual: residual.map(|r| &r[(k * ow + ox) * c..][..(ow - ox) * c]),
            }
        };
        let Some(packing) = self.packing::<LANES, P>(w, ow) else {
            let x = XLayout {
                w,
                row0: image.row0,
                packed: false,
            };
            for oy in rows.clone() {
                let kys = kernel_span(oy, p.stride.0, p.pads[0], p.kh, h);
                let row = &mut out[(oy - rows.start) * ow * c..][..ow * c];
                let mut ox = 0;
                while ox < ow {
                    // Every vector of channels in one call (see `block::block`).
                    ox += block(image.hwc, at((oy, &kys), ox, 0, x), &mut row[ox * c..]);
                }
            }
            return;
        };
        let Packing { tile, width, pad } = packing;
        let mut packed = Vec::new();
        for tile_start in rows.clone().step_by(tile) {
            let tile_rows = tile_start..(tile_start + tile).min(rows.end);
            let needed = self.input_rows(h, tile_rows.clone());
            // The pad columns stay zero: only the image's columns are copied in.
            packed.clear();
            packed.resize(needed.len() * width * LANES, 0.0);
            let src = &image.hwc[(needed.start - image.row0) * w * c..][..needed.len() * w * c];
            let x = XLayout {
                w: width,
                row0: needed.start,
                packed: true,
            };
            for c0 in (0..c).step_by(LANES) {
                pack_channels::<LANES>(src, (w, c, c0), width, pad, &mut packed);
                for oy in tile_rows.clone() {
                    let kys = kernel_span(oy, p.stride.0, p.pads[0], p.kh, h);
                    let row = &mut out[(oy - rows.start) * ow * c..][..ow * c];
                    let mut ox = 0;
                    while ox < ow {
                        ox += block(&packed, at((oy, &kys), ox, c0, x), &mut row[ox * c..]);
                    }
                }
            }
        }
    }

    /// The kernel shapes without a block (widths other than 3, 5 and 7, strides other than 1
    /// and 2 across): one pixel at a time over the taps inside the image.
    fn rows_by_pixel<M: MulAdd>(
        &self,
        Image { hwc, hw, row0 }: Image,
        rows: Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let c = self.params.c_in;
        let (_, ow) = self.params.out_hw(hw.0, hw.1);
        let mut taps: Vec<(usize, usize)> = Vec::with_capacity(self.params.kh * self.params.kw);
        for (k, oy) in rows.enumerate() {
            let row = &mut out[k * ow * c..][..ow * c];
            for (ox, o) in row.chunks_exact_mut(c).enumerate() {
                self.pixel_taps(hw, row0, (oy, ox), &mut taps);
                self.pixel::<M>(hwc, &taps, o);
            }
            let at = k * ow * c;
            self.finish
                .apply_pixels(c, row, residual.map(|r| &r[at..][..ow * c]));
        }
    }

    /// The taps of output pixel `(oy, ox)` that lie inside the image, in row-major order,
    /// each with its pixel's offset in a band that starts at row `row0`.
    fn pixel_taps(
        &self,
        (h, w): (usize, usize),
        row0: usize,
        (oy, ox): (usize, usize),
        taps: &mut Vec<(usize, usize)>,
    ) {
        let p = &self.params;
        taps.clear();
        for ky in kernel_span(oy, p.stride.0, p.pads[0], p.kh, h) {
            let iy = oy * p.stride.0 + ky - p.pads[0] - row0;
            for kx in kernel_span(ox, p.stride.1, p.pads[1], p.kw, w) {
                let ix = ox * p.stride.1 + kx - p.pads[1];
                taps.push((iy * w + ix, ky * p.kw + kx));
            }
        }
    }

    /// One output pixel's sums over `taps`, channel by channel.
    fn pixel<M: MulAdd>(&self, hwc: &[f32], taps: &[(usize, usize)], out: &mut [f32]) {
        let c = self.params.c_in;
        out.fill(0.0);
        for &(px, t) in taps {
            let x = &hwc[px * c..][..c];
            let wt = &self.weights[t * c..][..c];
            for ((a, &x), &wv) in out.iter_mut().zip(x).zip(wt) {
                *a = M::madd(x, wv, *a);
            }
        }
    }
}

/// How a block's input is laid out (see [`BlockAt`]): `w` pixels a row, rows from image
/// row `row0` on, the image itself or packed.
#[derive(Clone, Copy)]
struct XLayout {
    w: usize,
    row0: usize,
    packed: bool,
}

/// A pixel-major image's rows from `row0` on, and the whole image's height and width.
#[derive(Clone, Copy)]
struct Image<'a> {
    hwc: &'a [f32],
    hw: (usize, usize),
    row0: usize,
}

/// Where one block of sums goes: channels `c0..` (a vector's worth, or what is left) of up
/// to `pixels` output pixels from `pixel` (row, column) on, over the kernel rows `kys`
/// (those inside the image's height), in an image `w` wide; written, finished, into the
/// slice that starts at the first pixel's channel 0, with `residual` (the same pixels' part
/// of the fused residual, if any) added.
#[derive(Clone, Debug)]
pub(crate) struct BlockAt<'a> {
    w: usize,
    /// Whether the input read is one vector of channels packed between zero columns
    /// ([`DepthwiseConv::packing`]; `w` is then its width), not the image itself.
    packed: bool,
    /// The image row `hwc`'s first row is.
    row0: usize,
    pixel: (usize, usize),
    kys: Range<usize>,
    /// The block's first channel, and the end of the channels it sums, a vector at a time
    /// (one vector when packed).
    c0: usize,
    c1: usize,
    pixels: usize,
    /// Floats from an output pixel to the one below it.
    next_row: usize,
    residual: Option<&'a [f32]>,
}

/// The kernel offsets `k` for which output coordinate `o` reads an input coordinate inside
/// `0..size` (`o * stride + k - pad`).
fn kernel_span(o: usize, stride: usize, pad: usize, k: usize, size: usize) -> Range<usize> {
    // `o * stride + k - pad >= 0` is `k >= pad - o * stride`; `< size` is
    // `k < size + pad - o * stride`.
    let lo = pad.saturating_sub(o * stride);
    let hi = (size + pad).saturating_sub(o * stride).min(k);
    lo.min(hi)..hi
}

#[cfg(test)]
mod tests;
