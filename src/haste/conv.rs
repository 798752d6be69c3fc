//! Step 5: the reduced convolution, patch by patch.
//!
//! The output is tiled into `P x P` patches (edge patches smaller). For each patch:
//! 1. its input window ([`super::window`]: the input pixels its outputs read,
//!    `(ph-1)*stride + K` per side, zero padded) is hashed channel by channel
//!    ([`super::hash`]),
//! 2. channels are grouped by key ([`super::buckets`]),
//! 3. the window is merged to `B` channels and the filters to `B` input slices
//!    ([`super::merge`]),
//! 4. the direct kernel ([`crate::kernels::direct`]) computes the patch's outputs from the
//!    `B` merged channels, written into the full output, with the bias (and the op's
//!    residual and activation, [`HasteConv::forward_finished`]) in its epilogue, or the bias
//!    added once at the end (steps 3 and 4 of one patch: `patch.rs`; the entry points:
//!    `conv/calls.rs`).
//!
//! Order of work, for speed: the patches of a band of patch rows are hashed and their inputs
//! merged first; then, for each panel of 64 output channels (the weights are stored in
//! panels, see [`filter_panel`]), every patch of the band sums its merged buckets' filter
//! rows for that panel and runs the kernel, so the panel's filters are read from memory once
//! per band rather than once per patch.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ops::Conv2dParams;

use super::config::{layer_seed, HasteConfig};
use super::cost::{dense_macs, patch_flops};
use super::hash::{grow, hash_finite_window, hash_window_sanitized};
use super::hash::{EdgeTerms, HashScratch, WindowTerms};
use super::hyperplanes::Hyperplanes;
use super::patch::{MergedPatch, OutPanels, RowTable};
use super::stats::LayerStats;
use super::steps::StepTimer;
use super::window::zero_channels;
pub use super::window::Window;
pub use calls::Finish;
use calls::Part;

use crate::kernels::direct::{weights_panels, weights_tap_major, Epilogue, PANEL};
use crate::kernels::isa::Isa;
use crate::kernels::layout::{add_bias_hwc, from_hwc, to_hwc_padded, IoLayout};

/// Output channels per filter panel of a HASTE layer: 64 when they divide `c_out` (and
/// `c_out` is larger), so the kernel streams each 64-channel group's filters contiguously
/// (a wide layer's whole bank does not fit in L2, and each patch reads all of it), else
/// `c_out` (one panel: the plain tap-major layout).
pub fn filter_panel(c_out: usize) -> usize {
    if c_out > PANEL && c_out.is_multiple_of(PANEL) {
        PANEL
    } else {
        c_out
    }
}

/// A convolution run with HASTE: weights re-laid out once, hyperplanes drawn once.
#[derive(Clone, Debug)]
pub struct HasteConv {
    pub(super) params: Conv2dParams,
    cfg: HasteConfig,
    layer_index: usize,
    hyperplanes: Hyperplanes,
    /// The hyperplanes' entries as offsets into a copied window of `c_in` channels, and
    /// those inside the smaller windows of edge patches.
    terms: WindowTerms,
    edge_terms: EdgeTerms,
    /// Weights in panels of `panel` output channels, `[c_out / panel][(ky, kx)][c_in][panel]`
    /// (see [`filter_panel`]).
    pub(super) wt: Vec<f32>,
    pub(super) panel: usize,
    bias: Option<Vec<f32>>,
    force_singletons: bool,
    /// Time every step into the stats ([`Self::set_profile_steps`]).
    profile_steps: bool,
}

/// Per-thread buffers of [`HasteConv::forward`]; they grow on first use and are then reused.
#[derive(Clone, Debug, Default)]
pub struct HasteScratch {
    hwc: Vec<f32>,
    hash: HashScratch,
    /// The output image, pixel-major `[oh][ow][c_out]`, transposed to `[c_out][oh][ow]` once.
    ohwc: Vec<f32>,
    /// The patches of the current band, hashed and merged, waiting for their convolution.
    band: Vec<MergedPatch>,
    /// Summed filter rows of one patch's merged buckets for one panel, laid out as the panel
    /// (see [`super::merge::merge_filter_rows`]).
    wm: Vec<f32>,
    /// The filter row table of the patch being convolved.
    rows: RowTable,
    /// Which channels of the patch's window are zero (see [`zero_channels`]), and scratch.
    zero: Vec<bool>,
    zero_bits: Vec<u32>,
}

/// Bytes of merged windows a band of patches may hold: the band's patches are merged first,
/// then every filter panel runs over all of them, so the larger the band, the fewer times a
/// wide layer's filters are read, while the windows stay in L2.
const BAND_WINDOW_BYTES: usize = 256 * 1024;

impl HasteConv {
    /// `layer_index` feeds the per-layer seed. `weights` OIHW `[c_out, c_in, kh, kw]`, `bias`
    /// `[c_out]`. Errors on groups != 1, dilation != 1, a bad config or mismatched lengths.
    pub fn new(
        params: Conv2dParams,
        weights: &[f32],
        bias: Option<&[f32]>,
        cfg: &HasteConfig,
        layer_index: usize,
    ) -> Result<HasteConv> {
        params.validate()?;
        cfg.validate()?;
        let bad = |m: String| {
            Err(Error::InvalidArgument(format!(
                "HASTE conv {params:?}: {m}"
            )))
        };
        if params.groups != 1 {
            return bad("grouped convolutions are not supported (groups must be 1)".into());
        }
        if params.dilation != (1, 1) {
            return bad("dilated convolutions are not supported (dilation must be 1)".into());
        }
        let (c_in, c_out, taps) = (params.c_in, params.c_out, params.kh * params.kw);
        if weights.len() != c_out * c_in * taps {
            return bad(format!(
                "{} weights, expected {}",
                weights.len(),
                c_out * c_in * taps
            ));
        }
        if let Some(b) = bias {
            if b.len() != c_out {
                return bad(format!("{} biases, expected {c_out}", b.len()));
            }
        }
        let panel = filter_panel(c_out);
        let wt = if panel == c_out {
            weights_tap_major(weights, c_in, c_out, taps)
        } else {
            weights_panels(weights, c_in, c_out, taps, PANEL)
        };
        let p = cfg.tile;
        let fh = (p - 1) * params.stride.0 + params.kh;
        let fw = (p - 1) * params.stride.1 + params.kw;
        if fh > u16::MAX as usize || fw > u16::MAX as usize || fh * fw * c_in > u32::MAX as usize {
            return bad(format!("tile {p} makes a {fh}x{fw} window, too large"));
        }
        let hyperplanes = Hyperplanes::generate(
            cfg.kind,
            cfg.hyperplanes,
            cfg.sparsity,
            fh,
            fw,
            layer_seed(cfg.seed, layer_index),
        );
        let terms = WindowTerms::new(&hyperplanes, c_in);
        Ok(HasteConv {
            params,
            cfg: cfg.clone(),
            layer_index,
            hyperplanes,
            terms,
            edge_terms: EdgeTerms::default(),
            wt,
            panel,
            bias: bias.map(|b| b.to_vec()),
            force_singletons: false,
            profile_steps: false,
        })
    }

    pub fn params(&self) -> &Conv2dParams {
        &self.params
    }

    pub fn config(&self) -> &HasteConfig {
        &self.cfg
    }

    pub fn layer_index(&self) -> usize {
        self.layer_index
    }

    /// The layer's hyperplanes (over the window of a full `P x P` patch).
    pub fn hyperplanes(&self) -> &Hyperplanes {
        &self.hyperplanes
    }

    /// MACs (= FLOPs here) of the dense convolution for an `h x w` input.
    pub fn dense_flops(&self, h: usize, w: usize) -> u64 {
        dense_macs(&self.params, h, w)
    }

    /// Test hook: with `on`, every channel is its own bucket (hashing still runs and is
    /// counted), so the output must equal the dense convolution.
    #[doc(hidden)]
    pub fn set_force_singletons(&mut self, on: bool) {
        self.force_singletons = on;
    }

    /// With `on`, every forward pass times its steps into [`LayerStats::steps`] (a few
    /// hundred clock ticks per patch; the output is unchanged).
    pub fn set_profile_steps(&mut self, on: bool) {
        self.profile_steps = on;
    }

    /// Output channels per filter panel (see [`filter_panel`]).
    pub fn panel(&self) -> usize {
        self.panel
    }

    /// The forward pass; its vector loops are inlined into the feature-specific copies above.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn forward_impl(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        band: Option<std::ops::Range<usize>>,
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
        (io, part): (IoLayout, Part),
        isa: Isa,
    ) {
        let p = &self.params;
        let (c_in, c_out) = (p.c_in, p.c_out);
        // Floats per output pixel: every channel, or this part's panels.
        let width = part.panels.len() * self.panel;
        let (oh, ow) = p.out_hw(h, w);
        assert_eq!(
            x.len(),
            c_in * h * w,
            "HASTE conv: input length for {c_in}x{h}x{w}"
        );
        // The output rows computed, and where `out` starts (row `rows.start`).
        let out_rows = band.clone().unwrap_or(0..oh);
        assert!(out_rows.end <= oh, "HASTE conv: rows {out_rows:?} of {oh}");
        assert_eq!(
            out.len(),
            width * out_rows.len() * ow,
            "HASTE conv: output length for {width}x{}x{ow}",
            out_rows.len()
        );
        assert!(
            width == c_out || io.output_nhwc,
            "a part of the panels is pixel-major"
        );
        let finish = part.finish;
        if let Some(f) = finish {
            assert!(
                io.output_nhwc && width == c_out,
                "finished outputs are whole pixels"
            );
            assert!(
                f.residual.is_none_or(|r| r.len() >= out.len()),
                "a residual per output"
            );
        }
        if band.is_none() {
            stats.images += 1;
        }
        stats.c_in = c_in;
        grow(&mut stats.bucket_size_hist, c_in + 1);
        if oh == 0 || ow == 0 {
            return;
        }
        let tile = self.cfg.tile;
        let (fh, fw) = self.hyperplanes.window();
        let s = scratch;
        let mut timer = StepTimer::new(self.profile_steps);
        // The pixel-major image: the input itself, or its transpose.
        let mut hwc_buf = std::mem::take(&mut s.hwc);
        let hwc: &[f32] = if io.input_nhwc {
            &x[..c_in * h * w]
        } else {
            grow(&mut hwc_buf, c_in * h * w);
            to_hwc_padded(x, c_in, (h, w), (0, 0), (h, w), &mut hwc_buf);
            &hwc_buf
        };
        s.hash.reserve(c_in, fh * fw);
        timer.lap(|t| &mut t.layout);
        if !io.output_nhwc {
            grow(&mut s.ohwc, oh * ow * c_out);
        }
        let patches_per_row = ow.div_ceil(tile);
        let window_bytes = fh * fw * c_in * std::mem::size_of::<f32>();
        let band_rows = (BAND_WINDOW_BYTES / (patches_per_row * window_bytes).max(1)).max(1);
        let magnitude = self.cfg.magnitude_bins;
        let panel_len = p.kh * p.kw * c_in * self.panel;

        // A band of patch rows at a time: every patch is hashed and its input merged first,
        // then each filter panel runs over all of them, so a wide layer's filters are read
        // once per band, not once per patch (the whole bank of a 64 -> 512 layer does not fit
        // in L2, and the filter merge reads the members' rows).
        for row0 in out_rows.clone().step_by(tile * band_rows) {
            let band_end = out_rows.end.min(row0 + tile * band_rows);
            let mut n = 0;
            for oy0 in (row0..band_end).step_by(tile) {
                let ph = tile.min(out_rows.end - oy0);
                for ox0 in (0..ow).step_by(tile) {
                    let pw = tile.min(ow - ox0);
                    let win = Window::of_patch(p, (h, w), (oy0, ph), (ox0, pw));
                    timer.count_channel_pixels((c_in * win.present()) as u64);
                    timer.lap(|t| &mut t.bookkeeping);
                    if s.band.len() <= n {
                        s.band.push(MergedPatch::default());
                    }
                    let patch = &mut s.band[n];
                    n += 1;
                    (patch.oy0, patch.ox0, patch.ph, patch.pw) = (oy0, ox0, ph, pw);
                    let bits = &mut s.zero_bits;
                    let finite = patch.copy_window(c_in, hwc, w, &win, (fh, fw), bits);
                    timer.lap(|t| &mut t.window_copy);
                    let (hp, centering) = (&self.hyperplanes, self.cfg.centering);
                    let extent = (win.h, win.w);
                    let edge: Arc<WindowTerms>;
                    let terms = if extent == (fh, fw) {
                        &self.terms
                    } else {
                        edge = self.edge_terms.get(hp, c_in, extent);
                        &edge
                    };
                    // Plain branches, not closures: a closure is a function of its own,
                    // outside this instruction-set copy, and its `mul_add`s became libm calls.
                    let hashed = if finite {
                        hash_finite_window(
                            isa,
                            patch.window(),
                            c_in,
                            &win,
                            hp,
                            terms,
                            centering,
                            magnitude,
                            &mut s.hash,
                            &mut timer,
                        )
                    } else {
                        None
                    };
                    let counts = match hashed {
                        Some(counts) => counts,
                        None => {
                            let h = &mut s.hash;
                            hash_window_sanitized(
                                isa, hwc, w, c_in, &win, hp, centering, magnitude, h,
                            )
                        }
                    };
                    let keys = &s.hash.keys[..c_in];
                    if self.force_singletons {
                        patch.buckets.make_singletons(c_in);
                    } else if self.cfg.drop_zero_channels {
                        zero_channels(&s.zero_bits, &mut s.zero);
                        patch.buckets.group_skipping(keys, &s.zero);
                    } else {
                        patch.buckets.group(keys);
                    }
                    timer.lap(|t| &mut t.group);
                    patch.merge_input(c_in, &win);
                    timer.lap(|t| &mut t.input_merge);
                    let nb = patch.buckets.count();
                    if !part.record {
                        continue;
                    }
                    stats.record_patch((0..nb).map(|b| patch.buckets.size(b)));
                    stats.nonfinite_inputs += counts.nonfinite;
                    stats.zero_channels += patch.buckets.skipped() as u64;
                    stats.flops.add(&patch_flops(
                        p,
                        nb,
                        ph * pw,
                        win.present(),
                        counts.entries_used,
                        self.cfg.centering,
                        magnitude.is_some(),
                    ));
                }
            }
            timer.lap(|t| &mut t.bookkeeping);
            let at = (row0 - out_rows.start) * ow * width;
            let band_out = if io.output_nhwc {
                &mut out[at..]
            } else {
                &mut s.ohwc[at..]
            };
            let to = OutPanels {
                stride: width,
                first: part.panels.start,
            };
            let residual = finish.and_then(|f| f.residual).map(|r| &r[at..]);
            for q in part.panels.clone() {
                // The next panel, a share of it prefetched by each patch of the band; after
                // the last, the first, which the next image starts with.
                let panels = &part.panels;
                let next = if q + 1 < panels.end {
                    q + 1
                } else {
                    panels.start
                };
                let next = if next == q {
                    &[]
                } else {
                    &self.wt[next * panel_len..][..panel_len]
                };
                // The bias, residual and activation in the kernel's epilogue when the op's
                // finish is given; else the bias alone, added below.
                let epilogue = match finish {
                    Some(f) => Epilogue {
                        bias: self
                            .bias
                            .as_ref()
                            .map(|b| &b[q * self.panel..][..self.panel]),
                        residual,
                        activation: f.activation,
                    },
                    None => Epilogue::NONE,
                };
                for (i, patch) in s.band[..n].iter_mut().enumerate() {
                    let bufs = (&mut s.wm, &mut s.rows);
                    let ahead = &next[next.len() * i / n..next.len() * (i + 1) / n];
                    let out = (&mut *band_out, to, epilogue);
                    patch.convolve(self, q, (row0, ow), bufs, out, ahead, isa, &mut timer);
                }
            }
        }
        if finish.is_some() {
            // Finished in the kernel's epilogue.
        } else if io.output_nhwc {
            if let Some(b) = &self.bias {
                add_bias_hwc(out, &b[part.panels.start * self.panel..][..width]);
            }
        } else {
            from_hwc(&s.ohwc, c_out, oh * ow, 0..c_out, self.bias.as_deref(), out);
        }
        s.hwc = hwc_buf;
        timer.lap(|t| &mut t.layout);
        stats.steps.add(&timer.ticks);
    }
}

mod calls;
#[cfg(test)]
mod tests;
