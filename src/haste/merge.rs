//! Step 4: merge. Channels of a bucket are replaced by their mean (input merge), and the
//! matching input-channel slices of every filter are summed (filter merge):
//!
//! `x'_b = mean_{c in b} x_c` over the window, `W'[co, b] = sum_{c in b} W[co, c]`, so that
//! `sum_b W'[co, b] * x'_b = sum_c W[co, c] * x_c` exactly when the channels of each bucket are
//! equal, and approximately when they are similar.
//!
//! Layouts (chosen so the reduced convolution is one row-major GEMM with contiguous copies):
//! - merged window `[win_h][win_w][B]` (pixel-major, zeros at padding),
//! - transposed im2col `[P*P][(ky, kx, b)]`: output pixel `j`'s receptive field, where each
//!   kernel row `ky` is one contiguous span `kw * B` of the merged window,
//! - weights `[(ky, kx)][c_in][c_out]` and merged filters `[(ky, kx)][B][c_out]`: each
//!   channel's slice for a kernel tap is a contiguous `c_out` vector, so merging is vector adds.

use super::buckets::{Buckets, NO_BUCKET};
use super::window::Window;

/// Input merge: writes the merged window `[win.h][win.w][B]` of the HWC image `hwc` (width
/// `img_w`, `c` channels) into `mwin`, zeros where the window lies outside the image.
#[inline(always)]
pub fn merge_input(
    hwc: &[f32],
    img_w: usize,
    c: usize,
    win: &Window,
    buckets: &Buckets,
    mwin: &mut [f32],
) {
    let nb = buckets.count();
    let mwin = &mut mwin[..win.h * win.w * nb];
    let present_all = win.r0 == 0 && win.c0 == 0 && win.r1 == win.h && win.c1 == win.w;
    if !present_all {
        mwin.fill(0.0);
    }
    if buckets.all_singletons() {
        let span = (win.c1 - win.c0) * c;
        for r in win.r0..win.r1 {
            let iy = (win.iy + r as isize) as usize;
            let ix = (win.ix + win.c0 as isize) as usize;
            mwin[(r * win.w + win.c0) * c..][..span]
                .copy_from_slice(&hwc[(iy * img_w + ix) * c..][..span]);
        }
        return;
    }
    let order = buckets.order();
    let starts = buckets.starts();
    let inv_size = buckets.inv_sizes();
    for r in win.r0..win.r1 {
        let iy = (win.iy + r as isize) as usize;
        for col in win.c0..win.c1 {
            let ix = (win.ix + col as isize) as usize;
            let src = &hwc[(iy * img_w + ix) * c..][..c];
            let dst = &mut mwin[(r * win.w + col) * nb..][..nb];
            // Gather per bucket: independent sums, in increasing channel order.
            for (b, d) in dst.iter_mut().enumerate() {
                let members = &order[starts[b] as usize..starts[b + 1] as usize];
                let mut sum = src[members[0] as usize];
                for &m in &members[1..] {
                    sum += src[m as usize];
                }
                *d = sum * inv_size[b];
            }
        }
    }
}

/// Filter merge: `wm[(kk * nb + b) * c_out + co] = sum_{c in b} wt[(kk * c_in + c) * c_out + co]`
/// for the `taps = kh * kw` kernel taps.
#[inline(always)]
pub fn merge_filters(
    wt: &[f32],
    c_in: usize,
    c_out: usize,
    taps: usize,
    buckets: &Buckets,
    wm: &mut [f32],
) {
    let nb = buckets.count();
    let bucket_of = buckets.bucket_of();
    for kk in 0..taps {
        // One streaming pass over the tap's weights, adding each channel's slice into its
        // bucket's row (rows stay in L1), channels in increasing order. Buckets are numbered
        // by first channel, so a channel opens its bucket exactly when `b == next`.
        let tap = &wt[kk * c_in * c_out..][..c_in * c_out];
        let block = &mut wm[kk * nb * c_out..][..nb * c_out];
        let mut next = 0u32;
        for (src, &b) in tap.chunks_exact(c_out).zip(bucket_of) {
            if b == NO_BUCKET {
                continue;
            }
            let dst = &mut block[b as usize * c_out..][..c_out];
            if b == next {
                dst.copy_from_slice(src);
                next += 1;
            } else {
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d += v;
                }
            }
        }
    }
}

/// Input merge in full-channel layout (what [`crate::kernels::direct`] reads): copies the window of
/// the HWC image into `win_buf` as `[win.h][win.w][c]` (zeros outside the image) and writes
/// the mean of every bucket with more than one channel into the slot of its first channel.
/// The means are bit-identical to [`merge_input`]'s. `multi` lists those buckets.
#[inline(always)]
pub fn merge_input_in_place(
    hwc: &[f32],
    img_w: usize,
    c: usize,
    win: &Window,
    buckets: &Buckets,
    multi: &[u32],
    win_buf: &mut [f32],
) {
    win.copy_into(hwc, img_w, c, (win.h, win.w), win_buf);
    average_buckets_in_place(c, win, win.w, buckets, multi, win_buf);
}

/// The second half of [`merge_input_in_place`], on a window already copied (rows of `row`
/// pixels, see [`Window::copy_into`]): each bucket of `multi`'s mean into its first
/// channel's slot at every pixel inside the image. Bucket by bucket, then pixel by pixel,
/// the members' sum kept in a register; buckets of 2, 3 and 4 channels (most of them) have
/// their additions written out, so no loop runs a data-dependent number of times inside the
/// pixel loop (walking the buckets inside the pixels cost a mispredicted branch per bucket
/// and pixel). Each mean adds its members in increasing order, as [`merge_input`] does.
#[inline(always)]
pub fn average_buckets_in_place(
    c: usize,
    win: &Window,
    row: usize,
    buckets: &Buckets,
    multi: &[u32],
    win_buf: &mut [f32],
) {
    let buf = &mut win_buf[..win.h * row * c];
    if win.r0 >= win.r1 || win.c0 >= win.c1 {
        return;
    }
    // Every pixel read below lies inside `buf`: its last present pixel ends there; and
    // every member is a channel below `c` (buckets hold the channels they were grouped
    // from).
    assert!(((win.r1 - 1) * row + win.c1) * c <= buf.len());
    assert!(buckets.bucket_of().len() <= c);
    // Rows of the window at a time when it is larger than L1 can hold beside the rest (a
    // 512-channel window of 9 x 9 pixels is 166 KB): every bucket over a band of rows reads
    // the band from L1, where bucket after bucket over the whole window read each pixel's
    // lines from L2 again (one scalar per line per member).
    let row_bytes = (win.c1 - win.c0) * c * std::mem::size_of::<f32>();
    let band = (MERGE_BAND_BYTES / row_bytes.max(1)).max(1);
    for r0 in (win.r0..win.r1).step_by(band) {
        let rows = Window {
            r0,
            r1: win.r1.min(r0 + band),
            ..*win
        };
        // SAFETY: the band's pixels are the window's (asserted above).
        unsafe { average_band(c, &rows, row, buckets, multi, buf) };
    }
}

/// Window bytes [`average_buckets_in_place`] merges at a time.
const MERGE_BAND_BYTES: usize = 16 * 1024;

/// [`average_buckets_in_place`] on the present pixels of `win`.
///
/// # Safety
/// Every present pixel of `win` lies inside `buf`, and every member is a channel below `c`.
#[inline(always)]
unsafe fn average_band(
    c: usize,
    win: &Window,
    row: usize,
    buckets: &Buckets,
    multi: &[u32],
    buf: &mut [f32],
) {
    let inv_size = buckets.inv_sizes();
    let base = buf.as_mut_ptr();
    for &b in multi {
        let m = buckets.members(b as usize);
        let inv = inv_size[b as usize];
        let first = m[0] as usize;
        // SAFETY (every closure): `o` is a present pixel's offset, so `o + k < buf.len()`
        // for every channel `k < c` (asserted above).
        unsafe {
            match *m {
                [_, m1] => {
                    let m1 = m1 as usize;
                    for_present_pixels(win, row, c, |o| {
                        let p = base.add(o);
                        *p.add(first) = (*p.add(first) + *p.add(m1)) * inv
                    });
                }
                [_, m1, m2] => {
                    let (m1, m2) = (m1 as usize, m2 as usize);
                    for_present_pixels(win, row, c, |o| {
                        let p = base.add(o);
                        *p.add(first) = (*p.add(first) + *p.add(m1) + *p.add(m2)) * inv
                    });
                }
                [_, m1, m2, m3] => {
                    let (m1, m2, m3) = (m1 as usize, m2 as usize, m3 as usize);
                    for_present_pixels(win, row, c, |o| {
                        let p = base.add(o);
                        let s = *p.add(first) + *p.add(m1) + *p.add(m2) + *p.add(m3);
                        *p.add(first) = s * inv
                    });
                }
                _ => {
                    // Eight pixels at a time: eight independent chains of additions, each
                    // member's index read once for them (one pixel at a time, a bucket of
                    // 30 channels waited on 29 dependent additions per pixel).
                    let mut at = [0usize; 8];
                    let mut n = 0;
                    for_present_pixels(win, row, c, |o| {
                        at[n] = o;
                        n += 1;
                        if n == 8 {
                            mean_at_pixels(base, &at, 8, m, inv);
                            n = 0;
                        }
                    });
                    if n > 0 {
                        mean_at_pixels(base, &at, n, m, inv);
                    }
                }
            }
        }
    }
}

/// The mean of `members` (increasing, the first one's slot written) at the pixels at offsets
/// `at[..n]` from `base`, each sum in member order.
///
/// # Safety
/// Every `at[j] + member` (for `j < 8`: the unused offsets are read too) lies in the window.
#[inline(always)]
unsafe fn mean_at_pixels(base: *mut f32, at: &[usize; 8], n: usize, members: &[u32], inv: f32) {
    let first = members[0] as usize;
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut sum: [f32; 8] = std::array::from_fn(|j| *base.add(at[j] + first));
        for &k in &members[1..] {
            for (s, &o) in sum.iter_mut().zip(at) {
                *s += *base.add(o + k as usize);
            }
        }
        for (&s, &o) in sum.iter().zip(at).take(n) {
            *base.add(o + first) = s * inv;
        }
    }
}

/// Calls `f` with the offset of every pixel of `win` inside the image in a copied window of
/// rows of `row` pixels and `c` channels.
#[inline(always)]
fn for_present_pixels(win: &Window, row: usize, c: usize, mut f: impl FnMut(usize)) {
    for r in win.r0..win.r1 {
        let start = (r * row + win.c0) * c;
        for k in 0..win.c1 - win.c0 {
            f(start + k * c);
        }
    }
}

/// Filter merge of the buckets in `multi` only, for one panel of `panel` output channels
/// (`wt_panel = [(ky, kx)][c_in][panel]`; with `panel = c_out` the whole tap-major bank),
/// into `wm`, laid out as `wt_panel` (`taps * c_in * panel` values): for the `m`-th bucket
/// of `multi` and tap `kk`, row `kk * c_in + m` becomes the sum of its channels' rows,
/// summed in increasing channel order (the same bits as [`merge_filters`]). So a bucket's
/// rows sit one tap stride apart, as a weight row's do, and the kernel needs one pointer
/// per bucket; and each tap's merged rows are contiguous (at the first channels' slots
/// they spread over a bank of 2.4 MB for 256 -> 256, and the merge and the kernel waited on
/// the lines). Singleton buckets are not copied: the kernel reads `wt_panel`; the other
/// rows of `wm` are not touched.
#[inline(always)]
pub fn merge_filter_rows(
    wt_panel: &[f32],
    c_in: usize,
    panel: usize,
    taps: usize,
    buckets: &Buckets,
    multi: &[u32],
    wm: &mut [f32],
) {
    for (m, &b) in multi.iter().enumerate() {
        let members = buckets.members(b as usize);
        for kk in 0..taps {
            let tap = &wt_panel[kk * c_in * panel..][..c_in * panel];
            let dst = &mut wm[(kk * c_in + m) * panel..][..panel];
            // A whole 64-channel panel row (four AVX-512 registers), then 16 columns, at a
            // time, summed in registers over the members (in order), so each sum is stored
            // once (a sum kept in memory costs a load and a store per member); then the
            // columns left over. Wide chunks keep the bookkeeping per row small: at 16 columns
            // it cost more than the additions.
            let mut col = 0;
            while col + 64 <= panel {
                sum_rows::<64>(tap, panel, col, members, &mut dst[col..col + 64]);
                col += 64;
            }
            while col + 16 <= panel {
                sum_rows::<16>(tap, panel, col, members, &mut dst[col..col + 16]);
                col += 16;
            }
            for col in col..panel {
                let mut acc = tap[members[0] as usize * panel + col];
                for &c in &members[1..] {
                    acc += tap[c as usize * panel + col];
                }
                dst[col] = acc;
            }
        }
    }
}

/// `dst[i] = sum over members c (in order) of tap[c * panel + col + i]`, for `W` columns.
#[inline(always)]
fn sum_rows<const W: usize>(
    tap: &[f32],
    panel: usize,
    col: usize,
    members: &[u32],
    dst: &mut [f32],
) {
    let row = |c: u32| -> &[f32; W] {
        tap[c as usize * panel + col..][..W]
            .try_into()
            .expect("W columns")
    };
    let mut acc = *row(members[0]);
    for &c in &members[1..] {
        for (a, &v) in acc.iter_mut().zip(row(c)) {
            *a += v;
        }
    }
    dst.copy_from_slice(&acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place means the layer computes against the plain compact merge, bit for bit:
    /// buckets of 1 to 11 channels (the large ones eight pixels at a time), a window partly
    /// outside the image (present pixels not a multiple of eight).
    #[test]
    fn in_place_means_are_the_plain_ones() {
        use crate::ops::Conv2dParams;
        let (c, img) = (29usize, 9usize);
        let keys: Vec<super::super::hash::Key> = (0..c)
            .map(|ch| [0, 1, 2, 1, 0, 3, 0, 4, 0, 0, 0][ch % 11] as u128)
            .collect();
        let mut buckets = Buckets::default();
        buckets.group(&keys);
        assert!((0..buckets.count()).any(|b| buckets.size(b) > 8));
        let multi: Vec<u32> = (0..buckets.count() as u32)
            .filter(|&b| buckets.size(b as usize) > 1)
            .collect();
        let hwc: Vec<f32> = (0..img * img * c)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 3.1e-3)
            .collect();
        let p = Conv2dParams::new(c, 4, 3, 3).with_pads([1; 4]);
        let win = Window::of_patch(&p, (img, img), (6, 3), (0, 2));
        assert!(!win.present().is_multiple_of(8) && win.present() < win.h * win.w);
        let nb = buckets.count();
        let mut plain = vec![0.0f32; win.h * win.w * nb];
        merge_input(&hwc, img, c, &win, &buckets, &mut plain);
        let mut in_place = vec![0.0f32; win.h * win.w * c];
        merge_input_in_place(&hwc, img, c, &win, &buckets, &multi, &mut in_place);
        for px in 0..win.h * win.w {
            for b in 0..nb {
                let first = buckets.members(b)[0] as usize;
                let (a, e) = (in_place[px * c + first], plain[px * nb + b]);
                assert_eq!(a.to_bits(), e.to_bits(), "pixel {px}, bucket {b}");
            }
        }
    }

    /// The filter merge the layer runs against the plain one, bit for bit, on weights with
    /// zeros of both signs and buckets of 1 to 5 channels; no row past the merged touched.
    #[test]
    fn row_merge_gives_the_plain_sums() {
        let (c_in, panel, taps) = (23usize, 80usize, 9usize);
        let keys: Vec<super::super::hash::Key> = (0..c_in)
            .map(|c| [0, 1, 2, 3, 1, 5, 0, 7][c % 8] + (c / 16) as u128 * 8)
            .collect();
        let mut buckets = Buckets::default();
        buckets.group(&keys);
        let multi: Vec<u32> = (0..buckets.count() as u32)
            .filter(|&b| buckets.size(b as usize) > 1)
            .collect();
        let wt: Vec<f32> = (0..taps * c_in * panel)
            .map(|i| match i % 7 {
                0 => -0.0,
                1 => 0.0,
                _ => ((i * 7919 % 1013) as f32 - 506.0) * 1.7e-3,
            })
            .collect();
        let nb = buckets.count();
        let mut want = vec![0.0f32; taps * nb * panel];
        merge_filters(&wt, c_in, panel, taps, &buckets, &mut want);
        let sentinel = 12345.0f32;
        let mut got = vec![sentinel; taps * c_in * panel];
        merge_filter_rows(&wt, c_in, panel, taps, &buckets, &multi, &mut got);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for kk in 0..taps {
            for (m, &b) in multi.iter().enumerate() {
                let row = &got[(kk * c_in + m) * panel..][..panel];
                let plain = &want[(kk * nb + b as usize) * panel..][..panel];
                assert_eq!(bits(row), bits(plain), "tap {kk}, bucket {b}");
            }
            let rest = &got[(kk * c_in + multi.len()) * panel..(kk + 1) * c_in * panel];
            assert!(
                rest.iter().all(|&v| v == sentinel),
                "rows past the merged written"
            );
        }
        assert!(multi.iter().any(|&b| buckets.size(b as usize) >= 3));
    }
}
