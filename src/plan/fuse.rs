//! An expansion and the depthwise (or grouped) convolution after it, run band by band (the
//! inverted residual blocks of MobileNet and EfficientNet; RegNet's and ResNeXt's 1x1 ->
//! grouped 3x3 pairs).
//!
//! Such a block widens its input with a 1x1 convolution to several times the channels, then
//! runs a depthwise convolution over the result. At high resolution the widened image is
//! megabytes: written whole and then read whole, it leaves the cache in between, and every
//! line written is first read from memory (EfficientNet-Lite1's 16 -> 96 expansion at
//! 120 x 120 took 0.70 ms in the network against 0.36 with its output in cache). Here each
//! part of the depthwise output's rows is made a band of rows at a time: the expansion
//! computes just the input rows the band reads into a buffer that stays in L2, and the
//! depthwise convolution reads them from there. The rows one band shares with the next stay
//! in the buffer, so each widened row is computed once per part; the widened image is never
//! written. A grouped convolution reads zero-padded rows, so its bands hold them padded.
//! Every output is the same sum as with the two steps apart: the same bits.

use super::exec::{thread_workspace, Frame};
use super::{Plan, Src, Workspace};
use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::depthwise::DepthwiseConv;
use crate::kernels::grouped::GroupedConv;
use crate::kernels::isa::Isa;
use crate::kernels::{ConvKernel, DenseConv, Scratch};
use crate::ops::Conv2dParams;
use crate::ops::Op;
use rayon::prelude::*;
use std::ops::Range;

/// The widened rows a thread holds: from image row `first` on.
#[derive(Default)]
struct Band {
    rows: Vec<f32>,
    first: usize,
    end: usize,
}

impl crate::kernels::ScratchBytes for Band {
    fn scratch_bytes(&self) -> u64 {
        crate::kernels::buffer_bytes(&self.rows)
    }
}

/// The convolution after an expansion: depthwise, reading bands of image rows, or grouped,
/// reading bands of zero-padded rows.
#[derive(Clone, Copy)]
enum Spatial<'a> {
    Depthwise(&'a DepthwiseConv),
    Grouped(&'a GroupedConv),
}

/// The two kernels of a pair that runs band by band, and the widened image's shape.
pub(super) struct Pair<'a> {
    expand: &'a DenseConv,
    spatial: Spatial<'a>,
    /// Channels into the expansion, out of it, and out of the pair.
    c: (usize, usize, usize),
    hw: (usize, usize),
    /// Bytes of widened rows a band computes at most: a quarter of the L2 cache, so that the
    /// band and the depthwise output rows it makes stay there (on a 1 MiB L2, 64 to 512 KB
    /// bands measured within 3 % of each other, 256 KB best or tied).
    band_bytes: usize,
}

impl Plan {
    /// For each step, whether it and the next can run as a pair when both keep their dense
    /// kernels: [`may_pair`], the first step's output read by no other step, and larger than
    /// the L2 cache (below that the two steps apart keep it in cache anyway).
    pub(super) fn choose_expand_pairs(&self) -> Vec<bool> {
        let l2 = crate::kernels::cache::l2_bytes_or_default();
        // Fusing every pair instead cost 5-10 % at batch 1 on two threads (MobileNetV2,
        // EfficientNet-Lite1): small images split into parts of a few bands each.
        let node = |i: usize| &self.graph.nodes[self.steps[i].node];
        (0..self.steps.len())
            .map(|i| {
                let bytes = 4 * self.img_out_shapes[i].iter().product::<usize>() as u64;
                i + 1 < self.steps.len()
                    && may_pair(node(i), node(i + 1))
                    && bytes > l2
                    && self.only_next_reads(i)
                    // The build keeps the second step's output off the pair's input
                    // (bands still read it); checked again here.
                    && !self.steps[i]
                        .inputs
                        .contains(&Src::Slot(self.steps[i + 1].output))
            })
            .collect()
    }

    /// Whether step `i`'s output is read by step `i + 1` as its first input and by no
    /// other step, and is not the network's output.
    fn only_next_reads(&self, i: usize) -> bool {
        let slot = self.steps[i].output;
        let next = &self.steps[i + 1];
        if self.output_step == i || next.inputs.first() != Some(&Src::Slot(slot)) {
            return false;
        }
        if next.inputs[1..].contains(&Src::Slot(slot)) {
            return false;
        }
        for later in &self.steps[i + 2..] {
            if later.inputs.contains(&Src::Slot(slot)) {
                return false;
            }
            if later.output == slot {
                break;
            }
        }
        true
    }

    /// Steps `i` and `i + 1` as a pair, if [`Self::choose_expand_pairs`] allows it, both
    /// still run their dense kernels on pixel-major images, and pairs are on
    /// ([`Plan::set_fused_pairs`]).
    pub(super) fn expand_pair(&self, i: usize) -> Option<Pair<'_>> {
        if !self.fuse_pairs || !self.expand_pairs.get(i).copied().unwrap_or(false) {
            return None;
        }
        let dense = |k: usize| -> Option<&DenseConv> {
            let kernel: &dyn ConvKernel = self.conv_kernels[k].as_deref()?;
            kernel.as_any().downcast_ref::<DenseConv>()
        };
        let expand = dense(i)?;
        let second = dense(i + 1)?;
        let spatial = match (second.depthwise(), second.grouped()) {
            (Some(d), _) => Spatial::Depthwise(d),
            (None, Some(g)) => Spatial::Grouped(g),
            (None, None) => return None,
        };
        let (a, b) = (self.io_layout(i), self.io_layout(i + 1));
        let nhwc = a.input_nhwc && a.output_nhwc && b.input_nhwc && b.output_nhwc;
        let shape = &self.img_in_shapes[i][0];
        let c_mid = self.img_out_shapes[i][1];
        (nhwc && expand.has_pointwise_rows()).then_some(Pair {
            expand,
            spatial,
            c: (shape[1], c_mid, spatial.params().c_out),
            hw: (shape[2], shape[3]),
            band_bytes: self.band_bytes,
        })
    }

    /// Runs steps `i` and `i + 1` as `pair` on `n` images: `x` the expansion's input,
    /// `out` the depthwise output, `residual` its fused residual. Images in parallel when
    /// there are as many as threads; else each image in parts of rows, one per thread.
    fn run_pair(
        &self,
        pair: &Pair,
        (x, n): (&[f32], usize),
        out: &mut [f32],
        residual: Option<&[f32]>,
        scratch: Option<&mut Scratch>,
    ) -> Result<()> {
        let in_len = pair.c.0 * pair.hw.0 * pair.hw.1;
        let out_len = pair.out_len();
        let res = |k: usize| residual.map(|r| &r[k * out_len..][..out_len]);
        let images = out[..n * out_len].chunks_mut(out_len).zip(x.chunks(in_len));
        if let Some(s) = scratch {
            for (k, (o, x)) in images.enumerate() {
                pair.part(x, o, res(k), 0..pair.out_rows(), s);
            }
        } else if n >= self.threads || self.threads == 1 {
            let images = out[..n * out_len]
                .par_chunks_mut(out_len)
                .zip(x.par_chunks(in_len));
            images.enumerate().for_each(|(k, (o, x))| {
                let ws = &mut thread_workspace(&self.workspaces);
                pair.part(x, o, res(k), 0..pair.out_rows(), &mut ws.scratch);
            });
        } else {
            for (k, (o, x)) in images.enumerate() {
                pair.parts(x, o, res(k), self.threads, &self.workspaces);
            }
        }
        Ok(())
    }
}

impl Plan {
    /// Steps `i` and `i + 1` as a pair over the batch's slots (`execute` for two steps).
    pub(super) fn execute_pair(&mut self, i: usize, input: &[f32], n: usize) -> Result<()> {
        let slot = self.steps[i + 1].output;
        let len: usize = self.out_shapes[i + 1].iter().product();
        let at = self.out_offset(i + 1, n);
        self.slot_offsets[slot] = at;
        let mut out = std::mem::take(&mut self.slots[slot]);
        let result = self.pair_into(
            i,
            (&self.slots, &self.slot_offsets, input),
            &self.in_shapes,
            n,
            &mut out[at..at + len],
            None,
        );
        self.slots[slot] = out;
        result
    }

    /// Steps `i` and `i + 1` as a pair on one image in a thread's workspace.
    pub(super) fn run_pair_image(&self, ws: &mut Workspace, x: &[f32], i: usize) -> Result<()> {
        let slot = self.steps[i + 1].output;
        let len: usize = self.img_out_shapes[i + 1].iter().product();
        let mut out = std::mem::take(&mut ws.slots[slot]);
        let scratch = Some(&mut ws.scratch);
        let shapes = &self.img_in_shapes;
        let result = self.pair_into(i, (&ws.slots, &[], x), shapes, 1, &mut out[..len], scratch);
        ws.slots[slot] = out;
        result
    }

    /// The pair at step `i` from the values in `slots` (and the network's `input`) with the
    /// steps' input shapes `in_shapes`, into `out`.
    fn pair_into(
        &self,
        i: usize,
        (slots, offsets, input): (&[Vec<f32>], &[usize], &[f32]),
        in_shapes: &[Vec<Vec<usize>>],
        n: usize,
        out: &mut [f32],
        scratch: Option<&mut Scratch>,
    ) -> Result<()> {
        let pair = self
            .expand_pair(i)
            .ok_or_else(|| Error::Internal(format!("steps {i} and {} are no pair", i + 1)))?;
        let frame = |k: usize| Frame {
            slots,
            offsets,
            input,
            in_shapes: &in_shapes[k],
            out_shape: &[],
            min_len: 1,
        };
        let x = self.operand(&frame(i), self.steps[i].inputs[0], &in_shapes[i][0]);
        let residual = self.fused_residual(i + 1, &frame(i + 1))?;
        self.run_pair(&pair, (x, n), out, residual, scratch)
    }
}

impl Spatial<'_> {
    fn params(&self) -> &Conv2dParams {
        match self {
            Spatial::Depthwise(d) => d.params(),
            Spatial::Grouped(g) => g.params(),
        }
    }

    /// The pads a band row has on its left and right, and the band row of image row 0: the
    /// grouped kernel reads zero-padded rows, the depthwise one the image's own.
    fn band_pads(&self) -> (usize, usize, usize) {
        match self {
            Spatial::Depthwise(_) => (0, 0, 0),
            Spatial::Grouped(g) => {
                let p = g.params().pads;
                (p[1], p[3], p[0])
            }
        }
    }

    /// The band rows that output rows `rows` read.
    fn band_rows_read(&self, (h, w): (usize, usize), rows: Range<usize>) -> Range<usize> {
        match self {
            Spatial::Depthwise(d) => d.input_rows(h, rows),
            Spatial::Grouped(g) => {
                let ow = g.params().out_hw(h, w).1;
                g.padded_rows((h, w), &(rows.start * ow..rows.end * ow))
            }
        }
    }

    /// Output rows `rows` into `out` from `band` (band rows from `first` on).
    fn run(
        &self,
        (band, first): (&[f32], usize),
        hw: (usize, usize),
        rows: Range<usize>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let isa = Isa::current();
        match self {
            Spatial::Depthwise(d) => d.band_rows(isa, (band, first), hw, rows, out, residual),
            Spatial::Grouped(g) => {
                let ow = g.params().out_hw(hw.0, hw.1).1;
                let pixels = rows.start * ow..rows.end * ow;
                g.pixels(isa, (band, first), hw, pixels, out, residual)
            }
        }
    }
}

impl Pair<'_> {
    fn out_rows(&self) -> usize {
        self.spatial.params().out_hw(self.hw.0, self.hw.1).0
    }

    /// Floats of one image's output.
    fn out_len(&self) -> usize {
        let (oh, ow) = self.spatial.params().out_hw(self.hw.0, self.hw.1);
        oh * ow * self.c.2
    }

    /// One image in `threads` parts of output rows, each on a pool thread.
    fn parts(
        &self,
        x: &[f32],
        out: &mut [f32],
        residual: Option<&[f32]>,
        threads: usize,
        workspaces: &[std::sync::Mutex<Workspace>],
    ) {
        let oh = self.out_rows();
        let row = out.len() / oh.max(1);
        let per = oh.div_ceil(threads).max(1);
        out.par_chunks_mut(per * row)
            .enumerate()
            .for_each(|(k, o)| {
                let rows = k * per..k * per + o.len() / row;
                let r = residual.map(|r| &r[rows.start * row..]);
                let ws = &mut thread_workspace(workspaces);
                self.part(x, o, r, rows, &mut ws.scratch);
            });
    }

    /// Output rows `rows` of one image into `out` (those rows), a band at a time.
    fn part(
        &self,
        x: &[f32],
        out: &mut [f32],
        residual: Option<&[f32]>,
        rows: Range<usize>,
        scratch: &mut Scratch,
    ) {
        let (h, w) = self.hw;
        let c_mid = self.c.1;
        let p = self.spatial.params();
        let (left, right, _) = self.spatial.band_pads();
        let band_row = (left + w + right) * c_mid;
        let out_row = p.out_hw(h, w).1 * self.c.2;
        let per_band = (self.band_bytes / (4 * band_row * p.stride.0).max(1)).max(1);
        let band: &mut Band = scratch.get::<Band>();
        (band.first, band.end) = (0, 0);
        let mut at = rows.start;
        while at < rows.end {
            let these = at..(at + per_band).min(rows.end);
            let needed = self.spatial.band_rows_read(self.hw, these.clone());
            band.keep_from(needed.start, band_row);
            if needed.end > band.end {
                crate::kernels::grow(&mut band.rows, (needed.end - band.first) * band_row);
                self.widen(x, band, band.end..needed.end);
                band.end = needed.end;
            }
            let from = (these.start - rows.start) * out_row;
            let o = &mut out[from..][..these.len() * out_row];
            let r = residual.map(|r| &r[from..]);
            let held = &band.rows[..(band.end - band.first) * band_row];
            self.spatial
                .run((held, band.first), self.hw, these.clone(), o, r);
            at = these.end;
        }
    }

    /// Band rows `new` (past those `band` holds): the expansion of their image rows, zero
    /// pads and zero rows outside the image.
    fn widen(&self, x: &[f32], band: &mut Band, new: Range<usize>) {
        let (h, w) = self.hw;
        let (c_in, c_mid, _) = self.c;
        let (left, right, top) = self.spatial.band_pads();
        let band_row = (left + w + right) * c_mid;
        let rows = &mut band.rows[(new.start - band.first) * band_row..][..new.len() * band_row];
        // The rows of `new` inside the image; those above and below it are padding.
        let lo = new.start.max(top).min(new.end);
        let inside = lo..new.end.min(top + h).max(lo);
        let image_row = |r: usize| &x[(r - top) * w * c_in..];
        if left + right == 0 {
            rows[..(inside.start - new.start) * band_row].fill(0.0);
            rows[(inside.end - new.start) * band_row..].fill(0.0);
            if !inside.is_empty() {
                let into = &mut rows[(inside.start - new.start) * band_row..];
                self.expand
                    .pointwise_rows(image_row(inside.start), w, inside.len(), into);
            }
            return;
        }
        for (k, row) in rows.chunks_exact_mut(band_row).enumerate() {
            let r = new.start + k;
            if !inside.contains(&r) {
                row.fill(0.0);
                continue;
            }
            row[..left * c_mid].fill(0.0);
            row[(left + w) * c_mid..].fill(0.0);
            let into = &mut row[left * c_mid..(left + w) * c_mid];
            self.expand.pointwise_rows(image_row(r), w, 1, into);
        }
    }
}

impl Band {
    /// Drops the rows above `first` (moving the rest to the buffer's start), or all of them
    /// when none from `first` on are held.
    fn keep_from(&mut self, first: usize, row_floats: usize) {
        if first < self.first || first >= self.end {
            self.first = first;
            self.end = first;
            return;
        }
        let skip = (first - self.first) * row_floats;
        let held = (self.end - self.first) * row_floats;
        self.rows.copy_within(skip..held, 0);
        self.first = first;
    }
}

/// Whether nodes `a` and `b` (the next in execution order) have the shape of a pair: a 1x1
/// convolution, then a depthwise or grouped convolution that reads its output first.
pub(super) fn may_pair(a: &Node, b: &Node) -> bool {
    match (&a.op, &b.op) {
        (Op::Conv(x), Op::Conv(y)) => {
            // (An expansion with a folded channel scale runs alone: the band computes its
            // rows with the layer's own weights.)
            x.params.is_pointwise()
                && !x.input_scale
                && (DepthwiseConv::suits(&y.params) || GroupedConv::suits(&y.params))
                && b.inputs.first() == a.outputs.first()
        }
        _ => false,
    }
}

/// Whether `HASTE_FUSE=off` asks plans to run every pair as two steps (for measuring).
pub(super) fn fusing_off() -> bool {
    std::env::var("HASTE_FUSE").is_ok_and(|v| v.trim() == "off")
}

impl Plan {
    /// Runs the expansion + depthwise pairs band by band (the default; see the `fuse` module) or
    /// as two steps each. The same bits either way.
    pub fn set_fused_pairs(&mut self, on: bool) {
        self.fuse_pairs = on;
    }

    /// The steps that start a pair run band by band, with the current kernels.
    pub fn fused_pairs(&self) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&i| self.expand_pair(i).is_some())
            .collect()
    }
}
