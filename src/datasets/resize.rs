//! Pillow's bilinear resample for 8-bit RGB images, bit for bit.
//!
//! This is a re-implementation of Pillow's `ImagingResample` (`src/libImaging/Resample.c`) with
//! the `BILINEAR` filter and the default box `(0, 0, in_w, in_h)`:
//!
//! * two separable passes, horizontal first, then vertical; a pass is skipped when that dimension
//!   keeps its size (Pillow's `need_horizontal` / `need_vertical`);
//! * for each output index `o`: `scale = in / out`, `filterscale = max(scale, 1)`,
//!   `support = 1 * filterscale`, `center = (o + 0.5) * scale`,
//!   taps `xmin = trunc(center - support + 0.5)` (clamped to 0) up to
//!   `trunc(center + support + 0.5)` (clamped to `in`), weight
//!   `tri((x - center + 0.5) / filterscale)`, weights normalized to sum 1;
//! * weights are turned into fixed point with `PRECISION_BITS = 32 - 8 - 2 = 22`
//!   (`trunc(0.5 + w * 2^22)`), each output is `(2^21 + sum(p * w)) >> 22` clipped to `0..=255`,
//!   and the intermediate image is stored as `u8` (rounded and clipped after each pass).
//!
//! [`resize_window`] computes only a rectangular window of the resized image (what a following
//! center crop keeps); every pixel of the window is identical to the full resize.

/// Fixed-point precision of Pillow's 8-bit resampler.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point filter taps for one axis: for output `o`, input pixels `start[o] ..
/// start[o] + count[o]` weighted by `weights[o * ksize ..][.. count[o]]`.
#[derive(Debug, Clone)]
pub(crate) struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<i32>,
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter, for
    /// outputs `first .. first + n` of a resize from `in_size` to `out_size`.
    fn new(in_size: usize, out_size: usize, first: usize, n: usize) -> Coeffs {
        // Pillow keeps the box in f32 and computes `(double)(in1 - in0) / outSize`.
        let in1 = in_size as f32;
        let scale = f64::from(in1 - 0.0f32) / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = 1.0 * filterscale;
        let ksize = (support.ceil() as usize) * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut start = Vec::with_capacity(n);
        let mut count = Vec::with_capacity(n);
        let mut weights = vec![0i32; n * ksize];
        let mut w = vec![0f64; ksize];
        for (i, o) in (first..first + n).enumerate() {
            let center = 0.0 + (o as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero, as does `as i64`.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let cnt = (xmax - xmin).max(0) as usize;
            let mut ww = 0.0;
            for (x, slot) in w.iter_mut().enumerate().take(cnt) {
                let v = bilinear_filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                *slot = v;
                ww += v;
            }
            let row = &mut weights[i * ksize..(i + 1) * ksize];
            for (dst, &k) in row.iter_mut().zip(&w).take(cnt) {
                let k = if ww != 0.0 { k / ww } else { k };
                let f = k * f64::from(1u32 << PRECISION_BITS);
                *dst = if k < 0.0 {
                    (-0.5 + f) as i32
                } else {
                    (0.5 + f) as i32
                };
            }
            start.push(xmin as usize);
            count.push(cnt);
        }
        Coeffs {
            ksize,
            start,
            count,
            weights,
        }
    }

    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let k = &self.weights[i * self.ksize..i * self.ksize + self.count[i]];
        (self.start[i], k)
    }
}

#[inline]
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes an interleaved RGB8 image (`src.len() == 3 * in_w * in_h`) to `out_w x out_h` with
/// Pillow's bilinear filter (`Image.resize((out_w, out_h), Image.BILINEAR)`), bit-exact.
///
/// ```
/// use haste::datasets::resize_bilinear_rgb8;
/// let src = [0u8, 0, 0, 255, 255, 255]; // 2x1: black, white
/// let out = resize_bilinear_rgb8(&src, 2, 1, 4, 1);
/// assert_eq!(out, vec![0, 0, 0, 64, 64, 64, 191, 191, 191, 255, 255, 255]);
/// ```
///
/// # Panics
/// If `src` does not hold `3 * in_w * in_h` bytes or a size is zero.
pub fn resize_bilinear_rgb8(
    src: &[u8],
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; 3 * out_w * out_h];
    resize_window(
        src,
        in_w,
        in_h,
        out_w,
        out_h,
        (0, 0, out_w, out_h),
        &mut out,
    );
    out
}

/// Writes the window `(x0, y0, w, h)` of the Pillow-bilinear resize of `src` (`in_w x in_h`,
/// RGB8) to `out_w x out_h` into `out` (`3 * w * h` bytes, RGB8, row-major). The window must
/// lie inside the resized image.
///
/// # Panics
/// If the buffers have the wrong length, a size is zero or the window does not fit.
pub(crate) fn resize_window(
    src: &[u8],
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
    window: (usize, usize, usize, usize),
    out: &mut [u8],
) {
    let (x0, y0, w, h) = window;
    assert!(
        in_w > 0 && in_h > 0 && out_w > 0 && out_h > 0,
        "zero image size"
    );
    assert_eq!(src.len(), 3 * in_w * in_h, "source buffer length");
    assert_eq!(out.len(), 3 * w * h, "output buffer length");
    assert!(
        x0 + w <= out_w && y0 + h <= out_h,
        "window outside the resized image"
    );
    if w == 0 || h == 0 {
        return;
    }
    let need_h = out_w != in_w;
    let need_v = out_h != in_h;

    // Source rows needed by the window's output rows.
    let vert = need_v.then(|| Coeffs::new(in_h, out_h, y0, h));
    let (row_lo, row_hi) = match &vert {
        Some(c) => {
            let lo = (0..h).map(|i| c.start[i]).min().unwrap_or(0);
            let hi = (0..h).map(|i| c.start[i] + c.count[i]).max().unwrap_or(0);
            (lo, hi)
        }
        None => (y0, y0 + h),
    };

    // Horizontal pass (or a plain copy of the window's columns) over rows row_lo..row_hi.
    let rows = row_hi - row_lo;
    let mut tmp = vec![0u8; 3 * w * rows];
    if need_h {
        let horiz = Coeffs::new(in_w, out_w, x0, w);
        for r in 0..rows {
            let src_row = &src[3 * in_w * (row_lo + r)..3 * in_w * (row_lo + r + 1)];
            let dst_row = &mut tmp[3 * w * r..3 * w * (r + 1)];
            for (i, px) in dst_row.chunks_exact_mut(3).enumerate() {
                let (start, k) = horiz.taps(i);
                let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
                for (j, &kk) in k.iter().enumerate() {
                    let p = &src_row[3 * (start + j)..3 * (start + j) + 3];
                    s0 += i32::from(p[0]) * kk;
                    s1 += i32::from(p[1]) * kk;
                    s2 += i32::from(p[2]) * kk;
                }
                px[0] = clip8(s0);
                px[1] = clip8(s1);
                px[2] = clip8(s2);
            }
        }
    } else {
        for r in 0..rows {
            let s = 3 * (in_w * (row_lo + r) + x0);
            tmp[3 * w * r..3 * w * (r + 1)].copy_from_slice(&src[s..s + 3 * w]);
        }
    }

    // Vertical pass (or a copy).
    match &vert {
        Some(c) => {
            let mut acc = vec![0i32; 3 * w];
            for i in 0..h {
                let (start, k) = c.taps(i);
                acc.fill(HALF);
                for (j, &kk) in k.iter().enumerate() {
                    let r = start + j - row_lo;
                    let t = &tmp[3 * w * r..3 * w * (r + 1)];
                    for (a, &p) in acc.iter_mut().zip(t) {
                        *a += i32::from(p) * kk;
                    }
                }
                for (o, &a) in out[3 * w * i..3 * w * (i + 1)].iter_mut().zip(&acc) {
                    *o = clip8(a);
                }
            }
        }
        None => out.copy_from_slice(&tmp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(v: &[u8]) -> Vec<u8> {
        v.iter().flat_map(|&p| [p, p, p]).collect()
    }

    fn chan0(v: &[u8]) -> Vec<u8> {
        v.chunks(3).map(|p| p[0]).collect()
    }

    #[test]
    fn same_size_is_identity() {
        let src: Vec<u8> = (0..3 * 5 * 4).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_bilinear_rgb8(&src, 5, 4, 5, 4), src);
    }

    #[test]
    fn upscale_2x_by_hand() {
        // 2 -> 4: scale 0.5, support 1. Output 0: center 0.25, one tap (x=0) -> 0.
        // Output 1: center 0.75, taps x=0 (tri(-0.25) = 0.75), x=1 (tri(0.75) = 0.25)
        // -> 0.25 * 255 = 63.75 -> 64. Output 2 mirrors it: 191.25 -> 191. Output 3 -> 255.
        let out = resize_bilinear_rgb8(&gray(&[0, 255]), 2, 1, 4, 1);
        assert_eq!(chan0(&out), vec![0, 64, 191, 255]);
    }

    #[test]
    fn downscale_2x_averages_pairs() {
        // 4 -> 2: scale 2, support 2, center 1.0: taps x=0..=2 with weights tri((x-0.5)/2)
        // = 0.75, 0.75, 0.25 -> normalized 3/7, 3/7, 1/7.
        let out = resize_bilinear_rgb8(&gray(&[10, 20, 30, 40]), 4, 1, 2, 1);
        // (3*10 + 3*20 + 30) / 7 = 120/7 = 17.14 -> 17; (20 + 3*30 + 3*40)/7 = 230/7 = 32.86 -> 33
        assert_eq!(chan0(&out), vec![17, 33]);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 3 * 7 * 5];
        let out = resize_bilinear_rgb8(&src, 7, 5, 13, 3);
        assert!(out.iter().all(|&p| p == 77));
    }

    #[test]
    fn vertical_only_matches_transposed_horizontal() {
        let col = gray(&[0, 100, 200]);
        let v = resize_bilinear_rgb8(&col, 1, 3, 1, 5);
        let h = resize_bilinear_rgb8(&col, 3, 1, 5, 1);
        assert_eq!(v, h);
    }

    #[test]
    fn window_equals_crop_of_full_resize() {
        let (iw, ih, ow, oh) = (23, 17, 31, 12);
        let src: Vec<u8> = (0..3 * iw * ih)
            .map(|i| ((i * 37 + i / 5) % 256) as u8)
            .collect();
        let full = resize_bilinear_rgb8(&src, iw, ih, ow, oh);
        let (x0, y0, w, h) = (5, 3, 20, 7);
        let mut win = vec![0u8; 3 * w * h];
        resize_window(&src, iw, ih, ow, oh, (x0, y0, w, h), &mut win);
        for y in 0..h {
            let a = &full[3 * ((y0 + y) * ow + x0)..3 * ((y0 + y) * ow + x0 + w)];
            assert_eq!(&win[3 * w * y..3 * w * (y + 1)], a);
        }
    }
}
