//! Pillow's bilinear resample for 8-bit RGB images, bit for bit.
//!
//! This is a re-implementation of Pillow's `ImagingResample` (`src/libImaging/Resample.c`) with
//! the `BILINEAR` filter and the default box `(0, 0, in_w, in_h)`:
//!
//! * two separable passes, horizontal first, then vertical, except (since Pillow 13) when the
//!   height shrinks by more than twice as many pixels as the width; a pass is skipped when that
//!   dimension keeps its size (Pillow's `need_horizontal` / `need_vertical`);
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

/// Horizontal pass over `rows` rows of an RGB8 image `src_w` wide starting at row `row_lo`:
/// output `i` of row `r` uses source columns `c.start[i] - col_base ..` of that row.
fn h_pass(
    src: &[u8],
    src_w: usize,
    row_lo: usize,
    rows: usize,
    c: &Coeffs,
    col_base: usize,
    out: &mut [u8],
) {
    let w = c.start.len();
    for r in 0..rows {
        let src_row = &src[3 * src_w * (row_lo + r)..3 * src_w * (row_lo + r + 1)];
        let dst_row = &mut out[3 * w * r..3 * w * (r + 1)];
        for (i, px) in dst_row.chunks_exact_mut(3).enumerate() {
            let (start, k) = c.taps(i);
            let s = start - col_base;
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (p, &kk) in src_row[3 * s..3 * (s + k.len())].chunks_exact(3).zip(k) {
                s0 += i32::from(p[0]) * kk;
                s1 += i32::from(p[1]) * kk;
                s2 += i32::from(p[2]) * kk;
            }
            px[0] = clip8(s0);
            px[1] = clip8(s1);
            px[2] = clip8(s2);
        }
    }
}

/// Vertical pass over columns `col_lo .. col_lo + ncols` of an RGB8 image `src_w` wide:
/// output row `i` uses source rows `c.start[i] - row_base ..`.
fn v_pass(
    src: &[u8],
    src_w: usize,
    c: &Coeffs,
    row_base: usize,
    col_lo: usize,
    ncols: usize,
    out: &mut [u8],
) {
    let mut acc = vec![0i32; 3 * ncols];
    for i in 0..c.start.len() {
        let (start, k) = c.taps(i);
        acc.fill(HALF);
        for (j, &kk) in k.iter().enumerate() {
            let r = start + j - row_base;
            let t = &src[3 * (src_w * r + col_lo)..3 * (src_w * r + col_lo + ncols)];
            for (a, &p) in acc.iter_mut().zip(t) {
                *a += i32::from(p) * kk;
            }
        }
        for (o, &a) in out[3 * ncols * i..3 * ncols * (i + 1)].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// Range of source indices the taps of `c` read.
fn tap_range(c: &Coeffs) -> (usize, usize) {
    let n = c.start.len();
    let lo = (0..n).map(|i| c.start[i]).min().unwrap_or(0);
    let hi = (0..n).map(|i| c.start[i] + c.count[i]).max().unwrap_or(lo);
    (lo, hi)
}

/// Writes the window `(x0, y0, w, h)` of the Pillow-bilinear resize of `src` (`in_w x in_h`,
/// RGB8) to `out_w x out_h` into `out` (`3 * w * h` bytes, RGB8, row-major). The window must
/// lie inside the resized image.
///
/// Pass order follows Pillow 13 (`ImagingResampleInner`): horizontal first, unless the height
/// shrinks by more than twice as many pixels as the width
/// (`in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w)`), then vertical first. (Pillow
/// before 13 always ran the horizontal pass first; the results differ by at most 1 in those
/// vertical-first cases. Resizes that grow the height, like 227 -> 256, are the same.)
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
    let dh = in_h as i64 - out_h as i64;
    let dw = in_w as i64 - out_w as i64;
    let horizontal_first = !(dh > 0 && dh > dw * 2);
    let horiz = need_h.then(|| Coeffs::new(in_w, out_w, x0, w));
    let vert = need_v.then(|| Coeffs::new(in_h, out_h, y0, h));

    match (&horiz, &vert) {
        (None, None) => {
            for r in 0..h {
                let s = 3 * (in_w * (y0 + r) + x0);
                out[3 * w * r..3 * w * (r + 1)].copy_from_slice(&src[s..s + 3 * w]);
            }
        }
        (Some(hc), None) => h_pass(src, in_w, y0, h, hc, 0, out),
        (None, Some(vc)) => v_pass(src, in_w, vc, 0, x0, w, out),
        (Some(hc), Some(vc)) if horizontal_first => {
            // Only the source rows the window's output rows read.
            let (row_lo, row_hi) = tap_range(vc);
            let rows = row_hi - row_lo;
            let mut tmp = vec![0u8; 3 * w * rows];
            h_pass(src, in_w, row_lo, rows, hc, 0, &mut tmp);
            v_pass(&tmp, w, vc, row_lo, 0, w, out);
        }
        (Some(hc), Some(vc)) => {
            // Only the source columns the window's output columns read.
            let (col_lo, col_hi) = tap_range(hc);
            let cols = col_hi - col_lo;
            let mut tmp = vec![0u8; 3 * cols * h];
            v_pass(src, in_w, vc, 0, col_lo, cols, &mut tmp);
            h_pass(&tmp, cols, 0, h, hc, col_lo, out);
        }
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

    fn pattern(w: usize, h: usize) -> Vec<u8> {
        (0..3 * w * h)
            .map(|i| ((i * 37 + i / 5 + (i / 11) * (i % 7)) % 256) as u8)
            .collect()
    }

    #[test]
    fn pass_order_follows_pillow_13() {
        // Height shrinks by more than twice the width change: vertical pass first.
        let (iw, ih, ow, oh) = (9, 67, 24, 28);
        let src = pattern(iw, ih);
        let direct = resize_bilinear_rgb8(&src, iw, ih, ow, oh);
        let v = resize_bilinear_rgb8(&src, iw, ih, iw, oh);
        assert_eq!(direct, resize_bilinear_rgb8(&v, iw, oh, ow, oh));
        // Otherwise horizontal first.
        let (iw, ih, ow, oh) = (30, 20, 12, 15);
        let src = pattern(iw, ih);
        let direct = resize_bilinear_rgb8(&src, iw, ih, ow, oh);
        let hz = resize_bilinear_rgb8(&src, iw, ih, ow, ih);
        assert_eq!(direct, resize_bilinear_rgb8(&hz, ow, ih, ow, oh));
    }

    #[test]
    fn window_equals_crop_of_full_resize_vertical_first() {
        let (iw, ih, ow, oh) = (23, 61, 31, 12);
        let src = pattern(iw, ih);
        let full = resize_bilinear_rgb8(&src, iw, ih, ow, oh);
        let (x0, y0, w, h) = (6, 2, 19, 9);
        let mut win = vec![0u8; 3 * w * h];
        resize_window(&src, iw, ih, ow, oh, (x0, y0, w, h), &mut win);
        for y in 0..h {
            let a = &full[3 * ((y0 + y) * ow + x0)..3 * ((y0 + y) * ow + x0 + w)];
            assert_eq!(&win[3 * w * y..3 * w * (y + 1)], a);
        }
    }
}
