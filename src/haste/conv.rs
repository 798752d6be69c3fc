//! Step 5: the reduced convolution, patch by patch.
//!
//! The output is tiled into `P x P` patches (edge patches smaller). For each patch:
//! 1. its input window (the input pixels its outputs read, `(ph-1)*stride + K` per side,
//!    zero padded) is hashed channel by channel ([`super::hash`]),
//! 2. channels are grouped by key ([`super::buckets`]),
//! 3. the window is merged to `B` channels and the filters to `B` input slices
//!    ([`super::merge`]),
//! 4. the direct kernel ([`crate::kernels::direct`]) computes the patch's outputs from the
//!    `B` merged channels, written into the full output; the bias is added once at the end.
//!
//! Order of work, for speed: the patches of a band of patch rows are hashed and their inputs
//! merged first; then, for each panel of 64 output channels (the weights are stored in
//! panels, see [`filter_panel`]), every patch of the band sums its merged buckets' filter
//! rows for that panel and runs the kernel, so the panel's filters are read from memory once
//! per band rather than once per patch.

use crate::error::{Error, Result};
use crate::ops::Conv2dParams;

use super::buckets::Buckets;
use super::config::{layer_seed, HasteConfig};
use super::cost::{dense_macs, patch_flops};
use super::hash::{grow, hash_window, HashScratch};
use super::hyperplanes::Hyperplanes;
use super::merge::{merge_filter_rows, merge_input_in_place, merged_row};
use super::stats::LayerStats;
use crate::kernels::direct::{
    self, weights_panels, weights_tap_major, Epilogue, Filters, Geom, PANEL,
};
use crate::kernels::isa::Isa;
use crate::kernels::layout::{add_bias_hwc, from_hwc, to_hwc_padded, IoLayout};

/// The input window of one output patch. Window coordinates `(r, c)` start at image pixel
/// `(iy, ix)` (negative inside the top/left padding); the window is `h x w`, and only rows
/// `r0..r1` and columns `c0..c1` lie inside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub iy: isize,
    pub ix: isize,
    pub h: usize,
    pub w: usize,
    pub r0: usize,
    pub r1: usize,
    pub c0: usize,
    pub c1: usize,
}

impl Window {
    /// The window of output rows `oy0..oy0 + ph` and columns `ox0..ox0 + pw`.
    pub fn of_patch(
        p: &Conv2dParams,
        (h, w): (usize, usize),
        (oy0, ph): (usize, usize),
        (ox0, pw): (usize, usize),
    ) -> Window {
        let iy = (oy0 * p.stride.0) as isize - p.pads[0] as isize;
        let ix = (ox0 * p.stride.1) as isize - p.pads[1] as isize;
        let wh = (ph - 1) * p.stride.0 + p.kh;
        let ww = (pw - 1) * p.stride.1 + p.kw;
        let clip = |start: isize, len: usize, size: usize| {
            let lo = (-start).clamp(0, len as isize) as usize;
            let hi = (size as isize - start).clamp(lo as isize, len as isize) as usize;
            (lo, hi)
        };
        let (r0, mut r1) = clip(iy, wh, h);
        let (c0, mut c1) = clip(ix, ww, w);
        if r0 == r1 || c0 == c1 {
            // Nothing of the image in the window (it lies in the padding): no pixel at all.
            (r1, c1) = (r0, c0);
        }
        Window {
            iy,
            ix,
            h: wh,
            w: ww,
            r0,
            r1,
            c0,
            c1,
        }
    }

    /// Pixels of the window inside the image.
    pub fn present(&self) -> usize {
        (self.r1 - self.r0) * (self.c1 - self.c0)
    }

    /// Whether window pixel `(r, c)` lies inside the image.
    pub fn has(&self, r: usize, c: usize) -> bool {
        r >= self.r0 && r < self.r1 && c >= self.c0 && c < self.c1
    }

    /// Whether every pixel of a `(fh, fw)` window is present.
    pub fn covers(&self, (fh, fw): (usize, usize)) -> bool {
        self.r0 == 0 && self.c0 == 0 && self.r1 == fh && self.c1 == fw
    }
}

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
    params: Conv2dParams,
    cfg: HasteConfig,
    layer_index: usize,
    hyperplanes: Hyperplanes,
    /// Weights in panels of `panel` output channels, `[c_out / panel][(ky, kx)][c_in][panel]`
    /// (see [`filter_panel`]).
    wt: Vec<f32>,
    panel: usize,
    bias: Option<Vec<f32>>,
    force_singletons: bool,
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
    /// Summed filter rows of one patch's merged buckets for one panel (see [`merged_row`]).
    wm: Vec<f32>,
}

/// One patch, hashed and its input merged: what its reduced convolution reads.
#[derive(Clone, Debug, Default)]
struct MergedPatch {
    /// First output row and column of the patch, and its size.
    oy0: usize,
    ox0: usize,
    ph: usize,
    pw: usize,
    /// The window's row length (pixels).
    win_w: usize,
    /// The channels grouped by hash code.
    buckets: Buckets,
    /// The merged window `[win.h][win.w][c_in]`: each bucket's mean in its first channel's
    /// slot.
    mwin: Vec<f32>,
    /// The first channel of each bucket.
    first: Vec<u32>,
    /// The buckets with several channels.
    multi: Vec<u32>,
    /// The row offset table of [`Filters::Rows`] (`[tap][bucket]`, bytes from the current
    /// filter panel): a singleton's offset is the same in every panel and is set once by
    /// [`Self::merge_input`]; a merged bucket's (its summed row in the shared bank) is set
    /// per panel by [`Self::convolve`].
    rows: Vec<usize>,
}

/// Bytes of merged windows a band of patches may hold: the band's patches are merged first,
/// then every filter panel runs over all of them, so the larger the band, the fewer times a
/// wide layer's filters are read, while the windows stay in L2.
const BAND_WINDOW_BYTES: usize = 256 * 1024;

impl MergedPatch {
    /// Merges the input channels of `win` by `self.buckets` (grouped by the caller), and
    /// sets the singletons' filter row offsets (`taps` per channel, panels `panel` wide).
    #[inline(always)]
    fn merge_input(
        &mut self,
        c_in: usize,
        (taps, panel): (usize, usize),
        hwc: &[f32],
        w: usize,
        win: &Window,
    ) {
        let nb = self.buckets.count();
        self.win_w = win.w;
        self.first.clear();
        self.multi.clear();
        for b in 0..nb {
            let members = self.buckets.members(b);
            self.first.push(members[0]);
            if members.len() > 1 {
                self.multi.push(b as u32);
            }
        }
        grow(&mut self.mwin, win.h * win.w * c_in);
        merge_input_in_place(
            hwc,
            w,
            c_in,
            win,
            &self.buckets,
            &self.multi,
            &mut self.mwin,
        );
        grow(&mut self.rows, taps * nb);
        for kk in 0..taps {
            for (b, &f) in self.first.iter().enumerate() {
                self.rows[kk * nb + b] = (kk * c_in + f as usize) * panel * 4;
            }
        }
    }

    /// The patch's outputs for filter panel `q` (output channels `q * panel..`), written into
    /// `band_out`, the band's pixel-major output (starting at output row `row0`). The merged
    /// buckets' filters of this panel are summed just before, while the panel is in cache.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn convolve(
        &mut self,
        conv: &HasteConv,
        q: usize,
        (row0, ow): (usize, usize),
        wm: &mut Vec<f32>,
        band_out: &mut [f32],
        isa: Isa,
    ) {
        let p = &conv.params;
        let (c_in, c_out, taps, panel) = (p.c_in, p.c_out, p.kh * p.kw, conv.panel);
        let nb = self.first.len();
        let panel_len = taps * c_in * panel;
        let wt_panel = &conv.wt[q * panel_len..][..panel_len];
        let merged = self.multi.len();
        grow(wm, taps * merged * panel);
        merge_filter_rows(wt_panel, c_in, panel, taps, &self.buckets, &self.multi, wm);
        // Singletons read this panel of the layer's weights (offsets set once per patch),
        // merged buckets their sums, wherever the bank is relative to the panel.
        let (wt_addr, wm_addr) = (wt_panel.as_ptr() as usize, wm.as_ptr() as usize);
        for (m, &b) in self.multi.iter().enumerate() {
            for kk in 0..taps {
                let at = wm_addr + merged_row(merged, kk, m) * panel * 4;
                self.rows[kk * nb + b as usize] = at.wrapping_sub(wt_addr);
            }
        }
        let geom = Geom {
            win_w: self.win_w,
            c_in,
            c_out: panel,
            kh: p.kh,
            kw: p.kw,
            sh: p.stride.0,
            sw: p.stride.1,
            ph: self.ph,
            pw: self.pw,
            out_w: ow,
            out_stride: c_out,
        };
        let filters = Filters::Rows {
            first: &self.first,
            rows: &self.rows[..taps * nb],
            base: wt_addr,
        };
        let out = &mut band_out[((self.oy0 - row0) * ow + self.ox0) * c_out + q * panel..];
        // SAFETY: every row (panel base plus offset) points at `panel` floats of panel `q` of
        // `conv.wt` (a channel below `c_in`, a tap below `taps`) or of `wm` (a merged row
        // just written), both unchanged until the kernel returns; `first[b] < c_in`; the
        // merged window holds `win.h * win.w * c_in` values; `isa` is a tier the CPU
        // supports (see `HasteConv::forward_on`).
        unsafe { direct::conv_on(isa, &geom, &self.mwin, filters, Epilogue::NONE, out) };
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
            weights_panels(weights, c_in, c_out, taps)
        };
        let p = cfg.tile;
        let fh = (p - 1) * params.stride.0 + params.kh;
        let fw = (p - 1) * params.stride.1 + params.kw;
        if fh > u16::MAX as usize || fw > u16::MAX as usize {
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
        Ok(HasteConv {
            params,
            cfg: cfg.clone(),
            layer_index,
            hyperplanes,
            wt,
            panel,
            bias: bias.map(|b| b.to_vec()),
            force_singletons: false,
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

    /// Same as [`Self::dense_flops`].
    pub fn dense_macs(&self, h: usize, w: usize) -> u64 {
        dense_macs(&self.params, h, w)
    }

    /// Test hook: with `on`, every channel is its own bucket (hashing still runs and is
    /// counted), so the output must equal the dense convolution.
    #[doc(hidden)]
    pub fn set_force_singletons(&mut self, on: bool) {
        self.force_singletons = on;
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
        self.forward_on(Isa::current(), x, (h, w), None, out, scratch, stats, io)
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
        self.forward_on(isa, x, (h, w), Some(band), out, scratch, stats, io)
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
    ) {
        assert!(isa.supported(), "tier {isa} on a CPU without it");
        // SAFETY (both): the CPU supports the tier (asserted).
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.forward_avx512(x, hw, band, out, scratch, stats, io) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.forward_avx2(x, hw, band, out, scratch, stats, io) },
            _ => self.forward_impl(x, hw, band, out, scratch, stats, io, Isa::Portable),
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
        io: IoLayout,
    ) {
        self.forward_impl(x, hw, band, out, scratch, stats, io, Isa::Avx512)
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
        io: IoLayout,
    ) {
        self.forward_impl(x, hw, band, out, scratch, stats, io, Isa::Avx2)
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
        io: IoLayout,
        isa: Isa,
    ) {
        let p = &self.params;
        let (c_in, c_out) = (p.c_in, p.c_out);
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
            c_out * out_rows.len() * ow,
            "HASTE conv: output length for {c_out}x{}x{ow}",
            out_rows.len()
        );
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
        if !io.output_nhwc {
            grow(&mut s.ohwc, oh * ow * c_out);
        }
        let patches_per_row = ow.div_ceil(tile);
        let window_bytes = fh * fw * c_in * std::mem::size_of::<f32>();
        let band_rows = (BAND_WINDOW_BYTES / (patches_per_row * window_bytes).max(1)).max(1);
        let magnitude = self.cfg.magnitude_bins;

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
                    let counts = hash_window(
                        isa,
                        hwc,
                        w,
                        c_in,
                        &win,
                        &self.hyperplanes,
                        self.cfg.centering,
                        magnitude,
                        &mut s.hash,
                    );
                    if s.band.len() <= n {
                        s.band.push(MergedPatch::default());
                    }
                    let patch = &mut s.band[n];
                    n += 1;
                    (patch.oy0, patch.ox0, patch.ph, patch.pw) = (oy0, ox0, ph, pw);
                    if self.force_singletons {
                        patch.buckets.make_singletons(c_in);
                    } else {
                        patch.buckets.group(&s.hash.keys[..c_in]);
                    }
                    patch.merge_input(c_in, (p.kh * p.kw, self.panel), hwc, w, &win);
                    let nb = patch.buckets.count();
                    stats.record_patch((0..nb).map(|b| patch.buckets.size(b)));
                    stats.nonfinite_inputs += counts.nonfinite;
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
            let at = (row0 - out_rows.start) * ow * c_out;
            let band_out = if io.output_nhwc {
                &mut out[at..]
            } else {
                &mut s.ohwc[at..]
            };
            for q in 0..c_out / self.panel {
                for patch in &mut s.band[..n] {
                    patch.convolve(self, q, (row0, ow), &mut s.wm, band_out, isa);
                }
            }
        }
        if io.output_nhwc {
            if let Some(b) = &self.bias {
                add_bias_hwc(out, b);
            }
        } else {
            from_hwc(&s.ohwc, c_out, oh * ow, 0..c_out, self.bias.as_deref(), out);
        }
        s.hwc = hwc_buf;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_geometry() {
        let p = Conv2dParams::new(1, 1, 3, 3)
            .with_pads([1, 2, 0, 0])
            .with_stride(2, 1);
        // Output rows 0..2, columns 0..4 of a 9 x 9 image.
        let win = Window::of_patch(&p, (9, 9), (0, 2), (0, 4));
        assert_eq!((win.iy, win.ix, win.h, win.w), (-1, -2, 5, 6));
        assert_eq!((win.r0, win.r1, win.c0, win.c1), (1, 5, 2, 6));
        assert_eq!(win.present(), 16);
        assert!(win.has(1, 2) && !win.has(0, 2) && !win.has(1, 1));
        // A window entirely in the padding has no pixels.
        let p = Conv2dParams::new(1, 1, 1, 1).with_pads([2; 4]);
        let win = Window::of_patch(&p, (3, 3), (0, 1), (0, 1));
        assert_eq!(win.present(), 0);
    }

    #[test]
    fn all_instruction_set_paths_agree_bitwise() {
        // One filter panel (10 outputs) and two (128).
        for c_out in [10, 128] {
            paths_agree_bitwise(c_out);
        }
    }

    fn paths_agree_bitwise(c_out: usize) {
        let p = Conv2dParams::new(24, c_out, 3, 3).with_pads([1; 4]);
        let n = 24 * c_out * 9;
        let wts: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
            .collect();
        let x: Vec<f32> = (0..24 * 121)
            .map(|i| ((i * 13 % 97) as f32 - 40.0) / 30.0)
            .collect();
        for magnitude_bins in [None, Some(0.5)] {
            let cfg = HasteConfig {
                hyperplanes: 5,
                tile: 3,
                magnitude_bins,
                ..HasteConfig::default()
            };
            let conv = HasteConv::new(p, &wts, None, &cfg, 0).unwrap();
            let run = |f: &dyn Fn(&mut [f32], &mut LayerStats)| {
                let mut out = vec![0.0; c_out * 121];
                let mut stats = LayerStats::default();
                f(&mut out, &mut stats);
                (out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), stats)
            };
            let s = HasteScratch::default();
            let on = |isa: Isa| {
                run(&|o, st| {
                    let mut s = s.clone();
                    conv.forward_on(isa, &x, (11, 11), None, o, &mut s, st, IoLayout::NCHW)
                })
            };
            let generic = on(Isa::Portable);
            let dispatched = run(&|o, st| conv.forward(&x, 11, 11, o, &mut s.clone(), st));
            assert_eq!(generic, dispatched);
            for isa in Isa::available() {
                assert_eq!(generic, on(isa), "{isa}");
            }
            assert!(generic.1.mean_buckets() < 24.0);
        }
    }

    #[test]
    fn bands_of_rows_add_up_to_the_whole_image() {
        let (c_in, c_out, h, w) = (20, 40, 13, 11);
        let p = Conv2dParams::new(c_in, c_out, 3, 3).with_pads([1; 4]);
        let wts: Vec<f32> = (0..c_in * c_out * 9)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
            .collect();
        let bias: Vec<f32> = (0..c_out).map(|i| i as f32 * 0.01).collect();
        // Pixel-major input with some duplicated channels, so buckets merge.
        let x: Vec<f32> = (0..h * w * c_in)
            .map(|i| {
                let (px, c) = (i / c_in, i % c_in);
                ((px * 13 + (c % 7) * 29) % 97) as f32 / 30.0
            })
            .collect();
        let cfg = HasteConfig {
            hyperplanes: 6,
            tile: 4,
            ..HasteConfig::default()
        };
        let conv = HasteConv::new(p, &wts, Some(&bias), &cfg, 1).unwrap();
        let io = IoLayout {
            input_nhwc: true,
            output_nhwc: true,
        };
        let (oh, ow) = p.out_hw(h, w);
        let mut whole = vec![0.0; oh * ow * c_out];
        let mut whole_stats = LayerStats::default();
        let mut s = HasteScratch::default();
        conv.forward_layout(&x, h, w, &mut whole, &mut s, &mut whole_stats, io);
        let mut banded = vec![0.0; oh * ow * c_out];
        let mut band_stats = LayerStats::default();
        let (top, bottom) = banded.split_at_mut(8 * ow * c_out);
        conv.forward_band(&x, (h, w), 0..8, top, &mut s, &mut band_stats);
        let mut other = HasteScratch::default();
        conv.forward_band(&x, (h, w), 8..oh, bottom, &mut other, &mut band_stats);
        band_stats.images += 1;
        assert_eq!(
            whole.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            banded.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(whole_stats, band_stats);
        assert!(whole_stats.mean_buckets() < c_in as f64);
    }

    /// `forward_layout` in the three other memory-order combinations against `forward`
    /// (NCHW) over geometries the first test does not reach: stride 2 and mixed strides,
    /// asymmetric padding, 5x5 and strided 1x1 kernels, edge patches (sizes no tile
    /// divides), 64 or more output channels (the AVX-512 kernel's wide blocks), no bias;
    /// with magnitude bins and centering on and off, and every channel forced into its own
    /// bucket. Outputs must be bit-identical after the transpose and `LayerStats` identical.
    /// One scratch serves every call, so state left by another layout or size would show.
    /// With forced singletons the result must also be the direct kernel's, bit for bit: the
    /// same fused multiply-adds in the same (tap, channel) order over the zero-padded window.
    #[test]
    fn every_memory_order_gives_the_same_bits_and_stats_over_geometries() {
        use crate::kernels::direct::{DirectConv, DirectScratch};
        use crate::kernels::layout::{nchw_to_nhwc, nhwc_to_nchw};
        use crate::ops::{Activation, ConvOp};
        let layouts = [(true, false), (false, true), (true, true)].map(|(i, o)| IoLayout {
            input_nhwc: i,
            output_nhwc: o,
        });
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let mut s = HasteScratch::default();
        let mut ds = DirectScratch::default();
        let cases = [
            (20, 70, (3, 3), (2, 2), [1, 0, 2, 1], (13, 11), 3, true),
            (16, 8, (5, 5), (1, 1), [2; 4], (9, 10), 4, false),
            (32, 64, (1, 1), (2, 2), [0; 4], (9, 9), 2, true),
            (12, 33, (3, 3), (1, 2), [0, 1, 1, 1], (7, 12), 5, true),
            (10, 130, (3, 3), (1, 1), [1; 4], (6, 5), 4, false),
        ];
        for (case, &(c_in, c_out, (kh, kw), (sh, sw), pads, (h, w), tile, bias)) in
            cases.iter().enumerate()
        {
            let p = Conv2dParams::new(c_in, c_out, kh, kw)
                .with_stride(sh, sw)
                .with_pads(pads);
            let wts: Vec<f32> = (0..c_in * c_out * kh * kw)
                .map(|i| (((i + case) * 37 % 101) as f32 - 50.0) / 70.0)
                .collect();
            let bias: Option<Vec<f32>> =
                bias.then(|| (0..c_out).map(|i| (i % 11) as f32 * 0.05 - 0.2).collect());
            // Channels repeat with period 5 (plus a small per-channel offset on some), so
            // some buckets merge and others do not.
            let x: Vec<f32> = (0..c_in * h * w)
                .map(|i| {
                    let (c, px) = (i / (h * w), i % (h * w));
                    let base = ((px * 13 + (c % 5) * 29 + case) % 23) as f32 / 9.0 - 1.2;
                    base + if c % 3 == 0 { 0.01 * c as f32 } else { 0.0 }
                })
                .collect();
            let mut x_hwc = vec![0.0; x.len()];
            nchw_to_nhwc(&x, c_in, h * w, &mut x_hwc);
            let (oh, ow) = p.out_hw(h, w);
            let n = c_out * oh * ow;
            for magnitude_bins in [None, Some(0.25)] {
                for centering in [true, false] {
                    for singletons in [false, true] {
                        let cfg = HasteConfig {
                            hyperplanes: 6,
                            tile,
                            magnitude_bins,
                            centering,
                            ..HasteConfig::default()
                        };
                        let mut conv =
                            HasteConv::new(p, &wts, bias.as_deref(), &cfg, case).unwrap();
                        conv.set_force_singletons(singletons);
                        let what = format!("{p:?} {h}x{w} {cfg:?} singletons={singletons}");
                        let mut want = vec![f32::NAN; n];
                        let mut want_stats = LayerStats::default();
                        let mut fresh = HasteScratch::default();
                        conv.forward(&x, h, w, &mut want, &mut fresh, &mut want_stats);
                        assert_eq!(want_stats.images, 1, "{what}");
                        // Merged buckets where allowed, so the merge paths run.
                        let kept = want_stats.mean_buckets();
                        if singletons {
                            assert_eq!(kept, c_in as f64, "{what}");
                        } else {
                            assert!(kept < c_in as f64, "{what}: nothing merged");
                        }
                        for io in layouts {
                            let xin = if io.input_nhwc { &x_hwc } else { &x };
                            let mut out = vec![f32::NAN; n];
                            let mut stats = LayerStats::default();
                            conv.forward_layout(xin, h, w, &mut out, &mut s, &mut stats, io);
                            let mut got = out.clone();
                            if io.output_nhwc {
                                nhwc_to_nchw(&out, c_out, oh * ow, &mut got);
                            }
                            assert_eq!(bits(&got), bits(&want), "{what} {io:?}");
                            assert_eq!(stats, want_stats, "{what} {io:?}");
                        }
                        if singletons {
                            let op = ConvOp {
                                params: p,
                                weights: wts.clone(),
                                bias: bias.clone(),
                                activation: Activation::None,
                                residual: None,
                            };
                            let d = DirectConv::new(&op).unwrap();
                            let mut dense = vec![f32::NAN; n];
                            d.forward(&x, (h, w), &mut dense, &mut ds, IoLayout::NCHW, None);
                            assert_eq!(bits(&dense), bits(&want), "{what}: direct kernel");
                        }
                    }
                }
            }
        }
    }
}
