//! The direct kernel against the reference convolution, on every tier, over geometries.

use super::passes::GROUP_FILTER_BUDGET;
use super::*;
use crate::kernels::isa::assert_tier_result;
use crate::kernels::layout::{self, IoLayout};
use crate::ops::{Activation, Conv2dParams, ConvOp};

/// Runs the kernel on tier `isa` into a fresh copy of `out`.
pub(super) fn run_on(
    isa: Isa,
    g: &Geom,
    win: &[f32],
    f: Filters,
    e: Epilogue,
    out: &[f32],
) -> Vec<f32> {
    let mut o = out.to_vec();
    assert!(g.fits(o.len()));
    // SAFETY: the tests give whole windows and filters; `isa` is supported.
    unsafe { conv_at_on(isa, g, win, f, e, o.as_mut_ptr()) };
    o
}

/// Listed-channel filters (HASTE's form) over output counts that leave every block shape
/// of each tier a rest: every tier gives the portable kernel's bits.
#[test]
fn every_tier_matches_generic_bitwise() {
    {
        for &(c_in, c_out, ph, pw) in &[
            (5usize, 3usize, 3usize, 2usize),
            (20, 40, 4, 4),
            (7, 16, 3, 3),
            (9, 33, 1, 5),
            (9, 70, 3, 5),
            (9, 112, 3, 5),
            (16, 128, 2, 7),
            (12, 192, 4, 4),
            // 49 and 8 outputs: the last full block and the one or two left over run
            // as 4 + 3 and 4 + 4.
            (6, 64, 7, 7),
            (5, 70, 2, 4),
            // Around the 12 outputs from which row filters take 64-channel blocks: 12 as
            // two 6 x 64 blocks, 11 and 10 as 8 x 32 blocks.
            (10, 64, 4, 3),
            (10, 64, 1, 11),
            (10, 64, 2, 5),
            // AVX2: 24 and 12 channels (a masked last vector), 7 outputs (6 + 1).
            (4, 24, 3, 5),
            (6, 12, 1, 7),
            // Narrow HASTE patches of rows of 4, 8 and 16: blocks of 16 outputs (12: masked).
            (9, 16, 4, 4),
            (5, 12, 8, 4),
            (9, 16, 2, 8),
            (6, 12, 3, 16),
            (7, 16, 6, 8),
            // Patches of 36 outputs or more with 1024 terms or more (120 or 267 buckets x 9
            // taps): 6 x 64 blocks, 64 channels and a rest, one pass or passes by kernel
            // row.
            (180, 64, 6, 6),
            (180, 70, 7, 7),
            (400, 128, 6, 7),
        ] {
            let (kh, kw, sh, sw) = (3, 3, 1, 1);
            let (wh, ww) = ((ph - 1) * sh + kh, (pw - 1) * sw + kw);
            let win: Vec<f32> = (0..wh * ww * c_in)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 7.0)
                .collect();
            let taps = kh * kw;
            let wt: Vec<f32> = (0..taps * c_in * c_out)
                .map(|i| ((i * 13 % 23) as f32 - 11.0) / 9.0)
                .collect();
            let first: Vec<u32> = (0..c_in as u32).filter(|c| c % 3 != 1).collect();
            let rows: Vec<*const f32> = first
                .iter()
                .map(|&f| wt[f as usize * c_out..].as_ptr())
                .collect();
            // Every kernel row, and the first or last skipped (an image's edge rows).
            for kys in [(0, kh), (1, kh), (0, kh - 1)] {
                let g = Geom {
                    win_w: ww,
                    c_in,
                    c_out,
                    kh,
                    kys,
                    kw,
                    kxs: (0, kw),
                    sh,
                    sw,
                    ph,
                    pw,
                    out_w: pw + 1,
                    out_stride: c_out,
                    sums: Sums::WHOLE,
                };
                let zeros = vec![0.0; ph * (pw + 1) * c_out];
                let with_ahead = |ahead| Filters::Rows {
                    first: &first,
                    rows: &rows,
                    tap_stride: c_in * c_out,
                    ahead,
                };
                let f = with_ahead(&[]);
                let bias: Vec<f32> = (0..c_out).map(|i| (i % 5) as f32 * 0.25 - 0.5).collect();
                let e = Epilogue {
                    bias: Some(&bias),
                    residual: None,
                    activation: Activation::Clip(-1.0, 3.0),
                };
                let want = run_on(Isa::Portable, &g, &win, f, Epilogue::NONE, &zeros);
                let want_e = run_on(Isa::Portable, &g, &win, f, e, &zeros);
                for isa in Isa::available() {
                    let got = run_on(isa, &g, &win, f, Epilogue::NONE, &zeros);
                    let what = format!("{c_in} -> {c_out}, {ph}x{pw}, kernel rows {kys:?}");
                    assert_tier_result(isa, &got, &want, &what);
                    let got = run_on(isa, &g, &win, f, e, &zeros);
                    assert_tier_result(isa, &got, &want_e, &format_args!("{what} epilogue"));
                    // Prefetching the next call's filters (a line a term, or a row of
                    // four where the part is long) changes no bit.
                    for ahead in [&wt[..wt.len().min(40)], &wt[..]] {
                        let got = run_on(isa, &g, &win, with_ahead(ahead), e, &zeros);
                        assert_tier_result(isa, &got, &want_e, &format_args!("{what} ahead"));
                    }
                }
            }
        }
    }
}

/// Panel filters, over channel counts whose 64-channel group is larger than
/// [`GROUP_FILTER_BUDGET`] (so the AVX-512 kernel sums kernel row by kernel row),
/// output counts that leave a narrow last panel, and 3-, 16- and 32-input layers (run as
/// `row_blocks`, with rows that leave outputs over): every tier gives the portable kernel's
/// bits, and those bits are the naive convolution's within rounding.
#[test]
fn panels_split_by_kernel_rows_match_generic_and_reference() {
    use crate::kernels::reference::conv2d_direct;
    for &(c_in, c_out, k, (h, w)) in &[
        (240usize, 70usize, 3usize, (5usize, 6usize)),
        (300, 130, 3, (5, 6)),
        (40, 16, 7, (5, 6)),
        (16, 16, 3, (4, 34)),
        (16, 12, 3, (3, 18)),
        (16, 32, 3, (3, 33)),
        (16, 20, 3, (2, 15)),
        (3, 16, 3, (3, 36)),
        (3, 7, 3, (3, 12)),
        (32, 32, 3, (4, 18)),
        (32, 24, 3, (3, 14)),
        // A last group of 48 channels and one of 40 (3 vectors, the last partial).
        (48, 112, 1, (5, 7)),
        // Tails of 32, 16, 24 and 8 channels joined to the last full group (blocks of 4 x
        // 96, 5 x 80 and their masked forms), in one pass and in passes of terms.
        (16, 96, 1, (5, 7)),
        (24, 144, 1, (4, 9)),
        (40, 80, 3, (5, 6)),
        (300, 88, 3, (5, 6)),
        (20, 72, 3, (3, 7)),
        (64, 176, 3, (3, 5)),
        (20, 40, 3, (4, 9)),
        // 17 to 24 channels: pair blocks (two outputs' channels past 16 in one vector), with
        // outputs left over, 3x3, and in passes of terms.
        (96, 24, 1, (3, 9)),
        (40, 17, 1, (5, 7)),
        (40, 20, 3, (4, 8)),
        (300, 24, 3, (5, 6)),
        // 40 channels: half blocks of 8 outputs (2 vectors and 8 channels), in passes of
        // terms too.
        (300, 40, 3, (5, 6)),
        (96, 40, 1, (3, 7)),
        // 33 to 48 channels: blocks of 6 x 3 vectors finished in registers.
        (16, 36, 1, (5, 7)),
    ] {
        let taps = k * k;
        assert_eq!(
            taps * c_in * PANEL * 4 > GROUP_FILTER_BUDGET,
            c_in > 100,
            "case {c_in}"
        );
        let weights: Vec<f32> = (0..c_out * c_in * taps)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
            .collect();
        let x: Vec<f32> = (0..c_in * h * w)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let p = Conv2dParams::new(c_in, c_out, k, k);
        let (oh, ow) = p.out_hw(h, w);
        let mut win = vec![0.0; x.len()];
        layout::nchw_to_nhwc(&x, c_in, h * w, &mut win);
        let g = Geom {
            win_w: w,
            c_in,
            c_out,
            kh: k,
            kys: (0, k),
            kw: k,
            kxs: (0, k),
            sh: 1,
            sw: 1,
            ph: oh,
            pw: ow,
            out_w: ow,
            out_stride: c_out,
            sums: Sums::WHOLE,
        };
        // The reference in the AVX-512 kernel's panels; each tier in its own.
        let panels = weights_panels(&weights, c_in, c_out, taps, PANEL);
        let f = Filters::Panels {
            weights: &panels,
            width: PANEL,
        };
        let mut a = vec![f32::NAN; oh * ow * c_out];
        let b = a.clone();
        unsafe { conv_generic(&g, &win, f, Epilogue::NONE, &mut a) };
        // With bias, a residual and an activation too (in registers or after the store).
        let bias: Vec<f32> = (0..c_out).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let residual: Vec<f32> = (0..a.len()).map(|i| (i % 11) as f32 * 0.05 - 0.2).collect();
        let e = Epilogue {
            bias: Some(&bias),
            residual: Some(&residual),
            activation: Activation::LeakyRelu(0.25),
        };
        // Every kernel row and column, and the first or last of them skipped (an image's
        // edges), in every pass shape; without and with the epilogue.
        let all = (0, k);
        let skips = [(1, k), (0, k - 1)];
        let edges = skips
            .iter()
            .flat_map(|&s| [(s, all), (all, s), (s, s)])
            .filter(|_| k > 1);
        for (kys, kxs) in std::iter::once((all, all)).chain(edges) {
            let g = Geom { kys, kxs, ..g };
            for e in [Epilogue::NONE, e] {
                let mut want = b.clone();
                unsafe { conv_generic(&g, &win, f, e, &mut want) };
                // Every tier, and AVX-512 also without its half blocks (24 channels then
                // run pair blocks) and without both (17 to 24 channels then run masked
                // blocks of 12 x 2 vectors, 40 blocks of 8 x 3).
                let tiers = Isa::available()
                    .into_iter()
                    .map(|isa| (isa, (false, false)));
                let avx512 = tiers.clone().filter(|&(isa, _)| isa == Isa::Avx512);
                let plain = avx512.flat_map(|(isa, _)| [(isa, (true, false)), (isa, (true, true))]);
                for (isa, (no_half, no_pairs)) in tiers.chain(plain) {
                    let width = panel_width(isa);
                    let tier_panels = weights_panels(&weights, c_in, c_out, taps, width);
                    let f = Filters::Panels {
                        weights: &tier_panels,
                        width,
                    };
                    #[cfg(target_arch = "x86_64")]
                    set_plain_blocks(no_half, no_pairs);
                    let got = run_on(isa, &g, &win, f, e, &b);
                    #[cfg(target_arch = "x86_64")]
                    set_plain_blocks(false, false);
                    let (half, pairs) = (!no_half, !no_pairs);
                    let what = format!(
                        "case {c_in} -> {c_out}, kernel rows {kys:?} columns {kxs:?}, \
                         epilogue {}, half blocks {half}, pair blocks {pairs}",
                        !e.is_none()
                    );
                    assert_tier_result(isa, &got, &want, &what);
                }
            }
        }
        let want = conv2d_direct(&p, &x, h, w, &weights, None);
        for co in 0..c_out {
            for j in 0..oh * ow {
                let (got, want) = (a[j * c_out + co], want[co * oh * ow + j]);
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn dense_direct_conv_matches_reference() {
    use crate::kernels::reference::conv2d_direct;
    for &(c_in, c_out, k, stride, pads, h, w) in &[
        (
            16usize,
            16usize,
            3usize,
            1usize,
            [1usize; 4],
            9usize,
            7usize,
        ),
        (8, 70, 3, 2, [1, 0, 2, 1], 11, 10),
        (5, 130, 5, 1, [2; 4], 6, 9),
        (20, 33, 7, 2, [3; 4], 15, 13),
    ] {
        let p = Conv2dParams::new(c_in, c_out, k, k)
            .with_pads(pads)
            .with_stride(stride, stride);
        let weights: Vec<f32> = (0..c_out * c_in * k * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let bias: Vec<f32> = (0..c_out).map(|i| i as f32 * 0.1 - 1.0).collect();
        let x: Vec<f32> = (0..c_in * h * w)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let mut want = conv2d_direct(&p, &x, h, w, &weights, Some(&bias));
        Activation::Relu.apply(&mut want);
        let op = ConvOp {
            input_scale: false,
            params: p,
            weights,
            bias: Some(bias),
            activation: Activation::Relu,
            residual: None,
        };
        let d = DirectConv::new(&op).expect("a 1-group spatial conv suits");
        let mut s = DirectScratch::default();
        for parts in [0, 1, 2, 3] {
            let mut out = vec![f32::NAN; want.len()];
            if parts == 0 {
                d.forward(&x, (h, w), &mut out, &mut s, IoLayout::NCHW, None);
            } else {
                d.forward_parallel(&x, (h, w), &mut out, &mut s, IoLayout::NCHW, parts, None);
            }
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{p:?}: {a} vs {b}");
            }
        }
    }
}

/// This thread's AVX-512 calls run without half blocks, and without pair blocks.
#[cfg(target_arch = "x86_64")]
fn set_plain_blocks(no_half: bool, no_pairs: bool) {
    super::half::NO_HALF.with(|off| off.set(no_half));
    super::pairs::NO_PAIRS.with(|off| off.set(no_pairs));
}
