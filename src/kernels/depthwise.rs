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
            _ => self.rows_impl(hwc, hw, rows, out, r),
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
        self.rows_impl(hwc, hw, rows, out, r)
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
        self.rows_impl(hwc, hw, rows, out, r)
    }

    /// The loops, inlined into each tier's copy above.
    #[inline(always)]
    fn rows_impl(
        &self,
        hwc: &[f32],
        (h, w): (usize, usize),
        rows: Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let p = &self.params;
        let c = p.c_in;
        let (_, ow) = p.out_hw(h, w);
        // The taps of one output pixel inside the image: (input pixel, tap index).
        let mut taps: Vec<(usize, usize)> = Vec::with_capacity(p.kh * p.kw);
        let coord = |o: usize, k: usize, s: usize, pad: usize, size: usize| {
            (o * s + k).checked_sub(pad).filter(|&i| i < size)
        };
        for (k, oy) in rows.enumerate() {
            for ox in 0..ow {
                taps.clear();
                for ky in 0..p.kh {
                    let Some(iy) = coord(oy, ky, p.stride.0, p.pads[0], h) else {
                        continue;
                    };
                    for kx in 0..p.kw {
                        if let Some(ix) = coord(ox, kx, p.stride.1, p.pads[1], w) {
                            taps.push((iy * w + ix, ky * p.kw + kx));
                        }
                    }
                }
                let at = (k * ow + ox) * c;
                let o = &mut out[at..][..c];
                self.pixel(hwc, &taps, o);
                self.finish.apply(o, residual.map(|r| &r[at..][..c]));
            }
        }
    }

    /// One output pixel's sums over `taps`, `BLOCK` channels at a time in registers.
    #[inline(always)]
    fn pixel(&self, hwc: &[f32], taps: &[(usize, usize)], out: &mut [f32]) {
        let c = self.params.c_in;
        let mut c0 = 0;
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
