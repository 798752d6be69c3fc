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
//!    `B` merged channels, written into the full output; the bias is added once at the end
//!    (steps 3 and 4 of one patch: `patch.rs`).
//!
//! Order of work, for speed: the patches of a band of patch rows are hashed and their inputs
//! merged first; then, for each panel of 64 output channels (the weights are stored in
//! panels, see [`filter_panel`]), every patch of the band sums its merged buckets' filter
//! rows for that panel and runs the kernel, so the panel's filters are read from memory once
//! per band rather than once per patch.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ops::{Activation, Conv2dParams};

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

/// Which filter panels one call computes, whether it records the patches' statistics (see
/// [`HasteConv::forward_panels`]), and what its kernel calls finish the outputs with.
#[derive(Clone, Debug)]
struct Part<'a> {
    panels: std::ops::Range<usize>,
    record: bool,
    finish: Option<Finish<'a>>,
}

impl Part<'_> {
    /// Every panel, recorded, the bias alone added.
    fn whole(conv: &HasteConv) -> Part<'static> {
        Part {
            panels: 0..conv.params.c_out / conv.panel,
            record: true,
            finish: None,
        }
    }
}

/// What the layer's op does to each output after the bias: its fused residual (laid out as
/// the call's pixel-major output) and the activation after it. Given to
/// [`HasteConv::forward_finished`], the patch kernel applies them with the bias in its
/// epilogue, while each block of outputs is in registers, instead of two more passes over
/// the output (the bias, then the activation): on a layer whose outputs outnumber its
/// inputs eight to one (Tiny Darknet's 16 -> 128), those passes cost 0.7 cycles per input
/// channel and window pixel, a third of the fixed work.
#[derive(Clone, Copy, Debug)]
pub struct Finish<'a> {
    pub residual: Option<&'a [f32]>,
    pub activation: Activation,
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

    /// One image: `x = [c_in, h, w]` -> `out = [c_out, oh, ow]`. Deterministic: the same
    /// input, weights and config give bit-identical output and stats.
    ///
    /// Panics if `x` or `out` has the wrong length.
    pub fn forward(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
    ) {
        self.forward_layout(x, h, w, out, scratch, stats, IoLayout::NCHW)
    }

    /// [`Self::forward`] with the input and output in the memory order `io` gives (a
    /// pixel-major input is hashed and merged in place, without a transpose).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_layout(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
        io: IoLayout,
    ) {
        let all = Part::whole(self);
        self.forward_on(
            Isa::current(),
            x,
            (h, w),
            None,
            out,
            scratch,
            stats,
            io,
            all,
        )
    }

    /// Output rows `band` of one image (`band.start` a multiple of the tile), pixel-major in
    /// and out: `x = [h][w][c_in]`, `out = [band.len()][ow][c_out]`, bias included. Bands of
    /// one image can run on different threads (each with its own scratch); `stats` gets the
    /// band's patches but not the image, which the caller counts once.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_band(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        band: std::ops::Range<usize>,
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
    ) {
        let io = IoLayout {
            input_nhwc: true,
            output_nhwc: true,
        };
        assert!(
            band.start.is_multiple_of(self.cfg.tile),
            "HASTE band must start on a tile"
        );
        let isa = Isa::current();
        let all = Part::whole(self);
        self.forward_on(isa, x, (h, w), Some(band), out, scratch, stats, io, all)
    }

    /// Output rows `band` (every row when `None`; a band starts on a tile and needs a
    /// pixel-major input) of one image into the pixel-major `out`, bias included and
    /// `finish` applied, all in the patch kernel's epilogue. `stats` counts the image only
    /// for the whole image.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_finished(
        &self,
        x: &[f32],
        hw: (usize, usize),
        band: Option<std::ops::Range<usize>>,
        input_nhwc: bool,
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
        finish: Finish,
    ) {
        let io = IoLayout {
            input_nhwc,
            output_nhwc: true,
        };
        if let Some(band) = &band {
            assert!(
                input_nhwc && band.start.is_multiple_of(self.cfg.tile),
                "HASTE band must start on a tile of a pixel-major input"
            );
        }
        let part = Part {
            finish: Some(finish),
            ..Part::whole(self)
        };
        self.forward_on(Isa::current(), x, hw, band, out, scratch, stats, io, part)
    }

    /// Filter panels `panels` (output channels `panels.start * P..panels.end * P`, `P` =
    /// [`Self::panel`]) of every output of one image, pixel-major in, into `out` laid out
    /// `[oh][ow][panels.len() * P]`, bias included. Parts of an image with fewer patch rows
    /// than threads run on different threads this way, each with its own scratch: each part
    /// hashes and merges every patch itself (the fixed work, a tenth of the layer or less)
    /// and computes its share of the reduced convolution. `stats` gets the patches only when
    /// `record` (one part should), and not the image.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_panels(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        panels: std::ops::Range<usize>,
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
        record: bool,
    ) {
        let io = IoLayout {
            input_nhwc: true,
            output_nhwc: true,
        };
        assert!(panels.end <= self.params.c_out / self.panel && !panels.is_empty());
        let oh = self.params.out_hw(h, w).0;
        let part = Part {
            panels,
            record,
            finish: None,
        };
        let isa = Isa::current();
        self.forward_on(isa, x, (h, w), Some(0..oh), out, scratch, stats, io, part)
    }

    /// Output channels per filter panel (see [`filter_panel`]).
    pub fn panel(&self) -> usize {
        self.panel
    }

    /// [`Self::forward_impl`] compiled for tier `isa` (which the CPU must support).
    #[allow(clippy::too_many_arguments)]
    fn forward_on(
        &self,
        isa: Isa,
        x: &[f32],
        hw: (usize, usize),
        band: Option<std::ops::Range<usize>>,
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
        io: IoLayout,
        part: Part,
    ) {
        assert!(isa.supported(), "tier {isa} on a CPU without it");
        let args = (io, part);
        // SAFETY (both): the CPU supports the tier (asserted).
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.forward_avx512(x, hw, band, out, scratch, stats, args) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.forward_avx2(x, hw, band, out, scratch, stats, args) },
            // NEON is in aarch64's baseline: only the patch kernel differs.
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => self.forward_impl(x, hw, band, out, scratch, stats, args, Isa::Neon),
            Isa::Sse2 => self.forward_impl(x, hw, band, out, scratch, stats, args, Isa::Sse2),
            _ => self.forward_impl(x, hw, band, out, scratch, stats, args, Isa::Portable),
        }
    }

    /// [`Self::forward_impl`] compiled for AVX-512 (the crate's baseline is SSE2), with the
    /// AVX-512 patch kernel. The patch GEMM uses fused multiply-adds on every path (the
    /// portable one through `f32::mul_add`) in one fixed order, and nothing else is
    /// reassociated, so all paths give identical bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn forward_avx512(
        &self,
        x: &[f32],
        hw: (usize, usize),
        band: Option<std::ops::Range<usize>>,
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
        args: (IoLayout, Part),
    ) {
        self.forward_impl(x, hw, band, out, scratch, stats, args, Isa::Avx512)
    }

    /// [`Self::forward_impl`] compiled for AVX2 (and FMA, so `mul_add` is one instruction).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn forward_avx2(
        &self,
        x: &[f32],
        hw: (usize, usize),
        band: Option<std::ops::Range<usize>>,
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
        args: (IoLayout, Part),
    ) {
        self.forward_impl(x, hw, band, out, scratch, stats, args, Isa::Avx2)
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

#[cfg(test)]
mod tests;
