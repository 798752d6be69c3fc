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
//! per band rather than once per patch (`conv/bands.rs`; a band can hold several images'
//! patches, [`HasteConv::forward_images_finished`]).

use crate::error::{Error, Result};
use crate::kernels::aligned::AlignedFloats;
use crate::ops::Conv2dParams;

use super::config::{layer_seed, HasteConfig};
use super::cost::dense_macs;
use super::hash::grow;
use super::hash::{EdgeTerms, HashScratch, WindowTerms};
use super::hyperplanes::Hyperplanes;
use super::patch::MergedPatch;
use super::stats::LayerStats;
use super::steps::StepTimer;
pub use super::window::Window;
use bands::ImageRows;
pub use calls::Finish;
use calls::Part;

use crate::kernels::direct::{weights_panels, weights_tap_major, PANEL};
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
    pub(super) wt: AlignedFloats,
    pub(super) panel: usize,
    bias: Option<Vec<f32>>,
    /// Whether a band runs each filter panel one kernel row at a time (see
    /// `conv/bands.rs`).
    row_passes: bool,
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
    /// Their merged windows, one after the other (at most a band's budget of them, see
    /// `bands.rs`, so the buffer is as large as the largest band), each from a cache line's
    /// start.
    windows: AlignedFloats,
    /// Summed filter rows of one patch's merged buckets for one panel, laid out as the panel
    /// (see [`super::merge::merge_filter_rows`]).
    wm: AlignedFloats,
    /// Which channels of the patch's window are zero (see [`zero_channels`]), and scratch.
    zero: Vec<bool>,
    zero_bits: Vec<u32>,
    /// A patch row of outputs, whole width, of which a thread computes some patches (see
    /// `HasteKernel::run_by_patches`).
    pub(crate) part_rows: Vec<f32>,
}

impl crate::kernels::ScratchBytes for HasteScratch {
    fn scratch_bytes(&self) -> u64 {
        use crate::kernels::buffer_bytes as b;
        let patches: u64 = self.band.iter().map(MergedPatch::bytes).sum();
        let images = b(&self.hwc) + b(&self.ohwc) + self.hash.bytes();
        let band = b(&self.band) + patches + self.windows.bytes() + self.wm.bytes();
        let rest = b(&self.zero) + b(&self.zero_bits) + b(&self.part_rows);
        images + band + rest
    }
}

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
        // Rows from a cache line's start: the filter merge and the kernel load them whole.
        let wt = AlignedFloats::from(&wt[..]);
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
            row_passes: bands::takes_row_passes(&params, panel),
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
        // Several images only pixel-major in and out, one after the other in `x` and `out`.
        let n_images = part.images;
        assert!(n_images == 1 || (io.input_nhwc && io.output_nhwc));
        let in_len = c_in * h * w;
        assert_eq!(
            x.len(),
            n_images * in_len,
            "HASTE conv: input length for {n_images}x{c_in}x{h}x{w}"
        );
        // The output rows computed, and where each image's `out` starts (row `rows.start`).
        let out_rows = band.clone().unwrap_or(0..oh);
        assert!(out_rows.end <= oh, "HASTE conv: rows {out_rows:?} of {oh}");
        let out_len = width * out_rows.len() * ow;
        assert_eq!(
            out.len(),
            n_images * out_len,
            "HASTE conv: output length for {n_images}x{width}x{}x{ow}",
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
            stats.images += n_images as u64;
        }
        stats.c_in = c_in;
        grow(&mut stats.bucket_size_hist, c_in + 1);
        if out_len == 0 {
            return;
        }
        let (fh, fw) = self.hyperplanes.window();
        let s = scratch;
        let mut timer = StepTimer::new(self.profile_steps);
        // The pixel-major images: the input itself, or the one image's transpose.
        let mut hwc_buf = std::mem::take(&mut s.hwc);
        if !io.input_nhwc {
            grow(&mut hwc_buf, c_in * h * w);
            to_hwc_padded(x, c_in, (h, w), (0, 0), (h, w), &mut hwc_buf);
        }
        s.hash.reserve(c_in, fh * fw);
        timer.lap(|t| &mut t.layout);
        let mut ohwc = std::mem::take(&mut s.ohwc);
        if !io.output_nhwc {
            grow(&mut ohwc, oh * ow * c_out);
        }
        let target: &mut [f32] = if io.output_nhwc { &mut *out } else { &mut ohwc };
        let residuals = finish.and_then(|f| f.residual);
        let mut images: Vec<ImageRows> = target
            .chunks_mut(out_len)
            .take(n_images)
            .enumerate()
            .map(|(k, out)| ImageRows {
                hwc: if io.input_nhwc {
                    &x[k * in_len..][..in_len]
                } else {
                    &hwc_buf[..in_len]
                },
                out,
                residual: residuals.map(|r| &r[k * out_len..][..out_len]),
            })
            .collect();
        self.run_bands(
            &mut images,
            (h, w),
            out_rows,
            &part,
            s,
            stats,
            &mut timer,
            isa,
        );
        drop(images);
        if finish.is_some() {
            // Finished in the kernel's epilogue.
        } else if io.output_nhwc {
            if let Some(b) = &self.bias {
                add_bias_hwc(out, &b[part.panels.start * self.panel..][..width]);
            }
        } else {
            from_hwc(&ohwc, c_out, oh * ow, 0..c_out, self.bias.as_deref(), out);
        }
        s.hwc = hwc_buf;
        s.ohwc = ohwc;
        timer.lap(|t| &mut t.layout);
        stats.steps.add(&timer.ticks);
    }
}

mod bands;
mod calls;
#[cfg(test)]
mod row_pass_tests;
#[cfg(test)]
mod tests;
