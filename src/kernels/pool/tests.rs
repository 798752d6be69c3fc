//! Pooling against plain loops, in both memory orders and on every tier.

use super::*;

#[test]
fn max_pool_2x2() {
    let p = PoolParams {
        kernel: (2, 2),
        stride: (2, 2),
        pads: [0; 4],
        dilation: (1, 1),
        ceil_mode: false,
        count_include_pad: false,
    };
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let mut out = [0.0; 4];
    pool_plane(&p, true, &x, 4, 4, &mut out);
    assert_eq!(out, [5.0, 7.0, 13.0, 15.0]);
    pool_plane(&p, false, &x, 4, 4, &mut out);
    assert_eq!(out, [2.5, 4.5, 10.5, 12.5]);
}

#[test]
fn fast_max_matches_general_loop() {
    let x: Vec<f32> = (0..63).map(|v| ((v * 37 % 23) as f32) - 11.0).collect();
    for &(k, s, pad, ceil) in &[
        (2, 2, 0, false),
        (3, 2, 1, false),
        (3, 2, 1, true),
        (2, 1, 1, true),
    ] {
        let p = PoolParams {
            kernel: (k, k),
            stride: (s, s),
            pads: [pad; 4],
            dilation: (1, 1),
            ceil_mode: ceil,
            count_include_pad: false,
        };
        for (h, w) in [(7, 9), (6, 8)] {
            let (oh, ow) = p.out_hw(h, w);
            let mut fast = vec![0.0; oh * ow];
            max_plane(&p, &x, h, w, &mut fast);
            let mut slow = vec![0.0; oh * ow];
            general_max(&p, &x, h, w, &mut slow);
            assert_eq!(fast, slow, "{p:?} {h}x{w}");
        }
    }
}

fn general_max(p: &PoolParams, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
    let (oh, ow) = p.out_hw(h, w);
    for oy in 0..oh {
        for ox in 0..ow {
            let mut m = f32::NEG_INFINITY;
            for ky in 0..p.kernel.0 {
                for kx in 0..p.kernel.1 {
                    let iy = (oy * p.stride.0 + ky) as isize - p.pads[0] as isize;
                    let ix = (ox * p.stride.1 + kx) as isize - p.pads[1] as isize;
                    if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                        m = m.max(x[iy as usize * w + ix as usize]);
                    }
                }
            }
            out[oy * ow + ox] = m;
        }
    }
}

fn params(k: usize, s: usize, pads: [usize; 4], ceil: bool, include: bool) -> PoolParams {
    PoolParams {
        kernel: (k, k),
        stride: (s, s),
        pads,
        dilation: (1, 1),
        ceil_mode: ceil,
        count_include_pad: include,
    }
}

/// Deterministic values in [-1, 1) with some exact ties (xorshift, no test dependency).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) % 61) as f32 / 30.0 - 1.0
        })
        .collect()
}

/// `[c][h][w]` planes pooled one by one with [`pool_plane`], the reference of the
/// pixel-major kernels.
fn pool_planes(p: &PoolParams, max: bool, x: &[f32], (c, h, w): (usize, usize, usize)) -> Vec<f32> {
    let (oh, ow) = p.out_hw(h, w);
    let mut out = vec![f32::NAN; c * oh * ow];
    for (o, xi) in out
        .chunks_exact_mut(oh * ow)
        .zip(x.chunks_exact(h * w))
        .take(c)
    {
        pool_plane(p, max, xi, h, w, o);
    }
    out
}

/// [`pool_hwc`] on the transposed input, transposed back to `[c][oh][ow]`.
fn pool_pixels(p: &PoolParams, max: bool, x: &[f32], (c, h, w): (usize, usize, usize)) -> Vec<f32> {
    use crate::kernels::layout::{nchw_to_nhwc, nhwc_to_nchw};
    let (oh, ow) = p.out_hw(h, w);
    let mut hwc = vec![0.0; c * h * w];
    nchw_to_nhwc(x, c, h * w, &mut hwc);
    let mut pix = vec![f32::NAN; c * oh * ow];
    pool_hwc(p, max, &hwc, (h, w, c), &mut pix);
    let mut back = vec![f32::NAN; c * oh * ow];
    nhwc_to_nchw(&pix, c, oh * ow, &mut back);
    back
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Every combination of kernel, stride, (asymmetric) padding, dilation, ceil mode and
/// divisor rule on several image sizes and channel counts: the pixel-major kernel gives
/// the planes' bits (same windows, same summation order, same divisor), and any split of
/// the output rows gives the same rows.
#[test]
fn pixel_major_pooling_matches_the_planes_over_a_grid() {
    let mut cases = 0;
    for kernel in [(2, 2), (3, 3), (2, 3)] {
        for stride in [(1, 1), (2, 2), (1, 2)] {
            for pads in [[0; 4], [1; 4], [0, 1, 1, 0], [1, 0, 0, 1], [2, 1, 0, 2]] {
                // ONNX: a pad is smaller than the kernel along its axis.
                if pads[0].max(pads[2]) >= kernel.0 || pads[1].max(pads[3]) >= kernel.1 {
                    continue;
                }
                for dilation in [(1, 1), (2, 1)] {
                    for ceil_mode in [false, true] {
                        for count_include_pad in [false, true] {
                            let p = PoolParams {
                                kernel,
                                stride,
                                pads,
                                dilation,
                                ceil_mode,
                                count_include_pad,
                            };
                            for (c, h, w) in [
                                (1, 7, 9),
                                (3, 8, 8),
                                (8, 4, 5),
                                (17, 6, 7),
                                (2, 3, 2),
                                (16, 5, 4),
                                (80, 4, 6),
                            ] {
                                let (oh, ow) = p.out_hw(h, w);
                                if oh == 0 || ow == 0 {
                                    continue;
                                }
                                let x = values(c * h * w, (cases + 1) as u64);
                                for max in [true, false] {
                                    let want = pool_planes(&p, max, &x, (c, h, w));
                                    assert!(want.iter().all(|v| v.is_finite()), "{p:?}");
                                    let got = pool_pixels(&p, max, &x, (c, h, w));
                                    assert_eq!(
                                        bits(&got),
                                        bits(&want),
                                        "{p:?} max={max} {c}x{h}x{w}"
                                    );
                                    cases += 1;
                                }
                                rows_split_like_the_whole(&p, &x, (c, h, w));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(cases > 1000, "{cases} cases");
}

/// [`pool_hwc_rows`] at every split point of the output rows equals [`pool_hwc`].
fn rows_split_like_the_whole(p: &PoolParams, x: &[f32], (c, h, w): (usize, usize, usize)) {
    let (oh, ow) = p.out_hw(h, w);
    let mut hwc = vec![0.0; c * h * w];
    crate::kernels::layout::nchw_to_nhwc(x, c, h * w, &mut hwc);
    for max in [true, false] {
        let mut whole = vec![f32::NAN; oh * ow * c];
        pool_hwc(p, max, &hwc, (h, w, c), &mut whole);
        for split in 0..=oh {
            let mut parts = vec![f32::NAN; oh * ow * c];
            let (top, bottom) = parts.split_at_mut(split * ow * c);
            pool_hwc_rows(p, max, &hwc, (h, w, c), 0..split, top);
            pool_hwc_rows(p, max, &hwc, (h, w, c), split..oh, bottom);
            assert_eq!(
                bits(&parts),
                bits(&whole),
                "{p:?} max={max} split at {split}"
            );
        }
    }
}

/// The pixel-major mean sums each channel in the same order as [`mean`] does its plane
/// and divides by the same count, so the two agree exactly (`==`, which also equates the
/// zeros of different signs an all-zero plane may give).
#[test]
fn pixel_major_mean_equals_the_planes_mean() {
    // Channel counts of 4 vectors and more, and not a multiple of 16 (the AVX2 vectors).
    let shapes = [(1, 1), (3, 5), (16, 64), (17, 49), (8, 1000), (32, 4100)];
    for (c, hw) in shapes.into_iter().chain([(96, 70), (144, 130), (80, 65)]) {
        let x = values(c * hw, (c * hw) as u64);
        let mut hwc = vec![0.0; c * hw];
        crate::kernels::layout::nchw_to_nhwc(&x, c, hw, &mut hwc);
        let mut got = vec![f32::NAN; c];
        mean_hwc(&hwc, hw, c, &mut got);
        for (ch, g) in got.iter().enumerate() {
            let want = mean(&x[ch * hw..][..hw]);
            assert!(*g == want, "{c}x{hw} channel {ch}: {g} vs {want}");
        }
        // Its parts on the rayon pool: the same bits.
        let mut parallel = vec![f32::NAN; c];
        mean_hwc_parts(&hwc, hw, c, &mut parallel, true);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&parallel), bits(&got), "{c}x{hw} in parallel");
    }
}

/// Whether output `(oy, ox)`'s window covers input pixel `(y, x)`, from the window's
/// definition alone.
fn window_covers(p: &PoolParams, (oy, ox): (usize, usize), (y, x): (usize, usize)) -> bool {
    let hit = |o: usize, i: usize, s: usize, d: usize, k: usize, pad: usize| {
        (0..k).any(|t| o * s + t * d == i + pad)
    };
    hit(oy, y, p.stride.0, p.dilation.0, p.kernel.0, p.pads[0])
        && hit(ox, x, p.stride.1, p.dilation.1, p.kernel.1, p.pads[1])
}

/// A NaN anywhere in a max-pooling window makes that output NaN, whatever its position in
/// the window and even beside a +inf, in the planes' fast 2x2 stride-2 path, their clipped
/// path and general (dilated) loop, and the pixel-major kernels; every other output keeps
/// the bits it has without the NaN.
#[test]
fn max_pooling_propagates_nan_from_every_position() {
    for c in [3, 16] {
        nan_propagates_from_every_position(c);
    }
}

/// The vector 2x2 kernel against the scalar one, bit for bit, on values that tell the
/// operand orders apart: +0 against -0, NaNs with different payloads in both operands,
/// and infinities.
#[test]
fn vector_2x2_max_gives_the_scalar_bits() {
    let specials = [
        0.0,
        -0.0,
        f32::NAN,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(0xffc0_0042),
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.5,
        -1.5,
    ];
    let (c, h, w) = (48, 6, 8);
    let x: Vec<f32> = (0..c * h * w)
        .map(|i| specials[(i * 7919 + i / 5) % specials.len()])
        .collect();
    let (oh, ow) = (h / 2, w / 2);
    let mut scalar = vec![0.0; oh * ow * c];
    for (r, orow) in (0..oh).zip(scalar.chunks_exact_mut(ow * c)) {
        for (ox, px) in orow.chunks_exact_mut(c).enumerate() {
            for (k, o) in px.iter_mut().enumerate() {
                let at = |y: usize, x_: usize| x[(y * w + x_) * c + k];
                let (y, x0) = (2 * r, 2 * ox);
                *o = nan_max(
                    nan_max(at(y, x0), at(y, x0 + 1)),
                    nan_max(at(y + 1, x0), at(y + 1, x0 + 1)),
                );
            }
        }
    }
    let mut tiers = 0;
    for isa in Isa::available() {
        let Some(tier) = VectorTier::new(isa, c) else {
            continue;
        };
        let mut vector = vec![0.0; oh * ow * c];
        tier.max_2x2_stride2_hwc(&x, (w, c), 0..oh, ow, &mut vector);
        assert_eq!(bits(&vector), bits(&scalar), "{isa}");
        tiers += 1;
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    assert!(tiers > 0, "no vector tier ran");
    assert!(
        scalar.iter().any(|v| v.to_bits() == 0x8000_0000),
        "a -0 result"
    );
}

fn nan_propagates_from_every_position(c: usize) {
    let (h, w) = (6, 6);
    let ch = 1; // the channel holding the NaN
    let mut fast_path = 0;
    for p in [
        params(2, 2, [0; 4], false, false),
        params(3, 1, [1; 4], false, false),
        params(3, 2, [1, 0, 1, 1], true, false),
        PoolParams {
            dilation: (2, 2),
            ..params(2, 2, [1; 4], false, false)
        },
    ] {
        let (oh, ow) = p.out_hw(h, w);
        for y in 0..h {
            for x in 0..w {
                let mut clean = values(c * h * w, 7);
                // A +inf beside the NaN: a window holding both must still give NaN.
                clean[ch * h * w + y * w + (x + 1) % w] = f32::INFINITY;
                let mut dirty = clean.clone();
                dirty[ch * h * w + y * w + x] = f32::NAN;
                let want = pool_planes(&p, true, &clean, (c, h, w));
                for got in [
                    pool_planes(&p, true, &dirty, (c, h, w)),
                    pool_pixels(&p, true, &dirty, (c, h, w)),
                ] {
                    for (i, (g, v)) in got.iter().zip(&want).enumerate() {
                        let (k, oy, ox) = (i / (oh * ow), i / ow % oh, i % ow);
                        if k == ch && window_covers(&p, (oy, ox), (y, x)) {
                            assert!(
                                g.is_nan(),
                                "{p:?} NaN at ({y}, {x}): output ({oy}, {ox}) is {g}"
                            );
                        } else {
                            assert_eq!(
                                g.to_bits(),
                                v.to_bits(),
                                "{p:?} NaN at ({y}, {x}): output {k} ({oy}, {ox})"
                            );
                        }
                    }
                }
            }
        }
        if p.kernel == (2, 2) && p.stride == (2, 2) && p.pads == [0; 4] && p.dilation == (1, 1) {
            fast_path += 1;
        }
    }
    assert_eq!(fast_path, 1, "the 2x2 stride-2 fast path is covered");
}
