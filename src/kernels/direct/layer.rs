//! The dense convolution layer on the direct kernel: pads an image (or reads it in place),
//! splits it over threads by output rows or channels, and applies the epilogue.

use super::DirectScratch;
use super::{
    conv_live_at_on, panel_width, weights_panels, Epilogue, Filters, Geom, Live, Sums, PANEL,
};
use crate::kernels::aligned::AlignedFloats;
use crate::kernels::isa::Isa;
use crate::kernels::layout::{self, IoLayout};
use crate::kernels::{grow, SharedOut};
use crate::ops::{Activation, Conv2dParams, ConvOp};
use std::ops::Range;

/// A dense convolution (groups 1, no dilation) run by the direct kernel on NCHW tensors: the
/// input is transposed once into a zero-padded pixel-major image, the kernel computes every
/// output in place, and the epilogue transposes back with bias and activation.
#[derive(Clone, Debug)]
pub struct DirectConv {
    params: Conv2dParams,
    /// Weights in panels of `panel` output channels ([`weights_panels`]), the width the
    /// kernel of the process's tier reads ([`panel_width`]), from a cache line's start: a
    /// `Vec` of a large layer starts 16 bytes past one, and then every other AVX2 filter
    /// load of a 16-channel group straddles two lines.
    panels: AlignedFloats,
    panel: usize,
    bias: Option<Vec<f32>>,
    activation: Activation,
    /// The activation after a fused residual addition ([`ConvOp::residual`]).
    residual: Option<Activation>,
}

/// How [`DirectConv::forward_bands`] splits an image: `per` output rows a part, the input
/// pixel-major (`nhwc`) or planar, and the image's residual input if any.
#[derive(Clone, Copy)]
struct Bands<'a> {
    per: usize,
    nhwc: bool,
    residual: Option<&'a [f32]>,
}

/// Pixels per part below which a pointwise layer's parts split its output channels, not its
/// pixels: one register block of outputs (see `channel_split`).
const FEW_PIXELS: usize = 6;

impl DirectConv {
    /// Whether the direct kernel can run `p` (one group, no dilation) and is the better
    /// choice. With pixel-major input and output it runs the shared models' spatial
    /// convolutions at 90-110 GFLOP/s on one core, against 60-100 for im2col + GEMM, first
    /// RGB layers included (`cargo run --release --example conv_paths`; in the network, where
    /// the im2col path also transposes its planar result, Tiny Darknet's 3 -> 16 stem took
    /// 0.69 ms that way against 0.34 here). A 1x1 layer of 16 or more output channels runs
    /// here too: the `gemm` crate (since replaced) packed the whole input first, which for
    /// MobileNet's projections (32 -> 16 at 112 x 112, 144 -> 24 at 56 x 56) was a pass over
    /// megabytes per layer (MobileNetV2's 1x1 layers, 3.8 -> 3.5 ms on one core and 2.5 -> 2.2
    /// on two at batch 1, `--example profile`). A strided or padded 1x1 layer is not
    /// one GEMM (im2col would copy a subsampled input, in NCHW), so it runs here at any width.
    /// So do 1x1 layers of fewer than 16 outputs: pixel-major in and out, the GEMM path took
    /// 3-34 times as long for 2 to 15 outputs (16 -> 8 at 112 x 112: 504 against 91 us;
    /// MNASNet 0.5's first projection 4.1 ms of a batch of 8 against onnxruntime's 0.5),
    /// and about as long for one.
    pub fn suits(p: &Conv2dParams) -> bool {
        p.groups == 1 && p.dilation == (1, 1)
    }

    /// `None` when the kernel cannot run the convolution (groups or dilation other than 1);
    /// whether it should is [`Self::suits`].
    pub fn new(op: &ConvOp) -> Option<DirectConv> {
        let p = op.params;
        if p.groups != 1 || p.dilation != (1, 1) {
            return None;
        }
        let panel = panel_width(Isa::current());
        Some(DirectConv {
            params: p,
            panels: AlignedFloats::from(
                &weights_panels(&op.weights, p.c_in, p.c_out, p.kh * p.kw, panel)[..],
            ),
            panel,
            bias: op.bias.clone(),
            activation: op.activation,
            residual: op.residual,
        })
    }

    /// Bytes of its re-laid weights and bias.
    pub fn weight_bytes(&self) -> u64 {
        use crate::kernels::buffer_bytes;
        self.panels.bytes() + self.bias.as_ref().map_or(0, buffer_bytes)
    }

    pub fn params(&self) -> &Conv2dParams {
        &self.params
    }

    /// Makes `twin` this convolution with each input channel's weights multiplied by its
    /// `scale` (a folded channel scale, [`crate::ops::ConvOp::input_scale`]): the kernel then
    /// sums `x * (s * w)` where the unfolded network summed `(x * s) * w` (one rounding
    /// moved), for `c_in * c_out * taps` products instead of a pass over the image. `twin`'s
    /// buffers are reused from image to image.
    pub fn scaled_into(&self, scale: &[f32], twin: &mut Option<DirectConv>) {
        let p = &self.params;
        assert_eq!(scale.len(), p.c_in, "one scale per input channel");
        let t = twin.get_or_insert_with(|| self.clone());
        t.params = self.params;
        t.panel = self.panel;
        t.bias.clone_from(&self.bias);
        (t.activation, t.residual) = (self.activation, self.residual);
        t.panels.grow(self.panels.len());
        // The panels' order (`weights_panels`): panel, tap, input channel, `width` outputs.
        let (mut rows, mut to) = (self.panels.iter(), t.panels.iter_mut());
        for q0 in (0..p.c_out).step_by(self.panel) {
            let width = (p.c_out - q0).min(self.panel);
            for _ in 0..p.kh * p.kw {
                for &k in scale {
                    for (&w, t) in rows.by_ref().take(width).zip(to.by_ref()) {
                        *t = w * k;
                    }
                }
            }
        }
        debug_assert_eq!(t.panels.len(), self.panels.len());
    }

    /// One image `x = [c_in, h, w]` -> `out = [c_out, oh, ow]`, on the calling thread, each
    /// in the memory order `io` gives. For a convolution with a fused residual addition,
    /// `residual` is that input for this image (in the output's order); without it the output
    /// stops at the bias.
    pub fn forward(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
        s: &mut DirectScratch,
        io: IoLayout,
        residual: Option<&[f32]>,
    ) {
        let (oh, ow) = self.params.out_hw(h, w);
        let n = oh * ow * self.params.c_out;
        let win = if self.reads_in_place(io.input_nhwc) {
            x
        } else {
            self.pad_input(x, h, w, io.input_nhwc, s);
            &s.padded
        };
        if io.output_nhwc {
            let e = self.epilogue(residual);
            self.output_rows(win, (h, w), 0..oh, ow, &mut out[..n], e);
            return;
        }
        grow(&mut s.out, n);
        self.output_rows(win, (h, w), 0..oh, ow, &mut s.out[..n], Epilogue::NONE);
        let chans = 0..self.params.c_out;
        self.epilogue_channels(&s.out, oh * ow, chans, out, residual);
    }

    /// As [`Self::forward`], with the output rows shared among `parts` rayon tasks (for an
    /// image too large to leave one thread idle).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_parallel(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
        s: &mut DirectScratch,
        io: IoLayout,
        parts: usize,
        residual: Option<&[f32]>,
    ) {
        use rayon::prelude::*;
        let p = &self.params;
        let (h, w) = self.split_shape((h, w), parts);
        let (oh, ow) = p.out_hw(h, w);
        let n = oh * ow * p.c_out;
        let per = oh.div_ceil(parts.max(1)).max(1);
        // One pixel in and out (squeeze-excitation's layers) is the same memory in either
        // layout, and a pixel-major output can split its channels.
        let io = if (h * w, oh * ow) == (1, 1) {
            IoLayout::NHWC
        } else {
            io
        };
        if io.output_nhwc {
            if let Some(starts) = self.channel_split((h, w), parts) {
                let e = self.epilogue(residual);
                return self.forward_channel_parts(x, (h, w), &mut out[..n], s, io, &starts, e);
            }
            let bands = Bands {
                per,
                nhwc: io.input_nhwc,
                residual,
            };
            return self.forward_bands(x, (h, w), &mut out[..n], s, bands);
        }
        // A planar output: pixel-major rows first, then transposed with bias and activation.
        self.pad_input_parallel(x, h, w, io.input_nhwc, s);
        let padded = &s.padded[..];
        grow(&mut s.out, n);
        s.out[..n]
            .par_chunks_mut(per * ow * p.c_out)
            .enumerate()
            .for_each(|(k, chunk)| {
                let oy0 = k * per;
                let rows_here = chunk.len() / (ow * p.c_out);
                self.output_rows(
                    padded,
                    (h, w),
                    oy0..oy0 + rows_here,
                    ow,
                    chunk,
                    Epilogue::NONE,
                );
            });
        let hw = oh * ow;
        let per_c = p.c_out.div_ceil(parts.max(1)).max(1);
        let ohwc = &s.out[..];
        out[..p.c_out * hw]
            .par_chunks_mut(per_c * hw)
            .enumerate()
            .for_each(|(k, o)| {
                let c0 = k * per_c;
                let r = residual.map(|r| &r[c0 * hw..][..o.len()]);
                self.epilogue_channels(ohwc, hw, c0..c0 + o.len() / hw, o, r);
            });
    }

    /// The image shape `parts` split by rows: a pointwise layer whose rows do not split
    /// evenly takes its pixels as one column (`h * w` rows of one pixel), so that parts get
    /// equal shares of pixels (7 rows on two cores kept one busy for 4 while the other had 3;
    /// RegNetX's 400 -> 400 layers at 7 x 7). The same memory and the same sums: a 1x1
    /// convolution without stride or padding reads each pixel alone. Only for layers of
    /// more than 32 output channels, whose blocks run across rows; narrower ones run row by
    /// row (`row_blocks`), 16 pixels a block.
    fn split_shape(&self, (h, w): (usize, usize), parts: usize) -> (usize, usize) {
        let p = &self.params;
        if p.is_pointwise() && p.c_out > 32 && !h.is_multiple_of(parts.max(1)) {
            (h * w, 1)
        } else {
            (h, w)
        }
    }

    /// [`Self::forward_parallel`] with a pixel-major output: each part pads just the input
    /// rows its `per` output rows read into a buffer of its own (transposing them from planar
    /// when `nhwc` is false) and computes them, so a layer is one parallel step, not two (at
    /// batch 1 a CIFAR layer is 10-30 us of work, and every join between the cores costs;
    /// the first layer's transpose no longer runs on one core).
    fn forward_bands(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
        s: &mut DirectScratch,
        Bands {
            per,
            nhwc,
            residual,
        }: Bands,
    ) {
        use rayon::prelude::*;
        let p = &self.params;
        let (oh, ow) = p.out_hw(h, w);
        let (wp, c) = (w + p.pads[1] + p.pads[3], p.c_in);
        let parts = oh.div_ceil(per);
        if s.bands.len() < parts {
            s.bands.resize_with(parts, Vec::new);
        }
        out.par_chunks_mut(per * ow * p.c_out)
            .zip(s.bands[..parts].par_iter_mut())
            .enumerate()
            .for_each(|(k, (chunk, band))| {
                let rows = chunk.len() / (ow * p.c_out);
                // Padded input rows `r0..r1` feed output rows `k * per..k * per + rows`.
                let r0 = k * per * p.stride.0;
                let oys = k * per..k * per + rows;
                let r1 = (k * per + rows - 1) * p.stride.0 + p.kh;
                let r = residual.map(|r| &r[k * per * ow * p.c_out..][..chunk.len()]);
                if self.reads_in_place(nhwc) {
                    let win = &x[r0 * wp * c..r1 * wp * c];
                    return self.rows_from_window(win, wp, oys, (h, ow), chunk, self.epilogue(r));
                }
                self.pad_rows(x, (h, w), nhwc, r0..r1, band);
                self.rows_from_window(band, wp, oys, (h, ow), chunk, self.epilogue(r));
            });
    }

    /// Where each of `parts` starts in the output channels (a multiple of 64, so each part's
    /// filters are whole panels; the last part also takes a narrower last panel) when they
    /// should split the layer by channels rather than rows: when the output rows do not split
    /// evenly among them (7 rows on 2 cores kept one busy for 4 while the other had 3). Then
    /// each part computes every output pixel for its channels; parts get about equal channel
    /// counts. (Splitting by channels where the filters outweigh the input, so that each
    /// core streams half of them, measured slower on RegNetX's 400 -> 400 1x1 layers at 7 x 7
    /// than equal shares of the pixels: 115-160 against 108-110 us on two cores.)
    fn channel_split(&self, (h, w): (usize, usize), parts: usize) -> Option<Vec<usize>> {
        let p = &self.params;
        let (oh, ow) = p.out_hw(h, w);
        // Parts start on multiples of the widest panel, so on a panel of every tier.
        let panels = p.c_out / PANEL;
        // A pointwise layer's parts split pixels, not rows (see `split_shape`), unless it has
        // fewer pixels than a block of outputs per part: squeeze-excitation's 1x1 layers on
        // one pixel (960 -> 240 in MobileNetV3) ran on one core, 1.2x slower than alone
        // (the input on the other core), where parts of the channels stream half the
        // filters each.
        let few_pixels = p.is_pointwise() && oh * ow < FEW_PIXELS * parts;
        let uneven_rows = !p.is_pointwise() && !oh.is_multiple_of(parts);
        if parts < 2 || panels < parts || !(uneven_rows || few_pixels) {
            return None;
        }
        // Part `k` starts at `k * c_out / parts`, rounded to the nearest panel.
        let starts = (0..parts)
            .map(|k| (2 * k * p.c_out + parts * PANEL) / (2 * parts * PANEL) * PANEL)
            .collect::<Vec<_>>();
        let increasing = starts.windows(2).all(|s| s[0] < s[1]);
        if !increasing || starts[parts - 1] >= p.c_out {
            return None;
        }
        // Only where the largest part's channels are a smaller excess over an even share
        // than the largest part's rows would be: Inception v3's 80 -> 192 layer at 71 x 71
        // split its three panels two to one, where 36 and 35 rows are nearly even (1.47x
        // from one core to two, against 1.9x by rows).
        let ends = starts[1..].iter().chain(std::iter::once(&p.c_out));
        let widest = ends
            .zip(&starts)
            .map(|(e, s)| e - s)
            .max()
            .unwrap_or(p.c_out);
        (widest * oh < oh.div_ceil(parts) * p.c_out).then_some(starts)
    }

    /// [`Self::forward_parallel`] split by output channels: each part pads the whole input
    /// into a buffer of its own (a small copy next to its share of the filters) and computes
    /// its channels (from `starts[k]` to the next part's start) of every output pixel, in place
    /// in the shared pixel-major output.
    #[allow(clippy::too_many_arguments)]
    fn forward_channel_parts(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
        s: &mut DirectScratch,
        io: IoLayout,
        starts: &[usize],
        e: Epilogue,
    ) {
        use rayon::prelude::*;
        let p = &self.params;
        let (oh, ow) = p.out_hw(h, w);
        let (hp, wp) = (h + p.pads[0] + p.pads[2], w + p.pads[1] + p.pads[3]);
        let taps = p.kh * p.kw;
        let parts = starts.len();
        if s.bands.len() < parts {
            s.bands.resize_with(parts, Vec::new);
        }
        assert_eq!(out.len(), oh * ow * p.c_out);
        // Parts write disjoint channels of each pixel (see below).
        let shared = SharedOut(out.as_mut_ptr());
        s.bands[..parts]
            .par_iter_mut()
            .enumerate()
            .for_each(|(k, band)| {
                let win = if self.reads_in_place(io.input_nhwc) {
                    x
                } else {
                    self.pad_rows(x, (h, w), io.input_nhwc, 0..hp, band);
                    &band[..]
                };
                let (c0, c1) = (starts[k], starts.get(k + 1).copied().unwrap_or(p.c_out));
                let width = c1 - c0;
                let g = Geom {
                    c_out: width,
                    ..self.geom(wp, oh, ow)
                };
                // The panels follow each other, and this part's start on a panel: they are
                // one slice, laid out as the panels of a layer of `width` channels.
                let panels = &self.panels[c0 * taps * p.c_in..][..width * taps * p.c_in];
                let e = Epilogue {
                    bias: e.bias.map(|b| &b[c0..]),
                    residual: e.residual.map(|r| &r[c0..]),
                    activation: e.activation,
                };
                let f = Filters::Panels {
                    weights: panels,
                    width: self.panel,
                };
                // SAFETY: the panels hold this part's weights, the band the whole padded
                // input; part `k` writes channels `c0..c0 + width` of each output pixel and
                // no other part does (`out` holds `oh * ow` pixels of `c_out`, asserted).
                unsafe { self.rows_at(&g, win, (0, h), f, e, shared.at(c0)) };
            });
    }

    /// Whether the kernel reads the input where it is: pixel-major and without padding, it is
    /// already the window the kernel addresses. (Copied, ResNet-18's 1x1 stride-2 shortcuts,
    /// which read a quarter of the copy, ran at 95-126 GFLOP/s at batch 1; in place, 143-165.)
    fn reads_in_place(&self, nhwc: bool) -> bool {
        nhwc && self.params.pads == [0; 4]
    }

    /// The kernel's geometry for `rows` whole output rows of `ow` outputs over a window of
    /// rows `win_w` pixels long, all output channels.
    fn geom(&self, win_w: usize, rows: usize, ow: usize) -> Geom {
        let p = &self.params;
        Geom {
            win_w,
            c_in: p.c_in,
            c_out: p.c_out,
            kh: p.kh,
            kys: (0, p.kh),
            kw: p.kw,
            kxs: (0, p.kw),
            sh: p.stride.0,
            sw: p.stride.1,
            ph: rows,
            pw: ow,
            out_w: ow,
            out_stride: p.c_out,
            sums: Sums::WHOLE,
        }
    }

    /// Rows `rows` of the zero-padded pixel-major image of `x` (NCHW, or NHWC with `nhwc`)
    /// into `band`.
    fn pad_rows(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        nhwc: bool,
        rows: Range<usize>,
        band: &mut Vec<f32>,
    ) {
        let p = &self.params;
        let (wp, c) = (w + p.pads[1] + p.pads[3], p.c_in);
        grow(band, rows.len() * wp * c);
        let top_left = (p.pads[0], p.pads[1]);
        for (r, row) in rows.zip(band.chunks_exact_mut(wp * c)) {
            if nhwc {
                layout::pad_hwc_row(x, c, (h, w), top_left, r, row);
            } else {
                layout::pad_chw_row(x, c, (h, w), top_left, r, row);
            }
        }
    }

    /// Copies `x` (NCHW, or NHWC with `nhwc`) into the zero-padded pixel-major buffer.
    fn pad_input(&self, x: &[f32], h: usize, w: usize, nhwc: bool, s: &mut DirectScratch) {
        let p = &self.params;
        let (hp, wp) = (h + p.pads[0] + p.pads[2], w + p.pads[1] + p.pads[3]);
        grow(&mut s.padded, hp * wp * p.c_in);
        let (top_left, padded) = ((p.pads[0], p.pads[1]), (hp, wp));
        if nhwc {
            layout::pad_hwc(x, p.c_in, (h, w), top_left, padded, &mut s.padded);
        } else {
            layout::to_hwc_padded(x, p.c_in, (h, w), top_left, padded, &mut s.padded);
        }
    }

    /// [`Self::pad_input`] with the rows of a pixel-major input copied in parallel.
    fn pad_input_parallel(&self, x: &[f32], h: usize, w: usize, nhwc: bool, s: &mut DirectScratch) {
        use rayon::prelude::*;
        if !nhwc {
            return self.pad_input(x, h, w, nhwc, s);
        }
        let p = &self.params;
        let (hp, wp, c) = (h + p.pads[0] + p.pads[2], w + p.pads[1] + p.pads[3], p.c_in);
        let (top, left) = (p.pads[0], p.pads[1]);
        grow(&mut s.padded, hp * wp * c);
        s.padded[..hp * wp * c]
            .par_chunks_mut(wp * c)
            .enumerate()
            .for_each(|(r, row)| layout::pad_hwc_row(x, c, (h, w), (top, left), r, row));
    }

    /// Bias, the residual (when this convolution has one and it is given) and activation, for
    /// pixel-major outputs (the kernel applies them).
    fn epilogue<'a>(&'a self, residual: Option<&'a [f32]>) -> Epilogue<'a> {
        let (residual, activation) = self.finish(residual);
        Epilogue {
            bias: self.bias.as_deref(),
            residual,
            activation,
        }
    }

    /// `rows` rows of a 1x1 convolution without stride or padding, `w` pixels wide, from the
    /// pixel-major input rows `x` into `ohwc`, bias and activation included (no residual).
    pub fn pointwise_rows(&self, x: &[f32], w: usize, rows: usize, ohwc: &mut [f32]) {
        let p = &self.params;
        assert!(p.is_pointwise() && p.stride == (1, 1) && p.pads == [0; 4]);
        assert!(x.len() >= rows * w * p.c_in && ohwc.len() >= rows * w * p.c_out);
        self.rows_from_window(x, w, 0..rows, (rows, w), ohwc, self.epilogue(None));
    }

    /// The residual the output gets and the activation after it: the fused residual
    /// addition's when this convolution has one and `residual` is given, else none and the
    /// convolution's own.
    fn finish<'a>(&self, residual: Option<&'a [f32]>) -> (Option<&'a [f32]>, Activation) {
        match (residual, self.residual) {
            (Some(r), Some(after)) => (Some(r), after),
            _ => (None, self.activation),
        }
    }

    /// Output rows `oys` of an `h x w` image into `ohwc` (pixel-major, starting at row
    /// `oys.start`), finished by `e`.
    fn output_rows(
        &self,
        padded: &[f32],
        (h, w): (usize, usize),
        oys: Range<usize>,
        ow: usize,
        ohwc: &mut [f32],
        e: Epilogue,
    ) {
        let p = &self.params;
        let wp = w + p.pads[1] + p.pads[3];
        let win = &padded[oys.start * p.stride.0 * wp * p.c_in..];
        self.rows_from_window(win, wp, oys, (h, ow), ohwc, e);
    }

    /// Output rows `oys` of an image `h` rows high into `ohwc`, reading the padded input rows
    /// from `win` on (rows of `wp` pixels, from the one under output row `oys.start`).
    fn rows_from_window(
        &self,
        win: &[f32],
        wp: usize,
        oys: Range<usize>,
        (h, ow): (usize, usize),
        ohwc: &mut [f32],
        e: Epilogue,
    ) {
        let p = &self.params;
        let rows = oys.len();
        if rows == 0 || ow == 0 {
            return;
        }
        let needed = ((rows - 1) * p.stride.0 + p.kh) * wp * p.c_in;
        assert!(win.len() >= needed, "window of {} for {needed}", win.len());
        assert!(ohwc.len() >= rows * ow * p.c_out);
        let f = Filters::Panels {
            weights: &self.panels,
            width: self.panel,
        };
        // SAFETY: the panels hold every weight, and `win` holds every padded input row that
        // the output rows read (checked just above); `ohwc` holds `rows * ow * c_out` values.
        unsafe {
            self.rows_at(
                &self.geom(wp, rows, ow),
                win,
                (oys.start, h),
                f,
                e,
                ohwc.as_mut_ptr(),
            )
        };
    }

    /// [`super::conv_at`] for the `g.ph` output rows from image row `oy0` of an image `h` rows
    /// high, skipping the kernel rows that fall on the zero padding above or below it (see
    /// [`conv_live_at_on`]).
    ///
    /// # Safety
    /// As [`super::conv_at`] for `g`.
    unsafe fn rows_at(
        &self,
        g: &Geom,
        win: &[f32],
        (oy0, h): (usize, usize),
        f: Filters,
        e: Epilogue,
        out: *mut f32,
    ) {
        // The window's first row is padded row `oy0 * sh`; the image fills padded rows
        // `top..top + h` and columns `left..left + w`.
        let p = &self.params;
        let (y, top, left) = (oy0 * g.sh, p.pads[0], p.pads[1]);
        let w = g.win_w - p.pads[1] - p.pads[3];
        let live = Live {
            rows: (top.saturating_sub(y), (top + h).saturating_sub(y)),
            cols: (left, left + w),
        };
        // SAFETY: forwarded from the caller; `Isa::current` only returns supported tiers.
        unsafe { conv_live_at_on(Isa::current(), g, win, live, f, e, out) };
    }

    /// Output channels `chans` of the NCHW output (`out` starts at channel `chans.start`):
    /// transposed from `ohwc`, plus bias, then the activation.
    fn epilogue_channels(
        &self,
        ohwc: &[f32],
        hw: usize,
        chans: std::ops::Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let bias = self.bias.as_ref().map(|b| &b[chans.clone()]);
        layout::from_hwc(ohwc, self.params.c_out, hw, chans.clone(), bias, out);
        let out = &mut out[..chans.len() * hw];
        match self.finish(residual) {
            (Some(r), after) => crate::kernels::activation::add_then_apply(after, out, r),
            (None, activation) => crate::kernels::activation::apply(activation, out),
        }
    }
}
