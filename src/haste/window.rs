//! The input window of an output patch: which input pixels a patch's outputs read, and
//! which of them lie inside the image.

use crate::kernels::direct::Live;
use crate::kernels::isa::Isa;
use crate::ops::Conv2dParams;

/// The input window of one output patch. Window coordinates `(r, c)` start at image pixel
/// `(iy, ix)` (negative inside the top/left padding); the window is `h x w`, and only rows
/// `r0..r1` and columns `c0..c1` lie inside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub iy: isize,
    pub ix: isize,
    pub h: usize,
    pub w: usize,
    pub r0: usize,
    pub r1: usize,
    pub c0: usize,
    pub c1: usize,
}

impl Window {
    /// The window of output rows `oy0..oy0 + ph` and columns `ox0..ox0 + pw`.
    pub fn of_patch(
        p: &Conv2dParams,
        (h, w): (usize, usize),
        (oy0, ph): (usize, usize),
        (ox0, pw): (usize, usize),
    ) -> Window {
        let iy = (oy0 * p.stride.0) as isize - p.pads[0] as isize;
        let ix = (ox0 * p.stride.1) as isize - p.pads[1] as isize;
        let wh = (ph - 1) * p.stride.0 + p.kh;
        let ww = (pw - 1) * p.stride.1 + p.kw;
        let clip = |start: isize, len: usize, size: usize| {
            let lo = (-start).clamp(0, len as isize) as usize;
            let hi = (size as isize - start).clamp(lo as isize, len as isize) as usize;
            (lo, hi)
        };
        let (r0, mut r1) = clip(iy, wh, h);
        let (c0, mut c1) = clip(ix, ww, w);
        if r0 == r1 || c0 == c1 {
            // Nothing of the image in the window (it lies in the padding): no pixel at all.
            (r1, c1) = (r0, c0);
        }
        Window {
            iy,
            ix,
            h: wh,
            w: ww,
            r0,
            r1,
            c0,
            c1,
        }
    }

    /// The window rows and columns inside the image.
    pub fn live(&self) -> Live {
        Live {
            rows: (self.r0, self.r1),
            cols: (self.c0, self.c1),
        }
    }

    /// Pixels of the window inside the image.
    pub fn present(&self) -> usize {
        (self.r1 - self.r0) * (self.c1 - self.c0)
    }

    /// Whether window pixel `(r, c)` lies inside the image.
    pub fn has(&self, r: usize, c: usize) -> bool {
        r >= self.r0 && r < self.r1 && c >= self.c0 && c < self.c1
    }

    /// Copies the window out of the pixel-major image `hwc` (width `img_w`, `c` channels) into
    /// `dst` as `[fh][fw][c]` (a frame at least the window's size: the hyperplanes' window,
    /// which an edge patch's is smaller than), zeros where the window lies outside the image
    /// and in the frame past the window.
    #[inline(always)]
    pub fn copy_into(
        &self,
        hwc: &[f32],
        img_w: usize,
        c: usize,
        (fh, fw): (usize, usize),
        dst: &mut [f32],
    ) {
        assert!(self.h <= fh && self.w <= fw, "window larger than its frame");
        let dst = &mut dst[..fh * fw * c];
        if !self.covers((fh, fw)) {
            dst.fill(0.0);
        }
        let span = (self.c1 - self.c0) * c;
        for r in self.r0..self.r1 {
            let iy = (self.iy + r as isize) as usize;
            let ix = (self.ix + self.c0 as isize) as usize;
            dst[(r * fw + self.c0) * c..][..span]
                .copy_from_slice(&hwc[(iy * img_w + ix) * c..][..span]);
        }
    }

    /// Copies the window alone into `dst` in a frame's layout (rows `fw` pixels apart, `fw`
    /// at least the window's width), zeros where it lies outside the image; the frame past
    /// the window is left as it was (nothing reads it: see `WindowTerms::within`).
    ///
    /// The same pass scans what it copies, so that nothing reads the window again for it:
    /// `bits[ch]` gets the or of channel `ch`'s values' bits but the sign (zero exactly when
    /// the channel is +0 or -0 at every pixel, see [`zero_channels`]), and the result says
    /// whether every value is finite. As separate passes over the copy, these two cost 0.3
    /// cycles per channel and window pixel on ResNet-18's HASTE layers, more than the copy.
    /// `isa` is the tier the caller is compiled for: AVX-512's 32 vector registers hold the
    /// scan of 128 or 256 channels (8 or 16 blocks and their maximum), fewer would spill it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn copy_window_scanning(
        &self,
        hwc: &[f32],
        img_w: usize,
        c: usize,
        fw: usize,
        dst: &mut [f32],
        bits: &mut Vec<u32>,
        isa: Isa,
    ) -> bool {
        assert!(self.w <= fw, "window wider than its frame");
        bits.clear();
        bits.resize(c, 0);
        let dst = &mut dst[..(self.h.max(1) - 1) * fw * c + self.w * c];
        let span = (self.c1 - self.c0) * c;
        // The largest value's bits shifted past the sign: a non-finite value's exponent is
        // all ones, so it is at least `0xff00_0000` exactly when some value is not finite.
        for r in 0..self.h {
            let row = &mut dst[r * fw * c..][..self.w * c];
            if r < self.r0 || r >= self.r1 || span == 0 {
                row.fill(0.0);
                continue;
            }
            row[..self.c0 * c].fill(0.0);
            row[self.c1 * c..].fill(0.0);
        }
        let rows = (self.r0..self.r1).filter(|_| span > 0).map(|r| {
            let iy = (self.iy + r as isize) as usize;
            let ix = (self.ix + self.c0 as isize) as usize;
            ((iy * img_w + ix) * c, (r * fw + self.c0) * c)
        });
        let largest = match c {
            16 => copy_scanning_narrow::<1>(hwc, dst, rows, span, bits),
            32 => copy_scanning_narrow::<2>(hwc, dst, rows, span, bits),
            48 => copy_scanning_narrow::<3>(hwc, dst, rows, span, bits),
            64 => copy_scanning_narrow::<4>(hwc, dst, rows, span, bits),
            128 if isa == Isa::Avx512 => copy_scanning_narrow::<8>(hwc, dst, rows, span, bits),
            256 if isa == Isa::Avx512 => copy_scanning_narrow::<16>(hwc, dst, rows, span, bits),
            _ => copy_scanning(hwc, dst, rows, span, c, bits),
        };
        largest < 0xff00_0000
    }

    /// Whether every pixel of a `(fh, fw)` window is present.
    pub fn covers(&self, (fh, fw): (usize, usize)) -> bool {
        self.r0 == 0 && self.c0 == 0 && self.r1 == fh && self.c1 == fw
    }
}

/// The channels zero at every pixel, from the bits [`Window::copy_window_scanning`] or-ed:
/// `zero[ch]` for each of `bits`. A NaN is not zero.
pub fn zero_channels(bits: &[u32], zero: &mut Vec<bool>) {
    zero.clear();
    zero.extend(bits.iter().map(|&b| b == 0));
}

/// Channels a block of [`copy_scanning`] keeps its or and maximum of in registers.
const SCAN_BLOCK: usize = 16;

/// [`copy_scanning`] for `16 * NB` channels: every channel's or in registers over the whole
/// window, and the copy in the same loop (a row of a narrow window is a few hundred bytes,
/// where a call to copy it cost more than the copy; on AVX-512, 128 and 256 channels' rows
/// copied whole by `memmove` and then scanned took 1.3-1.6x as long, hot in cache).
#[inline(always)]
fn copy_scanning_narrow<const NB: usize>(
    src: &[f32],
    dst: &mut [f32],
    rows: impl Iterator<Item = (usize, usize)>,
    span: usize,
    bits: &mut [u32],
) -> u32 {
    let c = NB * SCAN_BLOCK;
    let mut or = [[0u32; SCAN_BLOCK]; NB];
    let mut largest = [0u32; SCAN_BLOCK];
    for (from, to) in rows {
        let (s, d) = (&src[from..from + span], &mut dst[to..to + span]);
        for (s, d) in s.chunks_exact(c).zip(d.chunks_exact_mut(c)) {
            for (k, or) in or.iter_mut().enumerate() {
                let x: &[f32; SCAN_BLOCK] = s[k * SCAN_BLOCK..][..SCAN_BLOCK]
                    .try_into()
                    .expect("a block");
                d[k * SCAN_BLOCK..][..SCAN_BLOCK].copy_from_slice(x);
                let b = x.map(|x| x.to_bits() << 1);
                for j in 0..SCAN_BLOCK {
                    or[j] |= b[j];
                    largest[j] = largest[j].max(b[j]);
                }
            }
        }
    }
    for (k, or) in or.iter().enumerate() {
        bits[k * SCAN_BLOCK..][..SCAN_BLOCK].copy_from_slice(or);
    }
    largest.into_iter().fold(0, u32::max)
}

/// Copies `span` floats (pixels of `c` channels) from each `(from, to)` of `rows`, `src` to
/// `dst`, or-ing each channel's bits but the sign into `bits[ch]`; returns the largest of
/// those shifted bits. Each row is copied whole (the image streams in order, as the
/// prefetchers like; channel blocks outer over the image ran at half the copy's speed), then
/// scanned from the copy while it is in L1, a block of channels at a time: the block's or
/// is read and written once per row, the maximum stays in a register.
#[inline(always)]
fn copy_scanning(
    src: &[f32],
    dst: &mut [f32],
    rows: impl Iterator<Item = (usize, usize)>,
    span: usize,
    c: usize,
    bits: &mut [u32],
) -> u32 {
    let bits = &mut bits[..c];
    let blocks = c / SCAN_BLOCK;
    let tail = blocks * SCAN_BLOCK;
    let mut largest = [0u32; SCAN_BLOCK];
    let mut most = 0u32;
    for (from, to) in rows {
        let d = &mut dst[to..to + span];
        d.copy_from_slice(&src[from..from + span]);
        for k in 0..blocks {
            let or: &mut [u32; SCAN_BLOCK] = (&mut bits[k * SCAN_BLOCK..][..SCAN_BLOCK])
                .try_into()
                .expect("a block");
            let mut acc = *or;
            for px in d.chunks_exact(c) {
                let x: &[f32; SCAN_BLOCK] = px[k * SCAN_BLOCK..][..SCAN_BLOCK]
                    .try_into()
                    .expect("a block");
                let b = x.map(|x| x.to_bits() << 1);
                for j in 0..SCAN_BLOCK {
                    acc[j] |= b[j];
                    largest[j] = largest[j].max(b[j]);
                }
            }
            *or = acc;
        }
        if tail < c {
            for px in d.chunks_exact(c) {
                for (&x, o) in px[tail..].iter().zip(&mut bits[tail..]) {
                    let b = x.to_bits() << 1;
                    *o |= b;
                    most = most.max(b);
                }
            }
        }
    }
    largest.into_iter().fold(most, u32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scanning copy writes what `copy_into` writes over the window, and its bits and
    /// finiteness are those of plain loops over the window: for interior and edge windows,
    /// channel counts with and without a partial block, zero channels, -0, NaN and infinity.
    #[test]
    fn the_scanning_copy_copies_and_finds_zero_and_non_finite_channels() {
        let p = Conv2dParams {
            c_in: 0,
            c_out: 1,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            pads: [1, 1, 1, 1],
            dilation: (1, 1),
            groups: 1,
        };
        let (h, w) = (9, 7);
        let tiers = [Isa::current(); 8].into_iter().chain([Isa::Avx512; 2]);
        for (c, isa) in [3, 16, 32, 35, 48, 64, 80, 128, 128, 256]
            .into_iter()
            .zip(tiers)
        {
            for poison in [None, Some(f32::NAN), Some(f32::INFINITY)] {
                // Channel 1 is zero everywhere (some -0), channel 2 only near the corner.
                let mut hwc: Vec<f32> = (0..h * w * c)
                    .map(|i| ((i * 7919) % 13) as f32 - 6.0)
                    .collect();
                for (px, v) in hwc.chunks_exact_mut(c).enumerate() {
                    v[1] = if px % 2 == 0 { 0.0 } else { -0.0 };
                    if c > 2 && px > 2 {
                        v[2] = 0.0;
                    }
                }
                if let Some(x) = poison {
                    hwc[(4 * w + 5) * c + c - 1] = x;
                }
                for (oy0, ox0) in [(0, 0), (3, 2), (6, 4)] {
                    let win = Window::of_patch(&p, (h, w), (oy0, 4.min(h - oy0)), (ox0, 3));
                    let fw = win.w + 2;
                    let frame = (win.h, fw);
                    let mut want = vec![0.0f32; win.h * fw * c];
                    win.copy_into(&hwc, w, c, frame, &mut want);
                    let mut got = vec![1.0f32; win.h * fw * c];
                    let mut bits = Vec::new();
                    let finite = win.copy_window_scanning(&hwc, w, c, fw, &mut got, &mut bits, isa);
                    for r in 0..win.h {
                        let row = r * fw * c..(r * fw + win.w) * c;
                        let (g, x) = (&got[row.clone()], &want[row]);
                        assert!(g.iter().zip(x).all(|(a, b)| a.to_bits() == b.to_bits()));
                    }
                    let window: Vec<&[f32]> = (0..win.h)
                        .flat_map(|r| want[r * fw * c..][..win.w * c].chunks_exact(c))
                        .collect();
                    for ch in 0..c {
                        let zero = window.iter().all(|px| px[ch] == 0.0);
                        assert_eq!(bits[ch] == 0, zero, "c {c} channel {ch} at {oy0},{ox0}");
                    }
                    let all_finite = window.iter().all(|px| px.iter().all(|x| x.is_finite()));
                    assert_eq!(finite, all_finite, "c {c} at {oy0},{ox0}");
                }
            }
        }
    }
}
