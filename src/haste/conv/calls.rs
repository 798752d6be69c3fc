//! The forward pass's entry points: one image, a band of rows, a part of the filter panels,
//! finished or not, each dispatched to the instruction-set copy of [`HasteConv::forward_impl`]
//! the CPU runs.

use super::{HasteConv, HasteScratch, LayerStats};
use crate::kernels::isa::Isa;
use crate::kernels::layout::IoLayout;
use crate::ops::Activation;

/// Which filter panels one call computes, whether it records the patches' statistics (see
/// [`HasteConv::forward_panels`]), and what its kernel calls finish the outputs with.
#[derive(Clone, Debug)]
pub(super) struct Part<'a> {
    pub(super) panels: std::ops::Range<usize>,
    /// Images in the call, one after the other in its input and output (several only
    /// pixel-major in and out).
    pub(super) images: usize,
    pub(super) record: bool,
    pub(super) finish: Option<Finish<'a>>,
    /// The output columns whose patches the call computes (from a patch's first column):
    /// `None`, every one.
    pub(super) cols: Option<std::ops::Range<usize>>,
}

impl Part<'_> {
    /// Every panel, recorded, the bias alone added.
    pub(super) fn whole(conv: &HasteConv) -> Part<'static> {
        Part {
            panels: 0..conv.params.c_out / conv.panel,
            images: 1,
            record: true,
            finish: None,
            cols: None,
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

impl HasteConv {
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
        let io = IoLayout::NHWC;
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

    /// [`Self::forward_finished`] on the patches of output rows `rows` whose columns lie in
    /// `cols` (from a patch's first column to another's or the row's end), pixel-major in:
    /// `out` is laid out as the rows' whole width, of which only `cols` are written (and
    /// `finish`'s residual as `out`). A share of an image's patches that starts or ends
    /// inside a patch row (see `shares.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_finished_cols(
        &self,
        x: &[f32],
        hw: (usize, usize),
        (rows, cols): (std::ops::Range<usize>, std::ops::Range<usize>),
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
        finish: Finish,
    ) {
        let tile = self.cfg.tile;
        assert!(
            rows.start.is_multiple_of(tile) && cols.start.is_multiple_of(tile),
            "HASTE rows and columns must start on a tile"
        );
        let part = Part {
            finish: Some(finish),
            cols: Some(cols),
            ..Part::whole(self)
        };
        let (isa, io) = (Isa::current(), IoLayout::NHWC);
        self.forward_on(isa, x, hw, Some(rows), out, scratch, stats, io, part)
    }

    /// `n` whole images at once, pixel-major in and out (`x = [n][h][w][c_in]`, `out =
    /// [n][oh][ow][c_out]`, `finish`'s residual laid out as `out`), finished in the patch
    /// kernel's epilogue. Their patches share bands (see `bands.rs`), so a layer whose filter
    /// bank outgrows the caches reads each panel once per band of images instead of once
    /// per image; the outputs are the same bits as [`Self::forward_finished`]'s, image by
    /// image.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_images_finished(
        &self,
        x: &[f32],
        hw: (usize, usize),
        n: usize,
        out: &mut [f32],
        scratch: &mut HasteScratch,
        stats: &mut LayerStats,
        finish: Finish,
    ) {
        let io = IoLayout::NHWC;
        let part = Part {
            images: n,
            finish: Some(finish),
            ..Part::whole(self)
        };
        self.forward_on(Isa::current(), x, hw, None, out, scratch, stats, io, part)
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
        let io = IoLayout::NHWC;
        assert!(panels.end <= self.params.c_out / self.panel && !panels.is_empty());
        let oh = self.params.out_hw(h, w).0;
        let part = Part {
            panels,
            images: 1,
            record,
            finish: None,
            cols: None,
        };
        let isa = Isa::current();
        self.forward_on(isa, x, (h, w), Some(0..oh), out, scratch, stats, io, part)
    }

    /// [`Self::forward_impl`] compiled for tier `isa` (which the CPU must support).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_on(
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
}
