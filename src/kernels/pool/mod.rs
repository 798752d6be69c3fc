//! Pooling over NCHW planes and pixel-major images (max pooling vectorized per tier in
//! `tier.rs`).

mod tier;

use crate::kernels::isa::Isa;
use crate::ops::PoolParams;
use tier::VectorTier;

/// Max or average pooling of one `h` x `w` plane into an `oh` x `ow` plane.
pub fn pool_plane(p: &PoolParams, max: bool, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
    if max && p.dilation == (1, 1) {
        return max_plane(p, x, h, w, out);
    }
    let (oh, ow) = p.out_hw(h, w);
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
            let mut count = 0usize;
            for ky in 0..p.kernel.0 {
                let iy = (oy * p.stride.0 + ky * p.dilation.0) as isize - p.pads[0] as isize;
                for kx in 0..p.kernel.1 {
                    let ix = (ox * p.stride.1 + kx * p.dilation.1) as isize - p.pads[1] as isize;
                    let inside = iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize;
                    if inside {
                        let v = x[iy as usize * w + ix as usize];
                        if max {
                            acc = nan_max(acc, v);
                        } else {
                            acc += v;
                        }
                        count += 1;
                    } else if p.count_include_pad
                        && iy < (h + p.pads[2]) as isize
                        && ix < (w + p.pads[3]) as isize
                    {
                        count += 1;
                    }
                }
            }
            out[oy * ow + ox] = if max { acc } else { acc / count.max(1) as f32 };
        }
    }
}

/// Max pooling without dilation: each window is clipped to the image once, then scanned row
/// by row without per-pixel bounds checks. A window entirely in the padding gives -inf, as
/// in [`pool_plane`]'s general loop.
fn max_plane(p: &PoolParams, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
    let (oh, ow) = p.out_hw(h, w);
    if p.kernel == (2, 2) && p.stride == (2, 2) && p.pads == [0; 4] && 2 * oh <= h && 2 * ow <= w {
        return max_2x2_stride2(x, w, oh, ow, out);
    }
    let clip = |o: usize, s: usize, pad: usize, k: usize, size: usize| {
        let start = (o * s) as isize - pad as isize;
        let lo = start.clamp(0, size as isize) as usize;
        let hi = (start + k as isize).clamp(lo as isize, size as isize) as usize;
        lo..hi
    };
    for (oy, orow) in out.chunks_exact_mut(ow).take(oh).enumerate() {
        orow.fill(f32::NEG_INFINITY);
        for iy in clip(oy, p.stride.0, p.pads[0], p.kernel.0, h) {
            let row = &x[iy * w..(iy + 1) * w];
            for (ox, o) in orow.iter_mut().enumerate() {
                let span = clip(ox, p.stride.1, p.pads[1], p.kernel.1, w);
                *o = row[span].iter().fold(*o, |m, &v| nan_max(m, v));
            }
        }
    }
}

/// The common 2x2 stride-2 max pool: two input rows per output row, pairs of columns, no
/// clipping (every window lies inside the image).
fn max_2x2_stride2(x: &[f32], w: usize, oh: usize, ow: usize, out: &mut [f32]) {
    for (oy, orow) in out.chunks_exact_mut(ow).take(oh).enumerate() {
        let top = &x[2 * oy * w..2 * oy * w + 2 * ow];
        let bottom = &x[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
        for ((o, a), b) in orow
            .iter_mut()
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            *o = nan_max(nan_max(a[0], a[1]), nan_max(b[0], b[1]));
        }
    }
}

/// Mean of a plane: summed in parts of [`MEAN_PART_PIXELS`], the parts' sums added in
/// order, as [`mean_hwc_parts`] sums each channel (so both memory orders give the same bits).
pub fn mean(x: &[f32]) -> f32 {
    let mut parts = x.chunks(MEAN_PART_PIXELS).map(|p| p.iter().sum::<f32>());
    let first = parts.next().unwrap_or(0.0);
    parts.fold(first, |a, s| a + s) / x.len().max(1) as f32
}

/// Max or average pooling of one pixel-major image `x = [h][w][c]` into `out = [oh][ow][c]`:
/// the same windows, padding and divisor rules as [`pool_plane`], each step a vector
/// operation over channels. A NaN in a max-pooling window gives NaN.
pub fn pool_hwc(
    p: &PoolParams,
    max: bool,
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    out: &mut [f32],
) {
    let (oh, _) = p.out_hw(h, w);
    pool_hwc_rows(p, max, x, (h, w, c), 0..oh, out);
}

/// [`pool_hwc`] for output rows `rows` only; `out` holds exactly those rows.
pub fn pool_hwc_rows(
    p: &PoolParams,
    max: bool,
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let (oh, ow) = p.out_hw(h, w);
    let simple_2x2 = p.kernel == (2, 2) && p.stride == (2, 2) && p.pads == [0; 4];
    if max && simple_2x2 && p.dilation == (1, 1) && 2 * oh <= h && 2 * ow <= w {
        return max_2x2_stride2_hwc(x, (w, c), rows, ow, out);
    }
    if max && vector_max(c, |t| t.max_hwc(p, x, (h, w, c), rows.clone(), out)) {
        return;
    }
    // The plain loop compiled for the wider vectors where the CPU has them (the same
    // additions in the same order, so the same bits): at baseline x86-64 it ran four
    // lanes, and Inception v3's 3 x 3 average pools took twice onnxruntime's time.
    #[cfg(target_arch = "x86_64")]
    match Isa::current() {
        // SAFETY: the CPU runs the tier `Isa::current` names.
        Isa::Avx512 => return unsafe { windows_hwc_avx512(p, max, x, (h, w, c), rows, out) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { windows_hwc_avx2(p, max, x, (h, w, c), rows, out) },
        _ => {}
    }
    windows_hwc(p, max, x, (h, w, c), rows, out)
}

/// [`windows_hwc`] compiled for AVX-512.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn windows_hwc_avx512(
    p: &PoolParams,
    max: bool,
    x: &[f32],
    hwc: (usize, usize, usize),
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    windows_hwc(p, max, x, hwc, rows, out)
}

/// [`windows_hwc`] compiled for AVX2.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn windows_hwc_avx2(
    p: &PoolParams,
    max: bool,
    x: &[f32],
    hwc: (usize, usize, usize),
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    windows_hwc(p, max, x, hwc, rows, out)
}

/// [`pool_hwc_rows`] window by window: each output pixel's channels summed (or maxed) over
/// the window's pixels in order.
#[inline(always)]
fn windows_hwc(
    p: &PoolParams,
    max: bool,
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let ow = p.out_hw(h, w).1;
    for (o, px) in out[..rows.len() * ow * c].chunks_exact_mut(c).enumerate() {
        let (oy, ox) = (rows.start + o / ow, o % ow);
        px.fill(if max { f32::NEG_INFINITY } else { 0.0 });
        let mut count = 0usize;
        for ky in 0..p.kernel.0 {
            let iy = (oy * p.stride.0 + ky * p.dilation.0) as isize - p.pads[0] as isize;
            for kx in 0..p.kernel.1 {
                let ix = (ox * p.stride.1 + kx * p.dilation.1) as isize - p.pads[1] as isize;
                if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                    let src = &x[(iy as usize * w + ix as usize) * c..][..c];
                    if max {
                        for (m, &v) in px.iter_mut().zip(src) {
                            *m = nan_max(*m, v);
                        }
                    } else {
                        px.iter_mut().zip(src).for_each(|(a, &v)| *a += v);
                    }
                    count += 1;
                } else if p.count_include_pad
                    && iy < (h + p.pads[2]) as isize
                    && ix < (w + p.pads[3]) as isize
                {
                    count += 1;
                }
            }
        }
        if !max {
            let count = count.max(1) as f32;
            px.iter_mut().for_each(|v| *v /= count);
        }
    }
}

/// The common 2x2 stride-2 max pool on a pixel-major image: each output pixel is the
/// elementwise max of four input pixels' channel rows (every window inside the image).
fn max_2x2_stride2_hwc(
    x: &[f32],
    (w, c): (usize, usize),
    rows: std::ops::Range<usize>,
    ow: usize,
    out: &mut [f32],
) {
    if vector_max(c, |t| {
        t.max_2x2_stride2_hwc(x, (w, c), rows.clone(), ow, out)
    }) {
        return;
    }
    for (r, orow) in rows.zip(out.chunks_exact_mut(ow * c)) {
        let top = &x[2 * r * w * c..][..2 * ow * c];
        let bottom = &x[(2 * r + 1) * w * c..][..2 * ow * c];
        for (ox, px) in orow.chunks_exact_mut(c).enumerate() {
            let (a, b) = (&top[2 * ox * c..][..2 * c], &bottom[2 * ox * c..][..2 * c]);
            for (k, o) in px.iter_mut().enumerate() {
                *o = nan_max(nan_max(a[k], a[c + k]), nan_max(b[k], b[c + k]));
            }
        }
    }
}

/// Runs `f` on the vector tier [`Isa::current`] gives for `c` channels, if there is one.
fn vector_max(c: usize, f: impl FnOnce(VectorTier)) -> bool {
    VectorTier::new(Isa::current(), c).map(f).is_some()
}

/// Per-channel mean of a pixel-major image `x = [hw][c]` into `out = [c]`.
pub fn mean_hwc(x: &[f32], hw: usize, c: usize, out: &mut [f32]) {
    mean_hwc_parts(x, hw, c, out, false);
}

/// Pixels per part of [`mean_hwc_parts`].
pub const MEAN_PART_PIXELS: usize = 64;

/// [`mean_hwc`] with the image's pixels summed in parts of [`MEAN_PART_PIXELS`], each into
/// its own row of sums, and the rows then added in order; with `parallel` the parts run on
/// the rayon pool's threads (at batch 1, one core took 0.4 ms to read a 112 x 112 x 96
/// map). The parts do not depend on who runs them, so both give the same bits.
pub fn mean_hwc_parts(x: &[f32], hw: usize, c: usize, out: &mut [f32], parallel: bool) {
    use rayon::prelude::*;
    let out = &mut out[..c];
    let parts = hw.div_ceil(MEAN_PART_PIXELS).max(1);
    let mut sums = vec![0.0f32; parts * c];
    let tier = VectorTier::new(Isa::current(), c);
    let sum_part = |(k, s): (usize, &mut [f32])| {
        let px = &x[k * MEAN_PART_PIXELS * c..hw.min((k + 1) * MEAN_PART_PIXELS) * c];
        match tier {
            Some(t) => t.sum_pixels(px, c, s),
            None => {
                for px in px.chunks_exact(c) {
                    s.iter_mut().zip(px).for_each(|(a, &v)| *a += v);
                }
            }
        }
    };
    // Maps under 256 KB are summed on one thread: a split costs more than it saves.
    if parallel && parts > 1 && hw * c >= 1 << 16 {
        sums.par_chunks_mut(c).enumerate().for_each(sum_part);
    } else {
        sums.chunks_mut(c).enumerate().for_each(sum_part);
    }
    out.copy_from_slice(&sums[..c]);
    for s in sums[c..].chunks_exact(c) {
        out.iter_mut().zip(s).for_each(|(a, &v)| *a += v);
    }
    let n = hw.max(1) as f32;
    out.iter_mut().for_each(|v| *v /= n);
}

/// The larger of `m` and `v`, NaN if either is NaN (as max pooling in PyTorch and
/// onnxruntime).
#[inline(always)]
pub fn nan_max(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

#[cfg(test)]
mod tests;
