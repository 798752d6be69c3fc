//! Depthwise convolution (one filter per channel, `groups = c_in = c_out`) on pixel-major
//! images, the spatial layer of MobileNet- and EfficientNet-style networks.
//!
//! Each output pixel is the sum over the kernel taps of the input pixel under the tap times
//! that tap's weights, channel by channel: with the image pixel-major (`[h][w][c]`) and the
//! weights tap-major (`[kh][kw][c]`), every tap is one contiguous multiply-add over the
//! channels, so the loop vectorizes over channels whatever the kernel size, stride or
//! padding. Channels go 32 at a time (four AVX2 or two AVX-512 registers of sums that stay
//! in registers over every tap); the bias, a fused residual and the activation follow while
//! the pixel is in L1. Every tier runs the same code compiled for its instructions, with the
//! same fused multiply-adds in the same order (taps in row-major order), so the tiers give
//! identical bits.

use super::grow;
use super::isa::Isa;
use super::layout::{nchw_to_nhwc, nhwc_to_nchw, IoLayout};
use super::PixelFinish;
use crate::ops::{Conv2dParams, ConvOp};
use std::ops::Range;

/// Channels summed together in registers.
const BLOCK: usize = 32;

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
        assert!(isa.supported(), "tier {isa} on a CPU without it");
        let (oh, ow) = self.params.out_hw(hw.0, hw.1);
        let c = self.params.c_in;
        assert!(rows.end <= oh && out.len() >= rows.len() * ow * c);
        assert_eq!(hwc.len(), hw.0 * hw.1 * c, "depthwise input length");
        let r = residual.map(|r| &r[..rows.len() * ow * c]);
        // SAFETY (both): the CPU supports the tier (asserted).
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.rows_avx512(hwc, hw, rows, out, r) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.rows_avx2(hwc, hw, rows, out, r) },
            _ => {
                let block = |at: BlockAt, out: &mut [f32]| match at.vectors {
                    2 => self.block::<8, 4>(hwc, at, out),
                    _ => self.block::<4, 4>(hwc, at, out),
                };
                self.rows_impl::<8, 4>(hwc, hw, rows, out, r, block)
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn rows_avx512(
        &self,
        hwc: &[f32],
        hw: (usize, usize),
        rows: Range<usize>,
        out: &mut [f32],
        r: Option<&[f32]>,
    ) {
        // Two registers of channels x four pixels: 8 of the 32 registers hold sums.
        let block = |at: BlockAt, out: &mut [f32]| unsafe {
            match at.vectors {
                2 => self.block_avx512::<2>(hwc, at, out),
                _ => self.block_avx512::<1>(hwc, at, out),
            }
        };
        self.rows_impl::<32, 4>(hwc, hw, rows, out, r, block)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(
        &self,
        hwc: &[f32],
        hw: (usize, usize),
        rows: Range<usize>,
        out: &mut [f32],
        r: Option<&[f32]>,
    ) {
        // Two registers x four pixels: 8 of the 16 registers.
        let block = |at: BlockAt, out: &mut [f32]| unsafe {
            match at.vectors {
                2 => self.block_avx2::<2>(hwc, at, out),
                _ => self.block_avx2::<1>(hwc, at, out),
            }
        };
        self.rows_impl::<16, 4>(hwc, hw, rows, out, r, block)
    }

    /// The loops, inlined into each tier's copy above: `B` channels of `P` neighbouring
    /// output pixels summed at once, so every weight vector loaded feeds `P` multiply-adds;
    /// the pixels whose window leaves the image (and the channels after the last whole
    /// block) go one at a time over the taps inside the image. Both sum the taps in
    /// row-major order, skipping none that lies inside, so the bits do not depend on `B`,
    /// `P` or which path a pixel took.
    #[inline(always)]
    fn rows_impl<const B: usize, const P: usize>(
        &self,
        hwc: &[f32],
        (h, w): (usize, usize),
        rows: Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
        block: impl Fn(BlockAt, &mut [f32]),
    ) {
        let p = &self.params;
        let c = p.c_in;
        let (_, ow) = p.out_hw(h, w);
        let inside = self.inside_columns((h, w));
        // Blocks of two vectors (`B` channels), then one of one vector if that many remain.
        let whole = c - c % (B / 2);
        // The taps of one output pixel inside the image: (input pixel, tap index).
        let mut taps: Vec<(usize, usize)> = Vec::with_capacity(p.kh * p.kw);
        for (k, oy) in rows.enumerate() {
            let kys = kernel_span(oy, p.stride.0, p.pads[0], p.kh, h);
            let row = &mut out[k * ow * c..][..ow * c];
            let mut ox = 0;
            while ox < ow {
                let run = inside.contains(&ox) && ox + P <= inside.end;
                let n = if run { P } else { 1 };
                if run {
                    for c0 in (0..whole).step_by(B) {
                        let at = BlockAt {
                            w,
                            pixel: (oy, ox),
                            kys: kys.clone(),
                            c0,
                            vectors: if c0 + B <= whole { 2 } else { 1 },
                        };
                        block(at, &mut row[ox * c..]);
                    }
                }
                let from = if run { whole } else { 0 };
                for j in ox..ox + n {
                    if from < c {
                        self.pixel_taps((h, w), (oy, j), &mut taps);
                        self.pixel(hwc, &taps, from, &mut row[j * c..][..c]);
                    }
                }
                ox += n;
            }
            let at = k * ow * c;
            self.finish
                .apply_pixels(c, row, residual.map(|r| &r[at..][..ow * c]));
        }
    }

    /// The output columns whose kernel window lies inside the image's width.
    fn inside_columns(&self, (_, w): (usize, usize)) -> Range<usize> {
        let p = &self.params;
        let (_, ow) = p.out_hw(1, w);
        let first = p.pads[1].div_ceil(p.stride.1);
        let end = if w + p.pads[1] >= p.kw {
            ((w + p.pads[1] - p.kw) / p.stride.1 + 1).min(ow)
        } else {
            0
        };
        first.min(end)..end
    }

    /// The taps of output pixel `(oy, ox)` that lie inside the image, in row-major order.
    fn pixel_taps(
        &self,
        (h, w): (usize, usize),
        (oy, ox): (usize, usize),
        taps: &mut Vec<(usize, usize)>,
    ) {
        let p = &self.params;
        taps.clear();
        for ky in kernel_span(oy, p.stride.0, p.pads[0], p.kh, h) {
            let iy = oy * p.stride.0 + ky - p.pads[0];
            for kx in kernel_span(ox, p.stride.1, p.pads[1], p.kw, w) {
                let ix = ox * p.stride.1 + kx - p.pads[1];
                taps.push((iy * w + ix, ky * p.kw + kx));
            }
        }
    }

    /// The portable [`BlockAt`]: `B` channels of `P` pixels in arrays the compiler may
    /// vectorize.
    #[inline(always)]
    fn block<const B: usize, const P: usize>(&self, hwc: &[f32], at: BlockAt, out: &mut [f32]) {
        let BlockAt {
            w,
            pixel: (oy, ox),
            kys,
            c0,
            ..
        } = at;
        let p = &self.params;
        let c = p.c_in;
        let mut acc = [[0.0f32; B]; P];
        for ky in kys {
            let iy = oy * p.stride.0 + ky - p.pads[0];
            for kx in 0..p.kw {
                let t = ky * p.kw + kx;
                let wt: &[f32; B] = self.weights[t * c + c0..][..B].try_into().expect("B lanes");
                let ix0 = ox * p.stride.1 + kx - p.pads[1];
                for (j, acc) in acc.iter_mut().enumerate() {
                    let at = (iy * w + ix0 + j * p.stride.1) * c + c0;
                    let x: &[f32; B] = hwc[at..][..B].try_into().expect("B lanes");
                    for ((a, &x), &wv) in acc.iter_mut().zip(x).zip(wt) {
                        *a = x.mul_add(wv, *a);
                    }
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            out[j * c + c0..][..B].copy_from_slice(acc);
        }
    }

    /// One output pixel's sums over `taps`, channels `from..` (`BLOCK` at a time in
    /// registers).
    #[inline(always)]
    fn pixel(&self, hwc: &[f32], taps: &[(usize, usize)], from: usize, out: &mut [f32]) {
        let c = self.params.c_in;
        let mut c0 = from;
        while c0 < c {
            let n = BLOCK.min(c - c0);
            if n == BLOCK {
                let mut acc = [0.0f32; BLOCK];
                for &(px, t) in taps {
                    let x = &hwc[px * c + c0..][..BLOCK];
                    let wt = &self.weights[t * c + c0..][..BLOCK];
                    for ((a, &x), &wv) in acc.iter_mut().zip(x).zip(wt) {
                        *a = x.mul_add(wv, *a);
                    }
                }
                out[c0..c0 + BLOCK].copy_from_slice(&acc);
            } else {
                let acc = &mut out[c0..c0 + n];
                acc.fill(0.0);
                for &(px, t) in taps {
                    let x = &hwc[px * c + c0..][..n];
                    let wt = &self.weights[t * c + c0..][..n];
                    for ((a, &x), &wv) in acc.iter_mut().zip(x).zip(wt) {
                        *a = x.mul_add(wv, *a);
                    }
                }
            }
            c0 += n;
        }
    }
}

/// Where one block of sums goes: channels `c0..c0 + B` of the `P` output pixels from
/// `pixel` (row, column) on, whose windows lie inside the image's width `w`, over the kernel
/// rows `kys` (those inside its height); written into the slice that starts at the first
/// pixel's channel 0.
#[derive(Clone, Debug)]
struct BlockAt {
    w: usize,
    pixel: (usize, usize),
    kys: Range<usize>,
    c0: usize,
    /// 2 (`B` channels) or 1 (`B / 2`).
    vectors: usize,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! [`super::BlockAt`] in registers: 2 vectors of channels x 4 pixels, one body for both
    //! widths (`block!`), each sum the same fused multiply-adds in the same tap order as
    //! the portable code.
    use super::{BlockAt, DepthwiseConv};
    use std::arch::x86_64::*;

    macro_rules! block {
        ($name:ident, $feat:literal, $v:ty, $lanes:literal, $zero:ident, $load:ident, $fma:ident, $store:ident) => {
            impl DepthwiseConv {
                /// # Safety
                /// The CPU has the tier's features.
                #[target_feature(enable = $feat)]
                #[inline]
                pub(super) unsafe fn $name<const V: usize>(
                    &self,
                    hwc: &[f32],
                    at: BlockAt,
                    out: &mut [f32],
                ) {
                    const P: usize = 4;
                    let p = &self.params;
                    let (c, (sy, sx)) = (p.c_in, p.stride);
                    let BlockAt {
                        w,
                        pixel: (oy, ox),
                        kys,
                        c0,
                        ..
                    } = at;
                    // Every access below stays inside these bounds (checked once, here).
                    if let Some(last_ky) = kys.clone().last() {
                        let last_in =
                            ((oy * sy + last_ky - p.pads[0]) * w + (ox + P - 1) * sx + p.kw
                                - 1
                                - p.pads[1])
                                * c
                                + c0
                                + V * $lanes;
                        assert!(last_in <= hwc.len(), "depthwise block reads past the image");
                    }
                    assert!((P - 1) * c + c0 + V * $lanes <= out.len());
                    assert!((p.kh * p.kw - 1) * c + c0 + V * $lanes <= self.weights.len());
                    let (x, wt) = (hwc.as_ptr(), self.weights.as_ptr());
                    let mut acc = [[$zero(); V]; P];
                    for ky in kys {
                        let iy = oy * sy + ky - p.pads[0];
                        for kx in 0..p.kw {
                            let t = (ky * p.kw + kx) * c + c0;
                            // SAFETY: inside the bounds asserted above.
                            unsafe {
                                let wv: [$v; V] =
                                    std::array::from_fn(|v| $load(wt.add(t + v * $lanes)));
                                let px = (iy * w + ox * sx + kx - p.pads[1]) * c + c0;
                                for (j, a) in acc.iter_mut().enumerate() {
                                    let at = px + j * sx * c;
                                    for v in 0..V {
                                        a[v] = $fma($load(x.add(at + v * $lanes)), wv[v], a[v]);
                                    }
                                }
                            }
                        }
                    }
                    for (j, a) in acc.iter().enumerate() {
                        // SAFETY: inside the bounds asserted above.
                        unsafe {
                            for (v, a) in a.iter().enumerate() {
                                $store(out.as_mut_ptr().add(j * c + c0 + v * $lanes), *a);
                            }
                        }
                    }
                }
            }
        };
    }

    block!(
        block_avx512,
        "avx512f,fma",
        __m512,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    );
    block!(
        block_avx2,
        "avx2,fma",
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    );
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
mod tests {
    use super::*;
    use crate::kernels::reference::conv2d_direct;
    use crate::ops::Activation;

    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + salt) * 37 % 101) as f32 - 50.0) / 40.0)
            .collect()
    }

    /// Every tier against the reference convolution (NCHW in and out), and the other memory
    /// orders against that, over kernel sizes, strides, asymmetric pads, channel counts
    /// around the block width, with and without bias, residual and activation.
    #[test]
    fn every_tier_and_memory_order_matches_the_reference() {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (case, &(c, k, s, pads, (h, w))) in [
            (8, 3, 1, [1, 1, 1, 1], (7, 6)),
            (32, 3, 2, [0, 0, 1, 1], (9, 9)),
            (45, 5, 1, [2, 2, 2, 2], (6, 8)),
            (70, 5, 2, [1, 2, 2, 1], (11, 10)),
            (96, 3, 1, [1, 1, 1, 1], (1, 1)),
            (3, 7, 3, [3, 3, 3, 3], (8, 5)),
            // Several runs of four pixels per row, and a block of one vector after two.
            (48, 3, 1, [1, 1, 1, 1], (5, 13)),
            (24, 5, 2, [2, 2, 2, 2], (6, 21)),
        ]
        .iter()
        .enumerate()
        {
            let p = Conv2dParams::new(c, c, k, k)
                .with_stride(s, s)
                .with_pads(pads)
                .with_groups(c);
            let (oh, ow) = p.out_hw(h, w);
            let x = values(c * h * w, case);
            let weights = values(c * k * k, case + 3);
            let bias = (case % 2 == 0).then(|| values(c, case + 5));
            let residual = values(c * oh * ow, case + 7);
            for (activation, fused) in [
                (Activation::None, None),
                (Activation::Clip(0.0, 6.0), None),
                (Activation::Silu, None),
                (Activation::None, Some(Activation::Relu)),
            ] {
                let op = ConvOp {
                    params: p,
                    weights: weights.clone(),
                    bias: bias.clone(),
                    activation,
                    residual: fused,
                };
                let d = DepthwiseConv::new(&op).expect("depthwise");
                let mut want = conv2d_direct(&p, &x, h, w, &weights, bias.as_deref());
                if let Some(after) = fused {
                    after.add_then_apply(&mut want, &residual);
                } else {
                    activation.apply(&mut want);
                }
                let r = fused.map(|_| &residual[..]);
                let mut s = DepthwiseScratch::default();
                let mut got = vec![f32::NAN; want.len()];
                d.forward(&x, (h, w), &mut got, &mut s, IoLayout::NCHW, r);
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{p:?}: {a} vs {b}");
                }
                // Every tier and memory order gives the portable tier's bits.
                let mut x_hwc = vec![0.0; x.len()];
                nchw_to_nhwc(&x, c, h * w, &mut x_hwc);
                let mut r_hwc = vec![0.0; residual.len()];
                nchw_to_nhwc(&residual, c, oh * ow, &mut r_hwc);
                let mut portable = vec![f32::NAN; want.len()];
                d.rows(
                    Isa::Portable,
                    &x_hwc,
                    (h, w),
                    0..oh,
                    &mut portable,
                    fused.map(|_| &r_hwc[..]),
                );
                let mut as_nchw = vec![0.0; want.len()];
                nhwc_to_nchw(&portable, c, oh * ow, &mut as_nchw);
                assert_eq!(bits(&as_nchw), bits(&got), "{p:?}: NCHW vs pixel-major");
                for isa in Isa::available() {
                    let mut o = vec![f32::NAN; want.len()];
                    // Two parts, as two threads would run them.
                    let split = oh / 2;
                    let (top, bottom) = o.split_at_mut(split * ow * c);
                    let rr = fused.map(|_| &r_hwc[..]);
                    d.rows(isa, &x_hwc, (h, w), 0..split, top, rr);
                    let rb = fused.map(|_| &r_hwc[split * ow * c..]);
                    d.rows(isa, &x_hwc, (h, w), split..oh, bottom, rb);
                    assert_eq!(bits(&o), bits(&portable), "{isa} {p:?}");
                }
            }
        }
    }
}
