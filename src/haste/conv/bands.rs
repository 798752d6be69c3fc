//! The patch loop of [`HasteConv`]: patches hashed and merged a band at a time, then every
//! filter panel run over the band's patches. A band holds the patch rows of one image or of
//! several (a batch's images run layer by layer hand them over together), so a wide layer's
//! filters are read once per band, not once per patch or per image.

use std::ops::Range;
use std::sync::Arc;

use super::calls::Part;
use super::{HasteConv, HasteScratch};
use crate::haste::cost::patch_flops;
use crate::haste::hash::{hash_finite_window, hash_window_sanitized, WindowTerms};
use crate::haste::patch::{MergedPatch, OutPanels};
use crate::haste::stats::LayerStats;
use crate::haste::steps::StepTimer;
use crate::haste::window::{zero_channels, Window};
use crate::kernels::direct::{Epilogue, Live};
use crate::kernels::isa::Isa;
use crate::ops::Conv2dParams;

/// One image of a call: its pixel-major input `[h][w][c_in]`, its outputs (the call's output
/// rows, `width` floats a pixel) and the residual they add, laid out as `out`.
pub(super) struct ImageRows<'a> {
    pub hwc: &'a [f32],
    pub out: &'a mut [f32],
    pub residual: Option<&'a [f32]>,
}

/// Bytes of merged windows a band of one image's patches may hold: the band's patches are
/// merged first, then every filter panel runs over all of them, so the larger the band, the
/// fewer times a wide layer's filters are read, while the windows stay in L2.
const BAND_WINDOW_BYTES: usize = 256 * 1024;

/// Whether a layer's bands run each filter panel one kernel row at a time
/// ([`MergedPatch::convolve`] with a row): when a panel (`kh * kw * c_in * panel` floats)
/// is more than half the L2, it does not stay there while the band's patches read it, each
/// merging its buckets' rows and reading its singletons' (1.2 MB at 512 input channels). A
/// kernel row's third of it does, so the band reads it from L3 once. ResNet-18 (L = 14,
/// batch 8, one thread, four rounds each way): the filter merge of the 512 -> 512 layers at
/// 7 x 7 took 10-22 cycles per channel and window pixel, 8.2-9.8 in row passes (it then
/// streams from L2); 256 -> 512 3.5-4.5 against 2.0; 256 -> 256 1.1-3.0 against 0.9-2.5;
/// the network's filter merge 1.14-1.41 against 0.96-1.11, about 1 % of its HASTE time.
/// Bands of fewer windows, so that they stay in L2 beside the row, made it slower: the row
/// came from L3 for fewer patches.
pub(super) fn takes_row_passes(p: &Conv2dParams, panel: usize) -> bool {
    let panel_bytes = p.kh * p.kw * p.c_in * panel * std::mem::size_of::<f32>();
    let l2 = crate::kernels::cache::l2_bytes_or_default() as usize;
    p.kh > 1 && panel_bytes > l2 / 2
}

impl HasteConv {
    /// Output rows `rows` of every image in `images` (all `hw` in size), filter panels
    /// `part.panels`, each output finished by `part.finish`'s activation (else without the
    /// bias: the caller adds it). Patches are hashed and merged a band at a time, images
    /// after one another, then convolved panel by panel.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn run_bands(
        &self,
        images: &mut [ImageRows],
        hw: (usize, usize),
        rows: Range<usize>,
        part: &Part,
        s: &mut HasteScratch,
        stats: &mut LayerStats,
        timer: &mut StepTimer,
        isa: Isa,
    ) {
        let p = &self.params;
        let ow = p.out_hw(hw.0, hw.1).1;
        let tile = self.cfg.tile;
        let (fh, fw) = self.hyperplanes.window();
        let patches_per_row = ow.div_ceil(tile);
        let window_bytes = fh * fw * p.c_in * std::mem::size_of::<f32>();
        let budget = self.band_budget();
        // Each image's outputs start at row `rows.start`.
        let at = (rows.start, ow);
        let mut band = std::mem::take(&mut s.band);
        let mut n = 0;
        // Only the call's first band reads the filters from memory (see `convolve_band`).
        let mut cold = true;
        for i in 0..images.len() {
            for oy0 in rows.clone().step_by(tile) {
                if n > 0 && (n + patches_per_row) * window_bytes > budget {
                    let bufs = (&mut band[..n], &mut *images);
                    self.convolve_band(bufs, cold, at, part, s, timer, isa);
                    (n, cold) = (0, false);
                }
                let ph = tile.min(rows.end - oy0);
                for ox0 in part.cols.clone().unwrap_or(0..ow).step_by(tile) {
                    let pw = tile.min(ow - ox0);
                    if band.len() <= n {
                        band.push(MergedPatch::default());
                    }
                    let patch = &mut band[n];
                    n += 1;
                    (patch.image, patch.oy0, patch.ox0, patch.ph, patch.pw) = (i, oy0, ox0, ph, pw);
                    // Each window from a cache line's start (see `AlignedFloats`).
                    patch.at = (n - 1) * (fh * fw * p.c_in).next_multiple_of(16);
                    let record = part.record.then_some(&mut *stats);
                    self.hash_patch(patch, images[i].hwc, hw, s, record, timer, isa);
                }
            }
        }
        if n > 0 {
            self.convolve_band((&mut band[..n], images), cold, at, part, s, timer, isa);
        }
        s.band = band;
    }

    /// Bytes of merged windows one band may hold: [`BAND_WINDOW_BYTES`], or, for a layer
    /// whose filter bank outgrows L2, as many as the bank's own bytes up to the L2's. Such a
    /// bank comes from L3 or memory for every band (the filter merge reads the members'
    /// rows, the kernel the singletons'), so a band of several images' patches reads it
    /// once for all of them, while their windows, read once per panel, stay near the core
    /// and fewer bytes than the bank they save. ResNet-18 (L = 14, batch 8, one thread,
    /// alternated with the previous build): the 512 -> 512 layers at 7 x 7 (one 205 KB
    /// window per image) about 10 % faster, the network 1-2 %. Twice the L2 was no faster
    /// and held 12 MB more scratch a thread.
    fn band_budget(&self) -> usize {
        let bank = (self.wt.len() * std::mem::size_of::<f32>()) as u64;
        let l2 = crate::kernels::cache::l2_bytes_or_default();
        if bank <= l2 {
            BAND_WINDOW_BYTES
        } else {
            (bank.min(l2) as usize).max(BAND_WINDOW_BYTES)
        }
    }

    /// Runs each filter panel one kernel row at a time (`on`) or whole, whatever
    /// [`takes_row_passes`] chose: the same bits either way.
    #[cfg(test)]
    pub(in crate::haste) fn set_row_passes(&mut self, on: bool) {
        self.row_passes = on;
    }

    /// Steps 1-4 of one patch (its window at `patch`'s place in the image `hwc`): copy,
    /// hash, group, input merge; its statistics into `record` when given.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn hash_patch(
        &self,
        patch: &mut MergedPatch,
        hwc: &[f32],
        (h, w): (usize, usize),
        s: &mut HasteScratch,
        record: Option<&mut LayerStats>,
        timer: &mut StepTimer,
        isa: Isa,
    ) {
        let p = &self.params;
        let c_in = p.c_in;
        let (fh, fw) = self.hyperplanes.window();
        let magnitude = self.cfg.magnitude_bins;
        let (oy0, ox0, ph, pw) = (patch.oy0, patch.ox0, patch.ph, patch.pw);
        let win = Window::of_patch(p, (h, w), (oy0, ph), (ox0, pw));
        timer.count_channel_pixels((c_in * win.present()) as u64);
        timer.lap(|t| &mut t.bookkeeping);
        let bits = &mut s.zero_bits;
        let windows = &mut s.windows;
        let finite = patch.copy_window(c_in, hwc, w, &win, (fh, fw), windows, bits, isa);
        timer.lap(|t| &mut t.window_copy);
        let (hp, centering) = (&self.hyperplanes, self.cfg.centering);
        // An edge window hashes its extent's terms (the frame's, or for a window smaller than
        // the frame those within it: the frame past it holds another patch's values), or
        // those of its pixels inside the image where they pay.
        let (extent, own): (Arc<WindowTerms>, Arc<WindowTerms>);
        let terms = if win.covers((fh, fw)) {
            &self.terms
        } else {
            let base = if (win.h, win.w) == (fh, fw) {
                &self.terms
            } else {
                let all = Live {
                    rows: (0, win.h),
                    cols: (0, win.w),
                };
                extent = self.edge_terms.get(hp, c_in, all);
                &extent
            };
            own = self.edge_terms.get(hp, c_in, win.live());
            if own.pays_off_over(base) {
                &own
            } else {
                base
            }
        };
        // Plain branches, not closures: a closure is a function of its own, outside this
        // instruction-set copy, and its `mul_add`s became libm calls.
        let hashed = if finite {
            let window = patch.window(&s.windows);
            let h = &mut s.hash;
            hash_finite_window(
                isa, window, c_in, &win, hp, terms, centering, magnitude, h, timer,
            )
        } else {
            None
        };
        let counts = match hashed {
            Some(counts) => counts,
            None => {
                let h = &mut s.hash;
                hash_window_sanitized(isa, hwc, w, c_in, &win, hp, centering, magnitude, h)
            }
        };
        let keys = &s.hash.keys[..c_in];
        if self.force_singletons {
            patch.buckets.make_singletons(c_in);
        } else if self.cfg.drop_zero_channels {
            zero_channels(&s.zero_bits, &mut s.zero);
            patch.buckets.group_skipping_on(isa, keys, &s.zero);
        } else {
            patch.buckets.group_skipping_on(isa, keys, &[]);
        }
        timer.lap(|t| &mut t.group);
        patch.merge_input(c_in, &win, &mut s.windows);
        timer.lap(|t| &mut t.input_merge);
        let Some(stats) = record else {
            return;
        };
        let nb = patch.buckets.count();
        stats.record_patch((0..nb).map(|b| patch.buckets.size(b)));
        stats.nonfinite_inputs += counts.nonfinite;
        stats.zero_channels += patch.buckets.skipped() as u64;
        stats.flops.add(&patch_flops(
            p,
            nb,
            ph * pw,
            win.present(),
            counts.entries_used,
            centering,
            magnitude.is_some(),
        ));
    }

    /// Step 5 for a band of merged patches: for each filter panel of `part`, every patch's
    /// filter merge and reduced convolution into its image's outputs (whose first row is
    /// `row0`, `ow` pixels wide).
    ///
    /// A `cold` band (a call's first) has its kernel calls prefetch what the next call reads
    /// (the next kernel row or filter panel): a wide layer's filters come from memory for
    /// it, and the filter merge and the first blocks waited on them. A later band finds them
    /// in L3, and there the prefetches only competed with the kernel's own loads (AVX2,
    /// ResNet-18 at batch 8, one thread: the 512 -> 512 layers' filter merge 26 -> 16 cycles
    /// per input channel and window pixel and their kernel 109-135 -> 124-145 with every
    /// band prefetching; at batch 1, one band an image, the merge 50-82 -> 18-30 and the
    /// kernel unchanged).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn convolve_band(
        &self,
        (band, images): (&mut [MergedPatch], &mut [ImageRows]),
        cold: bool,
        (row0, ow): (usize, usize),
        part: &Part,
        s: &mut HasteScratch,
        timer: &mut StepTimer,
        isa: Isa,
    ) {
        timer.lap(|t| &mut t.bookkeeping);
        let p = &self.params;
        let panel_len = p.kh * p.kw * p.c_in * self.panel;
        let panels = &part.panels;
        let to = OutPanels {
            stride: panels.len() * self.panel,
            first: panels.start,
        };
        let n = band.len();
        for q in panels.clone() {
            // The next panel, a share of it prefetched by each patch of a cold band.
            let next = match q + 1 {
                next if cold && next < panels.end => &self.wt[next * panel_len..][..panel_len],
                _ => &[],
            };
            // The bias and activation (and the residual) in the kernel's epilogue when the
            // op's finish is given; else nothing (the caller adds the bias).
            let epilogue = match part.finish {
                Some(f) => Epilogue {
                    bias: self
                        .bias
                        .as_ref()
                        .map(|b| &b[q * self.panel..][..self.panel]),
                    residual: None,
                    activation: f.activation,
                },
                None => Epilogue::NONE,
            };
            let passes = if self.row_passes { p.kh } else { 1 };
            for ky in (0..passes).map(|k| self.row_passes.then_some(k)) {
                // What the next call reads: the next kernel row of this panel, or the next
                // panel (its first row).
                let ahead = match ky {
                    Some(ky) if cold && ky + 1 < p.kh => {
                        let row = panel_len / p.kh;
                        &self.wt[q * panel_len + (ky + 1) * row..][..row]
                    }
                    Some(_) => &next[..next.len() / p.kh],
                    None => next,
                };
                for (i, patch) in band.iter_mut().enumerate() {
                    let image = &mut images[patch.image];
                    let epilogue = Epilogue {
                        residual: part.finish.and(image.residual),
                        ..epilogue
                    };
                    let bufs = (&mut s.wm, &s.windows[..]);
                    let ahead = &ahead[ahead.len() * i / n..ahead.len() * (i + 1) / n];
                    let out = (&mut *image.out, to, epilogue);
                    patch.convolve(self, (q, ky), (row0, ow), bufs, out, ahead, isa, timer);
                }
            }
        }
    }
}
