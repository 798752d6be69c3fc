//! Grouped convolution (`1 < groups < c_in`, RegNet- and ResNeXt-style) on pixel-major
//! images.
//!
//! Output channel `g * cog + j` sums, over the kernel taps and the `cig` input channels of
//! group `g`, the input value under the tap times its weight. With the image zero-padded and
//! pixel-major and the weights laid out `[g][tap][i][j]`, each (tap, input channel) step is a
//! broadcast of one input value and a multiply-add over the group's `cog` outputs, for
//! `PIXELS` output pixels at once, so the sums of a block (`PIXELS x cog` values) stay in
//! registers over every step and each weight vector is loaded once per block. The bias, a
//! fused residual and the activation follow per pixel. Every tier runs this code compiled for
//! its instructions, with the same fused multiply-adds in the same order, so the tiers give
//! identical bits.

use super::grow;
use super::isa::Isa;
use super::layout::{nchw_to_nhwc, nhwc_to_nchw, pad_hwc, to_hwc_padded, IoLayout};
use super::PixelFinish;
use crate::ops::{Conv2dParams, ConvOp};

/// Output pixels summed together.
const PIXELS: usize = 4;

/// A grouped convolution with its weights laid out for the kernel.
#[derive(Clone, Debug)]
pub struct GroupedConv {
    params: Conv2dParams,
    /// `[g][kh * kw][cig][cog]`.
    weights: Vec<f32>,
    finish: PixelFinish,
}

/// Per-thread buffers of [`GroupedConv`].
#[derive(Clone, Debug, Default)]
pub struct GroupedScratch {
    /// The zero-padded pixel-major image.
    padded: Vec<f32>,
    /// A pixel-major output, or an NCHW image's pixel-major residual.
    output: Vec<f32>,
    residual: Vec<f32>,
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

impl GroupedConv {
    /// Whether `p` is a grouped convolution this kernel runs: more than one group, several
    /// input channels per group, a group width of 8, 16, 24, 32, 48 or 64 outputs, no dilation.
    pub fn suits(p: &Conv2dParams) -> bool {
        let cog = p.c_out / p.groups.max(1);
        p.groups > 1
            && p.c_in.is_multiple_of(p.groups)
            && p.c_out.is_multiple_of(p.groups)
            && p.c_in / p.groups > 1
            && matches!(cog, 8 | 16 | 24 | 32 | 48 | 64)
            && p.dilation == (1, 1)
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
        let mut weights = vec![0.0; op.weights.len()];
        for co in 0..p.c_out {
            let (g, j) = (co / cog, co % cog);
            for i in 0..cig {
                for t in 0..taps {
                    weights[((g * taps + t) * cig + i) * cog + j] =
                        op.weights[(co * cig + i) * taps + t];
                }
            }
        }
        Some(GroupedConv {
            params: p,
            weights,
            finish: PixelFinish::of(op),
        })
    }

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
        let n_in = hp * wp * p.c_in;
        grow(&mut s.padded, n_in);
        let padded = &mut s.padded[..n_in];
        if io.input_nhwc {
            pad_hwc(x, p.c_in, (h, w), (p.pads[0], p.pads[1]), (hp, wp), padded);
        } else {
            to_hwc_padded(x, p.c_in, (h, w), (p.pads[0], p.pads[1]), (hp, wp), padded);
        }
        let n_out = oh * ow * p.c_out;
        let isa = Isa::current();
        if io.output_nhwc {
            self.rows(
                isa,
                &s.padded[..n_in],
                (hp, wp),
                0..oh,
                &mut out[..n_out],
                residual,
            );
            return;
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
        assert!(isa.supported(), "tier {isa} on a CPU without it");
        let p = &self.params;
        assert_eq!(
            padded.len(),
            hp * wp * p.c_in,
            "grouped conv: padded input length"
        );
        let h = hp - p.pads[0] - p.pads[2];
        let w = wp - p.pads[1] - p.pads[3];
        let (oh, ow) = p.out_hw(h, w);
        assert!(rows.end <= oh && out.len() >= rows.len() * ow * p.c_out);
        let r = residual.map(|r| &r[..rows.len() * ow * p.c_out]);
        let cog = p.c_out / p.groups;
        // SAFETY (both): the CPU supports the tier (asserted).
        with_group_width!(cog, CO => match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.rows_avx512::<CO>(padded, wp, rows, ow, out, r) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.rows_avx2::<CO>(padded, wp, rows, ow, out, r) },
            _ => self.rows_impl::<CO>(padded, wp, rows, ow, out, r),
        })
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn rows_avx512<const CO: usize>(
        &self,
        padded: &[f32],
        wp: usize,
        rows: std::ops::Range<usize>,
        ow: usize,
        out: &mut [f32],
        r: Option<&[f32]>,
    ) {
        self.rows_impl::<CO>(padded, wp, rows, ow, out, r)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2<const CO: usize>(
        &self,
        padded: &[f32],
        wp: usize,
        rows: std::ops::Range<usize>,
        ow: usize,
        out: &mut [f32],
        r: Option<&[f32]>,
    ) {
        self.rows_impl::<CO>(padded, wp, rows, ow, out, r)
    }

    /// The loops, inlined into each tier's copy above. `CO` is the group width.
    #[inline(always)]
    fn rows_impl<const CO: usize>(
        &self,
        padded: &[f32],
        wp: usize,
        rows: std::ops::Range<usize>,
        ow: usize,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let p = &self.params;
        let (c_in, c_out, groups) = (p.c_in, p.c_out, p.groups);
        let (cig, taps) = (c_in / groups, p.kh * p.kw);
        let (sy, sx) = p.stride;
        for (k, oy) in rows.enumerate() {
            for ox0 in (0..ow).step_by(PIXELS) {
                let np = PIXELS.min(ow - ox0);
                // Where each pixel's tap (0, 0) reads; a block's missing pixels repeat the
                // last one (computed, not stored).
                let origin: [usize; PIXELS] = std::array::from_fn(|q| {
                    let ox = ox0 + q.min(np - 1);
                    (oy * sy * wp + ox * sx) * c_in
                });
                for g in 0..groups {
                    let mut acc = [[0.0f32; CO]; PIXELS];
                    for ky in 0..p.kh {
                        for kx in 0..p.kw {
                            let t = ky * p.kw + kx;
                            let tap_at = (ky * wp + kx) * c_in + g * cig;
                            let wt = &self.weights[(g * taps + t) * cig * CO..][..cig * CO];
                            for (i, wv) in wt.chunks_exact(CO).enumerate() {
                                let wv: &[f32; CO] = wv.try_into().expect("CO weights");
                                for (a, &o) in acc.iter_mut().zip(&origin) {
                                    let x = padded[o + tap_at + i];
                                    for (a, &wj) in a.iter_mut().zip(wv) {
                                        *a = x.mul_add(wj, *a);
                                    }
                                }
                            }
                        }
                    }
                    for (q, a) in acc.iter().enumerate().take(np) {
                        let at = (k * ow + ox0 + q) * c_out + g * CO;
                        out[at..at + CO].copy_from_slice(a);
                    }
                }
                for q in 0..np {
                    let at = (k * ow + ox0 + q) * c_out;
                    let o = &mut out[at..at + c_out];
                    self.finish.apply(o, residual.map(|r| &r[at..at + c_out]));
                }
            }
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

    /// Every tier and memory order against the reference, over group widths, strides, pads,
    /// widths no block divides, with and without bias, residual and activation.
    #[test]
    fn every_tier_and_memory_order_matches_the_reference() {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (case, &(c_in, c_out, groups, k, s, pads, (h, w))) in [
            (32, 32, 2, 3, 1, [1, 1, 1, 1], (7, 6)),
            (48, 48, 3, 3, 2, [0, 0, 1, 1], (9, 9)),
            (16, 64, 2, 3, 1, [1, 1, 1, 1], (5, 7)),
            (24, 24, 3, 1, 1, [0, 0, 0, 0], (4, 5)),
            (64, 96, 4, 5, 2, [2, 1, 1, 2], (10, 11)),
        ]
        .iter()
        .enumerate()
        {
            let p = Conv2dParams::new(c_in, c_out, k, k)
                .with_stride(s, s)
                .with_pads(pads)
                .with_groups(groups);
            assert!(GroupedConv::suits(&p), "{p:?}");
            let (oh, ow) = p.out_hw(h, w);
            let x = values(c_in * h * w, case);
            let weights = values(c_out * (c_in / groups) * k * k, case + 3);
            let bias = (case % 2 == 0).then(|| values(c_out, case + 5));
            let residual = values(c_out * oh * ow, case + 7);
            for (activation, fused) in [
                (Activation::None, None),
                (Activation::Relu, None),
                (Activation::None, Some(Activation::Relu)),
            ] {
                let op = ConvOp {
                    params: p,
                    weights: weights.clone(),
                    bias: bias.clone(),
                    activation,
                    residual: fused,
                };
                let gconv = GroupedConv::new(&op).expect("grouped");
                let mut want = conv2d_direct(&p, &x, h, w, &weights, bias.as_deref());
                match fused {
                    Some(after) => after.add_then_apply(&mut want, &residual),
                    None => activation.apply(&mut want),
                }
                let r = fused.map(|_| &residual[..]);
                let mut s = GroupedScratch::default();
                let mut nchw = vec![f32::NAN; want.len()];
                gconv.forward(&x, (h, w), &mut nchw, &mut s, IoLayout::NCHW, r);
                for (a, b) in nchw.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{p:?}: {a} vs {b}");
                }
                let mut x_hwc = vec![0.0; x.len()];
                nchw_to_nhwc(&x, c_in, h * w, &mut x_hwc);
                let mut r_hwc = vec![0.0; residual.len()];
                nchw_to_nhwc(&residual, c_out, oh * ow, &mut r_hwc);
                let io = IoLayout {
                    input_nhwc: true,
                    output_nhwc: true,
                };
                let mut hwc = vec![f32::NAN; want.len()];
                let rr = fused.map(|_| &r_hwc[..]);
                gconv.forward(&x_hwc, (h, w), &mut hwc, &mut s, io, rr);
                let mut back = vec![0.0; want.len()];
                nhwc_to_nchw(&hwc, c_out, oh * ow, &mut back);
                assert_eq!(bits(&back), bits(&nchw), "{p:?}: memory orders");
                // Every tier, in two parts as two threads would run them.
                let (hp, wp) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
                let mut padded = vec![0.0; hp * wp * c_in];
                to_hwc_padded(&x, c_in, (h, w), (pads[0], pads[1]), (hp, wp), &mut padded);
                for isa in Isa::available() {
                    let mut o = vec![f32::NAN; want.len()];
                    let split = oh / 2;
                    let (top, bottom) = o.split_at_mut(split * ow * c_out);
                    gconv.rows(isa, &padded, (hp, wp), 0..split, top, rr);
                    let rb = fused.map(|_| &r_hwc[split * ow * c_out..]);
                    gconv.rows(isa, &padded, (hp, wp), split..oh, bottom, rb);
                    assert_eq!(bits(&o), bits(&hwc), "{isa} {p:?}");
                }
            }
        }
    }
}
