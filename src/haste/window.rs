//! The input window of an output patch: which input pixels a patch's outputs read, and
//! which of them lie inside the image.

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
    #[inline(always)]
    pub fn copy_window_into(
        &self,
        hwc: &[f32],
        img_w: usize,
        c: usize,
        fw: usize,
        dst: &mut [f32],
    ) {
        assert!(self.w <= fw, "window wider than its frame");
        let dst = &mut dst[..(self.h.max(1) - 1) * fw * c + self.w * c];
        let span = (self.c1 - self.c0) * c;
        for r in 0..self.h {
            let row = &mut dst[r * fw * c..][..self.w * c];
            if r < self.r0 || r >= self.r1 || span == 0 {
                row.fill(0.0);
                continue;
            }
            let iy = (self.iy + r as isize) as usize;
            let ix = (self.ix + self.c0 as isize) as usize;
            row[..self.c0 * c].fill(0.0);
            row[self.c0 * c..][..span].copy_from_slice(&hwc[(iy * img_w + ix) * c..][..span]);
            row[self.c1 * c..].fill(0.0);
        }
    }

    /// Whether every pixel of a `(fh, fw)` window is present.
    pub fn covers(&self, (fh, fw): (usize, usize)) -> bool {
        self.r0 == 0 && self.c0 == 0 && self.r1 == fh && self.c1 == fw
    }
}

/// Which of the `c` channels are zero (of either sign) at every pixel of the top-left
/// `(h, w)` of a copied window whose rows are `fw` pixels apart, into `zero[..c]` (`bits`
/// is scratch). A NaN is not zero. Inlined into the layer's instruction-set copies, so the
/// loop runs in their vector width.
#[inline(always)]
pub fn zero_channels(
    buf: &[f32],
    c: usize,
    fw: usize,
    (h, w): (usize, usize),
    bits: &mut Vec<u32>,
    zero: &mut Vec<bool>,
) {
    bits.clear();
    bits.resize(c, 0);
    // The bits of every value but the sign, or-ed: zero only for +0 and -0.
    if c <= 64 && c.is_multiple_of(16) {
        // Narrow layers: each 16 channels' bits in a register over all the pixels (in
        // memory, each pixel waited on the previous one's store: a 16-channel window cost
        // 0.4 cycles per channel and pixel).
        for (k, out) in bits.chunks_exact_mut(16).enumerate() {
            let mut acc = [0u32; 16];
            for r in (0..h).filter(|_| w > 0) {
                // Pixel `i`'s 16 channels start `i * c` in: the last one ends the row.
                for px in buf[r * fw * c + 16 * k..][..(w - 1) * c + 16].chunks(c) {
                    let px: &[f32; 16] = px[..16].try_into().expect("16 channels");
                    for (a, &x) in acc.iter_mut().zip(px) {
                        *a |= x.to_bits() << 1;
                    }
                }
            }
            out.copy_from_slice(&acc);
        }
    } else {
        // Wide layers: many independent vectors per pixel; one pass over the window.
        for r in 0..h {
            for px in buf[r * fw * c..][..w * c].chunks_exact(c) {
                for (b, &x) in bits.iter_mut().zip(px) {
                    *b |= x.to_bits() << 1;
                }
            }
        }
    }
    zero.clear();
    zero.extend(bits.iter().map(|&b| b == 0));
}
