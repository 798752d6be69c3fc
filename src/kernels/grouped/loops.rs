//! The loops over a part's register blocks (every tier's, inlined into each tier's copy
//! in `mod.rs`) and the store that finishes their sums.

use super::blocks::{Block, Present, Sums};
use super::GroupedConv;

impl GroupedConv {
    /// The loops, inlined into each tier's copy above. `CO` is the group width, `MR` the
    /// output pixels of a register block, `NG` the groups of a block (`blocks`), a last odd
    /// group running alone (`one`). `row`, if given, runs blocks of `NG` groups whose pixels
    /// (as many as it says) lie in one output row, with the same sums as `blocks`; the spans
    /// are then whole rows, so the blocks tile them.
    ///
    /// The band's pixels run in spans of about [`SPAN`]; within a span, group by group, in
    /// blocks of `MR` consecutive pixels (a block may wrap to the next output row, so a 7-wide
    /// image wastes nothing on short blocks). A group's weights (`taps * cig * CO` floats, 9 KB
    /// at 16 x 16) stay in L1 while every block of the span reads them; the span's outputs
    /// stay in L2 until it is finished.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn rows_impl<const CO: usize, const MR: usize, const NG: usize>(
        &self,
        Geometry {
            band,
            row0,
            wp,
            ow,
            pixels,
        }: Geometry,
        out: &mut [f32],
        residual: Option<&[f32]>,
        blocks: impl Fn(&Block<MR>) -> Sums<CO, NG, MR>,
        one: impl Fn(&Block<MR>) -> Sums<CO, 1, MR>,
        row: Option<RowBlocks<CO, NG, MR>>,
    ) {
        let p = &self.params;
        let (c_in, c_out, groups) = (p.c_in, p.c_out, p.groups);
        let (cig, taps) = (c_in / groups, p.kh * p.kw);
        let (sy, sx) = p.stride;
        let n = pixels.len();
        if n == 0 {
            return;
        }
        // Output `j` of the part (pixel `pixels.start + j`): where its tap (0, 0) reads in
        // `band`.
        let origin_of = |j: usize| {
            let (oy, ox) = ((pixels.start + j) / ow, (pixels.start + j) % ow);
            ((oy * sy - row0) * wp + ox * sx) * c_in
        };
        // Every read below lies inside `band`: the last pixel's window ends there, and the
        // origins grow with the pixel.
        let last_tap = ((p.kh - 1) * wp + p.kw - 1) * c_in;
        assert!(origin_of(n - 1) + last_tap + c_in <= band.len());
        assert!(out.len() >= n * c_out && self.weights.len() >= groups * taps * cig * CO);
        let tap_at: Vec<usize> = (0..p.kh)
            .flat_map(|ky| (0..p.kw).map(move |kx| (ky * wp + kx) * c_in))
            .collect();
        let span = match row {
            Some(_) => SPAN.div_ceil(ow) * ow,
            None => SPAN.div_ceil(MR) * MR,
        };
        for s0 in (0..n).step_by(span) {
            let s1 = n.min(s0 + span);
            let mut g = 0;
            while g < groups {
                let ng = if g + NG <= groups { NG } else { 1 };
                let wg = &self.weights[g * taps * cig * CO..][..ng * taps * cig * CO];
                let mut j0 = s0;
                let (mut oy, mut ox) = ((pixels.start + j0) / ow, (pixels.start + j0) % ow);
                while j0 < s1 {
                    // A row block where its pixels fit in the row, else a block of up to
                    // `MR` pixels (which may wrap to the next row).
                    let (np, row_block) = match row {
                        Some((rm, f)) if ng == NG && ox + rm <= ow && j0 + rm <= s1 => {
                            (rm, Some(f))
                        }
                        _ => (MR.min(s1 - j0), None),
                    };
                    // Where each pixel's tap (0, 0) reads in group `g`, stepping along the
                    // rows (a division per pixel cost 10 % at 16 channels); a block's missing
                    // pixels repeat the last one (computed, not stored).
                    let mut origin = [0; MR];
                    let (mut y, mut x) = (oy, ox);
                    for (q, o) in origin.iter_mut().enumerate() {
                        *o = ((y * sy - row0) * wp + x * sx) * c_in + g * cig;
                        if q + 1 < np {
                            (y, x) = if x + 1 == ow { (y + 1, 0) } else { (y, x + 1) };
                        }
                    }
                    let b = Block {
                        padded: band,
                        origin,
                        tap_at: &tap_at,
                        kw: p.kw,
                        cig,
                        weights: wg,
                        present: Present::ALL,
                    };
                    // The block's sums, finished, go to channels from `g * CO` of its pixels.
                    let at = (j0 * c_out, g * CO);
                    if ng == NG {
                        let acc = match row_block {
                            Some(f) => f(&b),
                            None => blocks(&b),
                        };
                        self.store(&acc[..np], (out, at), c_out, residual);
                    } else {
                        self.store(&one(&b)[..np], (out, at), c_out, residual);
                    }
                    j0 += np;
                    (oy, ox) = (oy + (ox + np) / ow, (ox + np) % ow);
                }
                g += ng;
            }
            let o = &mut out[s0 * c_out..s1 * c_out];
            self.finish.activate(o, residual);
        }
    }

    /// A block's sums `[pixel][group][channel]`, finished, into `out`: its first pixel at
    /// `at.0`, its first group's channels from `at.1`, pixels `c_out` floats apart
    /// (`residual` laid out as `out`).
    #[inline(always)]
    pub(super) fn store<const CO: usize, const NG: usize>(
        &self,
        sums: &[[[f32; CO]; NG]],
        (out, (at, c0)): (&mut [f32], (usize, usize)),
        c_out: usize,
        residual: Option<&[f32]>,
    ) {
        for (q, pixel) in sums.iter().enumerate() {
            let at = at + q * c_out;
            let r = residual.map(|r| &r[at..][..c_out]);
            for (k, group) in pixel.iter().enumerate() {
                let o = &mut out[at + c0 + k * CO..];
                self.finish.finish_into(group, c0 + k * CO, o, r);
            }
        }
    }
}

/// Where one part of an image reads and what it computes (see [`GroupedConv::pixels`]).
#[derive(Clone)]
pub(super) struct Geometry<'a> {
    pub band: &'a [f32],
    pub row0: usize,
    pub wp: usize,
    pub ow: usize,
    pub pixels: std::ops::Range<usize>,
}

/// A row block and its pixels (see [`GroupedConv::rows_impl`]).
pub(super) type RowBlocks<'a, const CO: usize, const NG: usize, const MR: usize> =
    (usize, &'a dyn Fn(&Block<MR>) -> Sums<CO, NG, MR>);

/// Output pixels a span of [`GroupedConv::rows_impl`] holds (rounded up to whole blocks, or
/// whole rows).
pub(super) const SPAN: usize = 48;
