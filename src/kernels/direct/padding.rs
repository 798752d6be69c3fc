//! The taps that read only zero padding, and how a call splits around them.
//!
//! An output next to an image's edge reads part of its window from the zero padding: a
//! 3x3 layer's first and last output rows a third of their taps, and so do its first and
//! last columns (a sixth of the layer at 7 x 7, a fifteenth at 28 x 28). Those products are
//! zeros, so a call is split into runs of outputs that read the image through the same
//! kernel rows and columns, each summing only those ([`Geom::kys`], [`Geom::kxs`]). The
//! sums keep their bits: a sum that starts at +0 is never -0, so adding the zero products
//! changed nothing.

use super::{conv_at_on, Epilogue, Filters, Geom, Sums};
use crate::kernels::isa::Isa;

/// The window rows and columns that hold the image (the others are zero padding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    pub rows: (usize, usize),
    pub cols: (usize, usize),
}

/// The taps of a kernel dimension through which the output at `o` (stride `s`) reads the
/// `live` part of the window, within `all`; `all` when none does (an output wholly in the
/// padding still gets its bias and activation).
fn live_taps(o: usize, s: usize, live: (usize, usize), all: (usize, usize)) -> (usize, usize) {
    let y = o * s;
    let lo = live.0.saturating_sub(y).max(all.0);
    let hi = live.1.saturating_sub(y).min(all.1);
    if lo < hi {
        (lo, hi)
    } else {
        all
    }
}

/// A run of outputs `start..end` that read through the kernel taps `taps`.
type Run = (usize, usize, (usize, usize));

/// Runs a call splits into, at most: one more than the outputs next to the padding on
/// either side (a 7x7 kernel with 3 pads: 7).
const MAX_RUNS: usize = 8;

/// The runs of a call, kept on the stack: the kernel of a HASTE patch is called thousands
/// of times per image.
#[derive(Clone, Copy)]
struct Runs {
    runs: [Run; MAX_RUNS],
    len: usize,
}

impl Runs {
    fn one(run: Run) -> Runs {
        Runs {
            runs: [run; MAX_RUNS],
            len: 1,
        }
    }

    fn as_slice(&self) -> &[Run] {
        &self.runs[..self.len]
    }
}

/// The runs of `n` outputs that read through the same taps (`taps(o)` for output `o`); one
/// run through `all` where there would be more than [`MAX_RUNS`] (the zeros are then
/// multiplied, the same sums).
fn runs(n: usize, all: (usize, usize), taps: impl Fn(usize) -> (usize, usize)) -> Runs {
    let mut runs = Runs::one((0, n, all));
    runs.len = 0;
    let mut r = 0;
    while r < n {
        if runs.len == MAX_RUNS {
            return Runs::one((0, n, all));
        }
        let here = taps(r);
        let end = (r + 1..n).find(|&q| taps(q) != here).unwrap_or(n);
        runs.runs[runs.len] = (r, end, here);
        runs.len += 1;
        r = end;
    }
    runs
}

/// [`super::conv_on`] over a window of which only `live` holds the image (see
/// [`conv_live_at_on`]).
///
/// # Safety
/// As [`super::conv_on`].
#[inline]
pub unsafe fn conv_live_on(
    isa: Isa,
    g: &Geom,
    win: &[f32],
    live: Live,
    f: Filters,
    e: Epilogue,
    out: &mut [f32],
) {
    assert!(g.fits(out.len()));
    // SAFETY: forwarded from the caller; `out` holds every output (checked just above).
    unsafe { conv_live_at_on(isa, g, win, live, f, e, out.as_mut_ptr()) }
}

/// [`conv_at_on`] over a window of which only `live` holds the image: one call per run of
/// output rows that read it through the same kernel rows, and in wide layers on panel
/// filters one per run of columns within those, each skipping the taps on the padding.
/// Row filters' `ahead` (the next call's filters to prefetch) goes with the largest call.
///
/// # Safety
/// As [`super::conv_at`], and the CPU must support `isa`.
pub unsafe fn conv_live_at_on(
    isa: Isa,
    g: &Geom,
    win: &[f32],
    live: Live,
    f: Filters,
    e: Epilogue,
    out: *mut f32,
) {
    let mut row_runs = runs(g.ph, g.kys, |r| live_taps(r, g.sh, live.rows, g.kys));
    if !largest_run_keeps_blocks(isa, g, row_runs.as_slice(), &f) {
        row_runs = Runs::one((0, g.ph, g.kys));
    }
    // Columns only where blocks run across a row's outputs 64 channels wide: narrower
    // layers run whole rows in blocks of 16 outputs, which a split would break up.
    let split_cols = matches!(f, Filters::Panels { .. }) && g.c_out >= 64;
    let col_runs = if split_cols {
        runs(g.pw, g.kxs, |c| live_taps(c, g.sw, live.cols, g.kxs))
    } else {
        Runs::one((0, g.pw, g.kxs))
    };
    let largest = row_runs
        .as_slice()
        .iter()
        .map(|&(r, end, _)| end - r)
        .max()
        .unwrap_or(0);
    let mut ahead_given = false;
    for &(r, end, kys) in row_runs.as_slice() {
        let f = match f {
            Filters::Rows {
                first,
                rows,
                tap_stride,
                ..
            } if ahead_given || end - r < largest => Filters::Rows {
                first,
                rows,
                tap_stride,
                ahead: &[],
            },
            _ => f,
        };
        ahead_given |= end - r == largest;
        // The edge rows' calls (a row or two) whole: split by columns too, their corners
        // ran as blocks of one output (ResNet-18's 7 x 7 layers 13 blocks against 10).
        let whole_row = [(0, g.pw, g.kxs)];
        let col_runs = if kys == g.kys {
            col_runs.as_slice()
        } else {
            &whole_row[..]
        };
        for &(c, c_end, kxs) in col_runs {
            let part = Geom {
                kys,
                kxs,
                ph: end - r,
                pw: c_end - c,
                ..*g
            };
            let at_in = (r * g.sh * g.win_w + c * g.sw) * g.c_in;
            let at_out = (r * g.out_w + c) * g.out_stride;
            let e = Epilogue {
                residual: e.residual.map(|res| &res[at_out..]),
                ..e
            };
            // SAFETY: outputs `r..end` x `c..c_end` of the call: their window pixels and
            // their outputs.
            unsafe { conv_at_on(isa, &part, &win[at_in..], f, e, out.add(at_out)) };
        }
    }
}

/// Kernel row `ky` of a call on row filters whose sum runs one kernel row per call, rows in
/// order (HASTE's wide layers: a row's filters for one panel, read by every patch of a band,
/// stay in L2 where a whole panel would not). Each output adds the row's taps when it reads
/// the image through them (`live_taps`); the call of its first such row starts its sum,
/// that of its last finishes it (the epilogue). One call per run of output rows alike in
/// that; `f`'s `ahead` goes with the largest. `g.kys` is every row, `(0, kh)`.
///
/// # Safety
/// As [`conv_live_at_on`]; the calls of the rows before `ky` ran on the same outputs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv_live_row_at_on(
    isa: Isa,
    g: &Geom,
    win: &[f32],
    live: Live,
    ky: usize,
    f: Filters,
    e: Epilogue,
    out: *mut f32,
) {
    assert!(g.kys == (0, g.kh) && ky < g.kh && g.sums == Sums::WHOLE);
    // What this call does to output row `r`: nothing, or (starts, finishes) its sum.
    let part = |r: usize| {
        let (lo, hi) = live_taps(r, g.sh, live.rows, g.kys);
        (lo..hi).contains(&ky).then_some((ky == lo, ky + 1 == hi))
    };
    let run_end = |r: usize| (r + 1..g.ph).find(|&q| part(q) != part(r)).unwrap_or(g.ph);
    let mut largest = (0, 0);
    let mut r = 0;
    while r < g.ph {
        let end = run_end(r);
        if part(r).is_some() && end - r > largest.1 - largest.0 {
            largest = (r, end);
        }
        r = end;
    }
    let mut r = 0;
    while r < g.ph {
        let end = run_end(r);
        if let Some((start, finish)) = part(r) {
            let f = match f {
                Filters::Rows {
                    first,
                    rows,
                    tap_stride,
                    ..
                } if (r, end) != largest => Filters::Rows {
                    first,
                    rows,
                    tap_stride,
                    ahead: &[],
                },
                _ => f,
            };
            let run = Geom {
                kys: (ky, ky + 1),
                ph: end - r,
                sums: Sums { start, finish },
                ..*g
            };
            let at_in = r * g.sh * g.win_w * g.c_in;
            let at_out = r * g.out_w * g.out_stride;
            let e = Epilogue {
                residual: e.residual.map(|res| &res[at_out..]),
                ..e
            };
            // SAFETY: output rows `r..end` of the call: their window pixels and outputs.
            unsafe { conv_at_on(isa, &run, &win[at_in..], f, e, out.add(at_out)) };
        }
        r = end;
    }
}

/// Whether the largest run of rows `(start, end, kys)` of a call on `g` runs the register
/// blocks the whole call would. A HASTE patch of 7 x 7 outputs splits into rows of 7, 35 and
/// 7: the 35 keep the 6 x 64 blocks and the prefetch of the next panel's filters that go
/// with them, the edge rows run 8 x 32 blocks (fewer filter bytes per multiply-add than a
/// 4 + 3 split of 64-channel blocks) on two of the three kernel rows. ResNet-18, L = 14,
/// batch 8, one thread, three alternated rounds: its 512 -> 512 layers 6-8 % faster, the
/// network 1.5-2 %; ResNet-56 `--all-layers` 0.85x -> 0.88-0.89x dense. With the middle run
/// in 8 x 32 blocks too (it had fewer than the 36 outputs wide blocks then needed), the
/// 512 -> 512 layers ran 3-10 % slower, so a call whose largest run loses its blocks stays
/// whole.
fn largest_run_keeps_blocks(isa: Isa, g: &Geom, runs: &[Run], f: &Filters) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && matches!(f, Filters::Rows { .. }) {
        let whole = super::blocks::takes_wide_rows(g);
        let largest = runs.iter().max_by_key(|&&(r, end, _)| end - r);
        return largest.is_none_or(|&(r, end, kys)| {
            let part = Geom {
                kys,
                ph: end - r,
                ..*g
            };
            super::blocks::takes_wide_rows(&part) == whole
        });
    }
    let _ = (isa, g, runs, f);
    true
}
