//! One patch of a HASTE convolution between hashing and its reduced convolution: its
//! buckets, its merged input window, and the filter rows its buckets read (steps 4 and 5 of
//! [`super`] for one patch).

use super::buckets::Buckets;
use super::conv::HasteConv;
use super::merge::{average_buckets_in_place, merge_filter_rows};
use super::steps::StepTimer;
use super::window::Window;
use crate::kernels::aligned::AlignedFloats;
use crate::kernels::direct::{self, Epilogue, Filters, Geom, Live, Sums};
use crate::kernels::isa::Isa;

/// One patch, hashed and its input merged: what its reduced convolution reads.
#[derive(Clone, Debug, Default)]
pub(super) struct MergedPatch {
    /// The image of the call the patch belongs to.
    pub image: usize,
    /// First output row and column of the patch, and its size.
    pub oy0: usize,
    pub ox0: usize,
    pub ph: usize,
    pub pw: usize,
    /// The copied window's row length (pixels): the hyperplanes' window width.
    win_w: usize,
    /// The window rows and columns inside the image (the others are zero padding, which
    /// the reduced convolution skips where it can).
    live: Live,
    /// The channels grouped by hash code.
    pub buckets: Buckets,
    /// Where the patch's merged window `[win.h][win.w][c_in]` (each bucket's mean in its
    /// first channel's slot) starts in the band's window buffer, and its length.
    pub at: usize,
    len: usize,
    /// The first channel of each bucket.
    first: Vec<u32>,
    /// The buckets with several channels.
    multi: Vec<u32>,
    /// The filter row table of the panel being convolved, and which panel and summed-rows
    /// buffer it points into (a panel's kernel rows, run one at a time, share it).
    rows: RowTable,
    rows_for: (usize, usize),
}

/// Where a band's outputs go: `stride` floats a pixel, filter panel `first` at a pixel's
/// first float (the whole output: `c_out` and 0; one part of the panels, its own buffer).
#[derive(Clone, Copy, Debug)]
pub(super) struct OutPanels {
    pub stride: usize,
    pub first: usize,
}

/// The row table of [`Filters::Rows`] for one patch and filter panel (one pointer per
/// bucket, at its tap-0 row), written by the panel's first [`MergedPatch::convolve`] (its
/// other kernel rows read the same table) before the kernel reads it: a singleton's row
/// points into the layer's weights, a merged bucket's into its summed rows.
#[derive(Clone, Debug, Default)]
pub(super) struct RowTable(Vec<*const f32>);

// SAFETY: the pointers are only read by the kernel calls of the `convolve`s of the panel
// they were written for, on the thread that wrote them; between panels the table is dead
// storage.
unsafe impl Send for RowTable {}
unsafe impl Sync for RowTable {}

impl RowTable {
    /// Bytes it holds.
    pub(super) fn bytes(&self) -> u64 {
        crate::kernels::buffer_bytes(&self.0)
    }
}

impl MergedPatch {
    /// Bytes its buffers hold.
    pub(super) fn bytes(&self) -> u64 {
        use crate::kernels::buffer_bytes as b;
        self.buckets.bytes() + b(&self.first) + b(&self.multi) + self.rows.bytes()
    }

    /// Copies the patch's window out of the pixel-major image `hwc` (width `w`) into a frame
    /// of the hyperplanes' window size `frame` (see [`Window::copy_window_scanning`]; the
    /// frame past an edge patch's window is not written): what the hash reads (with the
    /// terms of the window's extent), and what [`Self::merge_input`] then merges in place.
    /// `bits` gets each channel's or-ed bits; true when every value is finite.
    /// The band's window buffer `windows` grows to hold it, from `self.at`. `isa`: the
    /// caller's tier.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn copy_window(
        &mut self,
        c_in: usize,
        hwc: &[f32],
        w: usize,
        win: &Window,
        frame: (usize, usize),
        windows: &mut AlignedFloats,
        bits: &mut Vec<u32>,
        isa: Isa,
    ) -> bool {
        self.win_w = frame.1;
        self.live = win.live();
        self.len = frame.0 * frame.1 * c_in;
        windows.grow(self.at + self.len);
        let mwin = &mut windows[self.at..][..self.len];
        win.copy_window_scanning(hwc, w, c_in, frame.1, mwin, bits, isa)
    }

    /// The window copied by [`Self::copy_window`] into `windows`.
    pub(super) fn window<'a>(&self, windows: &'a [f32]) -> &'a [f32] {
        &windows[self.at..][..self.len]
    }

    /// Merges the input channels of the copied window `win` by `self.buckets` (grouped by
    /// the caller), in place.
    #[inline(always)]
    pub(super) fn merge_input(&mut self, c_in: usize, win: &Window, windows: &mut [f32]) {
        let nb = self.buckets.count();
        self.first.clear();
        self.multi.clear();
        for b in 0..nb {
            let members = self.buckets.members(b);
            self.first.push(members[0]);
            if members.len() > 1 {
                self.multi.push(b as u32);
            }
        }
        let (b, m) = (&self.buckets, &self.multi);
        let mwin = &mut windows[self.at..][..self.len];
        average_buckets_in_place(c_in, win, self.win_w, b, m, mwin);
    }

    /// The patch's outputs for filter panel `q` (output channels `q * panel..`), or, with
    /// `ky`, that kernel row's part of them (the calls of the rows before it ran: see
    /// [`direct::conv_live_row_at_on`]), written into
    /// `band_out`, the band's pixel-major output (starting at output row `row0`, `out.stride`
    /// floats a pixel, panel `out.first` at its first). The merged buckets' filters of this
    /// panel (of this kernel row's taps) are summed just before, while they are in cache.
    /// `ahead` is what the kernel prefetches while it computes (see [`Filters::Rows`]).
    /// `epilogue` finishes the outputs
    /// (its bias this panel's, its residual laid out as `band_out`). `windows` holds the
    /// merged window.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn convolve(
        &mut self,
        conv: &HasteConv,
        (q, ky): (usize, Option<usize>),
        (row0, ow): (usize, usize),
        (wm, windows): (&mut AlignedFloats, &[f32]),
        (band_out, out, epilogue): (&mut [f32], OutPanels, Epilogue),
        ahead: &[f32],
        isa: Isa,
        timer: &mut StepTimer,
    ) {
        let p = &conv.params;
        let (c_in, taps, panel) = (p.c_in, p.kh * p.kw, conv.panel);
        let panel_len = taps * c_in * panel;
        let wt_panel = &conv.wt[q * panel_len..][..panel_len];
        wm.grow(taps * c_in * panel);
        // The taps summed: one kernel row's, or all.
        let (t0, t1) = ky.map_or((0, taps), |ky| (ky * p.kw, (ky + 1) * p.kw));
        let tap_rows = t0 * c_in * panel..t1 * c_in * panel;
        let (merged, buckets) = (&mut wm[tap_rows.clone()], &self.buckets);
        let wt_taps = &wt_panel[tap_rows];
        merge_filter_rows(wt_taps, c_in, panel, t1 - t0, buckets, &self.multi, merged);
        timer.lap(|t| &mut t.filter_merge);
        // Singletons read this panel of the layer's weights, merged buckets their sums (both
        // with the panel's tap stride): the same table for each kernel row of the panel.
        let built_for = (q, wm.as_ptr() as usize);
        if ky.is_none_or(|ky| ky == 0) || self.rows_for != built_for {
            self.rows_for = built_for;
            let rows = &mut self.rows.0;
            rows.clear();
            rows.extend(
                self.first
                    .iter()
                    .map(|&f| wt_panel[f as usize * panel..].as_ptr()),
            );
            for (m, &b) in self.multi.iter().enumerate() {
                rows[b as usize] = wm[m * panel..].as_ptr();
            }
        }
        let geom = Geom {
            win_w: self.win_w,
            c_in,
            c_out: panel,
            kh: p.kh,
            kys: (0, p.kh),
            kw: p.kw,
            kxs: (0, p.kw),
            sh: p.stride.0,
            sw: p.stride.1,
            ph: self.ph,
            pw: self.pw,
            out_w: ow,
            out_stride: out.stride,
            sums: Sums::WHOLE,
        };
        let filters = Filters::Rows {
            first: &self.first,
            rows: &self.rows.0,
            tap_stride: c_in * panel,
            ahead,
        };
        let at = ((self.oy0 - row0) * ow + self.ox0) * out.stride + (q - out.first) * panel;
        let out = &mut band_out[at..];
        let epilogue = Epilogue {
            residual: epilogue.residual.map(|r| &r[at..]),
            ..epilogue
        };
        timer.lap(|t| &mut t.row_table);
        let (win, live) = (self.window(windows), self.live);
        assert!(geom.fits(out.len()));
        let (g, o) = (&geom, out.as_mut_ptr());
        // SAFETY: every row and its taps (`c_in * panel` apart) point at `panel` floats of
        // panel `q` of `conv.wt` (a channel below `c_in`) or of `wm` (merged rows just
        // written, `wm` as large as a panel), both unchanged until the kernel returns;
        // `first[b] < c_in`; the merged window holds `win.h * win.w * c_in` values; `out`
        // holds every output (asserted); `isa` is a tier the CPU supports (see
        // `HasteConv::forward_on`).
        unsafe {
            match ky {
                Some(ky) => {
                    direct::conv_live_row_at_on(isa, g, win, live, ky, filters, epilogue, o)
                }
                None => direct::conv_live_at_on(isa, g, win, live, filters, epilogue, o),
            }
        };
        timer.lap(|t| &mut t.kernel);
    }
}
