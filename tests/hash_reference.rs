//! HASTE's hash against its plain definition, on every instruction-set tier of this machine.
//!
//! The definition (the paper's, plus haste's optional magnitude bins): for a patch's input
//! window, center every pixel over channels (subtract the mean of the channels there), take
//! each channel's window vector, project it on every hyperplane, and set bit `l` of the
//! channel's code when the projection on hyperplane `l` is positive. Window pixels outside
//! the image are zero padding and take no part. With magnitude bins, the key also holds the
//! bin of the channel's uncentered window norm.
//!
//! The reference below computes exactly that, in exact integer arithmetic: the images hold
//! small integers, so the ternary projections are exact in `f32` too, and "projection of the
//! centered vector > 0" is decided without rounding as `sum_p r(p) (c x(p) - S(p)) > 0`, where
//! `S(p)` is the sum over channels at pixel `p`. The fast hash must give the same keys, bit
//! for bit, over random shapes, tiles, strides, paddings, windows at every border, L and s.
//! Gaussian hyperplanes have real-valued entries, so their codes are compared only where the
//! reference's projection is clear of zero.

use haste::haste::hash::{hash_window, magnitude_bin, HashScratch, Key};
use haste::haste::hyperplanes::Hyperplanes;
use haste::haste::window::Window;
use haste::kernels::isa::Isa;
use haste::ops::Conv2dParams;
use haste::HyperplaneKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random case: an image, a convolution geometry and hyperplanes.
struct Case {
    c: usize,
    h: usize,
    w: usize,
    /// Pixel-major image `[h][w][c]` of small integers.
    hwc: Vec<f32>,
    params: Conv2dParams,
    tile: usize,
    hp: Hyperplanes,
    centering: bool,
    magnitude_step: Option<f32>,
}

fn case(rng: &mut ChaCha8Rng, kind: HyperplaneKind) -> Case {
    // Up to 72 channels: every vector path of the projection (one to four blocks of 16,
    // then a second pass of blocks).
    let c = rng.random_range(1..=72);
    let (h, w) = (rng.random_range(1..=13), rng.random_range(1..=13));
    // Some channels repeat others (up to a constant level) so that buckets form.
    let period = rng.random_range(1..=c);
    let mut hwc = vec![0.0f32; h * w * c];
    for px in 0..h * w {
        for ch in 0..c {
            hwc[px * c + ch] = if ch >= period && rng.random_bool(0.5) {
                hwc[px * c + ch - period] + (ch / period) as f32
            } else {
                rng.random_range(-8i32..=8) as f32
            };
        }
    }
    let k = [1, 3, 5][rng.random_range(0..3)];
    let stride = rng.random_range(1..=2);
    let pads = [(); 4].map(|_| rng.random_range(0..=k / 2 + 1));
    let params = Conv2dParams::new(c, 1, k, k)
        .with_stride(stride, stride)
        .with_pads(pads);
    let tile = rng.random_range(1..=5);
    let (fh, fw) = ((tile - 1) * stride + k, (tile - 1) * stride + k);
    let count = rng.random_range(1..=64);
    let sparsity = [0.0, 0.5, 2.0 / 3.0, 0.9][rng.random_range(0..4)];
    let hp = Hyperplanes::generate(kind, count, sparsity, fh, fw, rng.random());
    Case {
        c,
        h,
        w,
        hwc,
        params,
        tile,
        hp,
        centering: rng.random_bool(0.8),
        magnitude_step: rng.random_bool(0.5).then_some(0.5),
    }
}

/// Every patch window of the case's output, edge patches included.
fn windows(cs: &Case) -> Vec<Window> {
    let (oh, ow) = cs.params.out_hw(cs.h, cs.w);
    let mut out = Vec::new();
    for oy0 in (0..oh).step_by(cs.tile) {
        for ox0 in (0..ow).step_by(cs.tile) {
            let (ph, pw) = (cs.tile.min(oh - oy0), cs.tile.min(ow - ox0));
            out.push(Window::of_patch(
                &cs.params,
                (cs.h, cs.w),
                (oy0, ph),
                (ox0, pw),
            ));
        }
    }
    out
}

/// The window's pixels inside the image, as (window position in hyperplane coordinates,
/// image pixel index).
fn present_pixels(cs: &Case, win: &Window) -> Vec<(usize, usize)> {
    let (_, fw) = cs.hp.window();
    let mut out = Vec::new();
    for r in 0..win.h {
        for col in 0..win.w {
            let (y, x) = (win.iy + r as isize, win.ix + col as isize);
            if y >= 0 && x >= 0 && (y as usize) < cs.h && (x as usize) < cs.w {
                out.push((r * fw + col, y as usize * cs.w + x as usize));
            }
        }
    }
    out
}

/// The reference keys of one window, and for each channel and hyperplane how far (in units of
/// the projection) the decision is from zero.
fn reference_keys(cs: &Case, win: &Window) -> (Vec<Key>, Vec<Vec<f64>>) {
    let c = cs.c;
    let pixels = present_pixels(cs, win);
    let x = |px: usize, ch: usize| cs.hwc[px * c + ch] as f64;
    let mut keys = vec![0 as Key; c];
    let mut margins = vec![vec![0.0; cs.hp.count()]; c];
    for (ch, (key, margins)) in keys.iter_mut().zip(&mut margins).enumerate() {
        for (l, margin) in margins.iter_mut().enumerate() {
            let r = cs.hp.row(l);
            // Scaled by c when centering: sum_p r(p) (c x_ch(p) - S(p)), exact for integers.
            let proj: f64 = pixels
                .iter()
                .map(|&(pos, px)| {
                    let v = if cs.centering {
                        let s: f64 = (0..c).map(|k| x(px, k)).sum();
                        c as f64 * x(px, ch) - s
                    } else {
                        x(px, ch)
                    };
                    r[pos] as f64 * v
                })
                .sum();
            if proj > 0.0 {
                *key |= 1 << l;
            }
            *margin = proj.abs();
        }
        if let Some(step) = cs.magnitude_step {
            let norm2: f64 = pixels.iter().map(|&(_, px)| x(px, ch).powi(2)).sum();
            *key |= (magnitude_bin(norm2 as f32, step) as Key) << 64;
        }
    }
    (keys, margins)
}

/// The keys `hash_window` gives on tier `isa`, from scratch buffers of its own (a buffer
/// another tier filled could hide sums a tier never wrote).
fn fast_keys(cs: &Case, win: &Window, isa: Isa) -> Vec<Key> {
    let s = &mut HashScratch::default();
    let (fh, fw) = cs.hp.window();
    s.reserve(cs.c, fh * fw);
    let (hwc, centering) = (&cs.hwc, cs.centering);
    hash_window(
        isa,
        hwc,
        cs.w,
        cs.c,
        win,
        &cs.hp,
        centering,
        cs.magnitude_step,
        s,
    );
    s.keys[..cs.c].to_vec()
}

#[test]
fn ternary_codes_equal_the_plain_definition_on_every_tier() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let (mut windows_seen, mut border_windows, mut merged) = (0, 0, 0);
    for _ in 0..300 {
        let cs = case(&mut rng, HyperplaneKind::Ternary);
        for win in windows(&cs) {
            let (want, _) = reference_keys(&cs, &win);
            windows_seen += 1;
            border_windows += usize::from(win.present() < win.h * win.w);
            let mut distinct = want.clone();
            distinct.sort();
            distinct.dedup();
            merged += usize::from(distinct.len() < cs.c);
            for isa in Isa::available() {
                let got = fast_keys(&cs, &win, isa);
                assert_eq!(
                    got,
                    want,
                    "{isa}: c={} {}x{} {:?} tile {} L={} centering={} magnitude={:?} {win:?}",
                    cs.c,
                    cs.h,
                    cs.w,
                    cs.params,
                    cs.tile,
                    cs.hp.count(),
                    cs.centering,
                    cs.magnitude_step
                );
            }
        }
    }
    // The cases reach what they are meant to: windows cut by the borders, and equal codes.
    assert!(windows_seen > 1000, "{windows_seen} windows");
    assert!(
        border_windows * 4 > windows_seen,
        "{border_windows} border windows"
    );
    assert!(
        merged * 10 > windows_seen,
        "{merged} windows with shared codes"
    );
}

#[test]
fn gaussian_codes_equal_the_plain_definition_where_the_sign_is_clear() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let mut compared = 0u64;
    for _ in 0..150 {
        let cs = case(&mut rng, HyperplaneKind::Gaussian);
        for win in windows(&cs) {
            let (want, margins) = reference_keys(&cs, &win);
            let scale = (cs.c * cs.hp.dim()) as f64 * 8.0;
            for isa in Isa::available() {
                let got = fast_keys(&cs, &win, isa);
                for ch in 0..cs.c {
                    assert_eq!(got[ch] >> 64, want[ch] >> 64, "{isa}: magnitude bin");
                    for (l, &m) in margins[ch].iter().enumerate() {
                        if m > 1e-4 * scale {
                            let bit = |k: Key| (k >> l) & 1;
                            assert_eq!(bit(got[ch]), bit(want[ch]), "{isa}: channel {ch}, l {l}");
                            compared += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(compared > 100_000, "{compared} bits compared");
}
