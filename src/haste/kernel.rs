//! HASTE as a plan's convolution kernel: [`HasteConv`] behind the [`ConvKernel`] interface,
//! with the layer's statistics accumulated over every image it runs.

use super::conv::Finish;
use super::shares::{patch_shares, Share};
use super::{HasteConfig, HasteConv, HasteScratch, LayerStats};
use crate::error::Result;
use crate::kernels::{ConvBatch, ConvJob, ConvKernel, Scratch, Scratches};
use crate::ops::ConvOp;
use rayon::prelude::*;
use std::any::Any;
use std::sync::Mutex;

/// A convolution step computed with HASTE.
pub struct HasteKernel {
    conv: HasteConv,
    /// The op's epilogue after HASTE's bias: activation, or residual then activation (no
    /// weights).
    epilogue: ConvOp,
    stats: Mutex<LayerStats>,
}

impl HasteKernel {
    /// HASTE for `op`, the `layer_index`-th convolution (it seeds the layer's hyperplanes).
    pub fn new(op: &ConvOp, config: &HasteConfig, layer_index: usize) -> Result<HasteKernel> {
        let conv = HasteConv::new(
            op.params,
            &op.weights,
            op.bias.as_deref(),
            config,
            layer_index,
        )?;
        Ok(Self::from_conv(conv, op))
    }

    /// `conv`, finished with `op`'s activation and fused residual.
    pub fn from_conv(conv: HasteConv, op: &ConvOp) -> HasteKernel {
        let epilogue = ConvOp {
            input_scale: false,
            params: op.params,
            weights: Vec::new(),
            bias: None,
            activation: op.activation,
            residual: op.residual,
        };
        HasteKernel {
            conv,
            epilogue,
            stats: Mutex::new(LayerStats::default()),
        }
    }

    /// A copy of this kernel (fresh statistics) that times its steps when `on`
    /// ([`HasteConv::set_profile_steps`]).
    pub fn with_profile_steps(&self, on: bool) -> HasteKernel {
        let mut conv = self.conv.clone();
        conv.set_profile_steps(on);
        Self::from_conv(conv, &self.epilogue)
    }

    pub fn conv(&self) -> &HasteConv {
        &self.conv
    }

    /// The statistics of every image run since the last call (and resets them).
    pub fn take_stats(&self) -> LayerStats {
        std::mem::take(&mut self.lock_stats())
    }

    /// Adds `s` to the statistics (a caller that took several runs' and keeps one).
    pub fn add_stats(&self, s: &LayerStats) {
        self.lock_stats().add(s);
    }

    /// The op's finish for outputs whose fused residual is `residual`: the residual and the
    /// activation after it, or the op's own activation (a convolution with a fused residual
    /// has none of its own).
    fn finish<'a>(&self, residual: Option<&'a [f32]>) -> Finish<'a> {
        match (residual, self.epilogue.residual) {
            (Some(r), Some(after)) => Finish {
                residual: Some(r),
                activation: after,
            },
            _ => Finish {
                residual: None,
                activation: self.epilogue.activation,
            },
        }
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, LayerStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ConvKernel for HasteKernel {
    fn name(&self) -> &'static str {
        "haste"
    }

    fn run_image(&self, job: &ConvJob, out: &mut [f32], scratch: &mut Scratch) {
        let mut local = LayerStats::default();
        let (h, w) = job.hw;
        let s = scratch.get::<HasteScratch>();
        if job.io.output_nhwc {
            // Bias, residual and activation in the patch kernel's epilogue.
            let finish = self.finish(job.residual);
            let (x, nhwc) = (job.x, job.io.input_nhwc);
            self.conv
                .forward_finished(x, (h, w), None, nhwc, out, s, &mut local, finish);
        } else {
            self.conv
                .forward_layout(job.x, h, w, out, s, &mut local, job.io);
            crate::kernels::activation::finish(&self.epilogue, out, job.residual);
        }
        self.lock_stats().add(&local);
    }

    fn batches_images(&self) -> bool {
        true
    }

    /// Pixel-major in and out: the images' patches share bands
    /// ([`super::HasteConv::forward_images_finished`]); otherwise image after image.
    fn run_images(&self, batch: &ConvBatch, out: &mut [f32], scratch: &mut Scratch) {
        let n = batch.images;
        if !(batch.io.input_nhwc && batch.io.output_nhwc) || n <= 1 {
            let out_len = out.len() / n.max(1);
            for (k, o) in out.chunks_exact_mut(out_len.max(1)).enumerate() {
                self.run_image(&batch.job(k, out_len), o, scratch);
            }
            return;
        }
        let mut local = LayerStats::default();
        let finish = self.finish(batch.residual);
        let s = scratch.get::<HasteScratch>();
        let (x, hw) = (batch.x, batch.hw);
        self.conv
            .forward_images_finished(x, hw, n, out, s, &mut local, finish);
        self.lock_stats().add(&local);
    }

    /// Pixel-major in and out: bands of patch rows on different workers (each with its own
    /// scratch); otherwise the calling thread does the image.
    fn run_image_parallel(
        &self,
        job: &ConvJob,
        out: &mut [f32],
        threads: usize,
        scratches: &dyn Scratches,
    ) {
        if !(job.io.input_nhwc && job.io.output_nhwc) {
            scratches.with_thread(&mut |s| self.run_image(job, out, s));
            return;
        }
        let p = self.conv.params();
        let (oh, ow) = p.out_hw(job.hw.0, job.hw.1);
        let tile = self.conv.config().tile;
        let panels = p.c_out / self.conv.panel();
        if oh.div_ceil(tile) < threads && panels >= 2 {
            return self.run_by_panels(job, out, threads.min(panels), scratches);
        }
        self.run_by_patches(job, out, patch_shares(oh, ow, tile, threads), scratches);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl HasteKernel {
    /// [`ConvKernel::run_image_parallel`] with each worker's share of the patches (see
    /// `shares.rs`): its whole patch rows straight into the output; a patch row it has a part
    /// of into a row buffer of its scratch, whose columns it then copies into that row of the
    /// output (the row's other part is another worker's, so the row is locked for the copy).
    fn run_by_patches(
        &self,
        job: &ConvJob,
        out: &mut [f32],
        shares: Vec<Share>,
        scratches: &dyn Scratches,
    ) {
        let p = self.conv.params();
        let (oh, ow) = p.out_hw(job.hw.0, job.hw.1);
        let (tile, row) = (self.conv.config().tile, ow * p.c_out);
        let pixel_rows = |r: std::ops::Range<usize>| r.start * tile..(r.end * tile).min(oh);
        let (bands, shared) = cut_rows(&mut out[..oh * row], &shares, tile * row);
        let shared: Vec<(usize, Mutex<&mut [f32]>)> = shared
            .into_iter()
            .map(|(r, o)| (r, Mutex::new(o)))
            .collect();
        let work: Vec<_> = shares.into_iter().zip(bands).collect();
        work.into_par_iter().for_each(|(share, band)| {
            let mut local = LayerStats::default();
            scratches.with_thread(&mut |s| {
                let s = s.get::<HasteScratch>();
                let rows = pixel_rows(share.rows.clone());
                if !rows.is_empty() {
                    let finish = self.finish(residual_rows(job, (&rows, row), band.len()));
                    let (x, hw, rows) = (job.x, job.hw, Some(rows));
                    self.conv
                        .forward_finished(x, hw, rows, true, band, s, &mut local, finish);
                }
                for (r, cols) in &share.partial {
                    let (_, target) = shared.iter().find(|(q, _)| q == r).expect("a shared row");
                    let cols = cols.start * tile..(cols.end * tile).min(ow);
                    let at = (pixel_rows(*r..r + 1), cols);
                    self.run_shared_row(job, at, row, target, s, &mut local);
                }
            });
            self.lock_stats().add(&local);
        });
        self.lock_stats().images += 1;
    }

    /// The patches of output columns `cols` in the patch row of output rows `rows` (`row`
    /// floats each), into the scratch's row buffer, then copied into `target` (those rows
    /// of the output) under its lock: the row's other columns are another worker's.
    fn run_shared_row(
        &self,
        job: &ConvJob,
        (rows, cols): (std::ops::Range<usize>, std::ops::Range<usize>),
        row: usize,
        target: &Mutex<&mut [f32]>,
        s: &mut HasteScratch,
        local: &mut LayerStats,
    ) {
        let c_out = self.conv.params().c_out;
        let mut buf = std::mem::take(&mut s.part_rows);
        crate::kernels::grow(&mut buf, rows.len() * row);
        let buf_rows = &mut buf[..rows.len() * row];
        let finish = self.finish(residual_rows(job, (&rows, row), buf_rows.len()));
        let (x, hw, at) = (job.x, job.hw, (rows, cols.clone()));
        self.conv
            .forward_finished_cols(x, hw, at, buf_rows, s, local, finish);
        let mut target = target.lock().unwrap_or_else(|e| e.into_inner());
        let (from, width) = (cols.start * c_out, cols.len() * c_out);
        for (o, b) in target.chunks_exact_mut(row).zip(buf_rows.chunks_exact(row)) {
            o[from..][..width].copy_from_slice(&b[from..][..width]);
        }
        s.part_rows = buf;
    }

    /// [`ConvKernel::run_image_parallel`] for an image with fewer patch rows than threads (a
    /// 7 x 7 layer at tile 8, a 14 x 14 one at tile 16: one patch): `parts` workers each
    /// compute a share of the filter panels into a buffer of their own
    /// ([`HasteConv::forward_panels`]; allocated per call, one image's share of the outputs,
    /// small next to the layer's work), then the shares are copied into the output and
    /// finished.
    fn run_by_panels(
        &self,
        job: &ConvJob,
        out: &mut [f32],
        parts: usize,
        scratches: &dyn Scratches,
    ) {
        let p = self.conv.params();
        let (oh, ow) = p.out_hw(job.hw.0, job.hw.1);
        let (panel, panels) = (self.conv.panel(), p.c_out / self.conv.panel());
        let shares: Vec<(std::ops::Range<usize>, Vec<f32>, LayerStats)> = (0..parts)
            .into_par_iter()
            .map(|k| {
                let qs = k * panels / parts..(k + 1) * panels / parts;
                let mut buf = vec![0.0; oh * ow * qs.len() * panel];
                let mut local = LayerStats::default();
                scratches.with_thread(&mut |s| {
                    let s = s.get::<HasteScratch>();
                    let (x, hw) = (job.x, job.hw);
                    self.conv
                        .forward_panels(x, hw, qs.clone(), &mut buf, s, &mut local, k == 0)
                });
                (qs, buf, local)
            })
            .collect();
        let out = &mut out[..oh * ow * p.c_out];
        for (qs, buf, local) in &shares {
            let width = qs.len() * panel;
            for (o, b) in out.chunks_exact_mut(p.c_out).zip(buf.chunks_exact(width)) {
                o[qs.start * panel..][..width].copy_from_slice(b);
            }
            self.lock_stats().add(local);
        }
        let row = ow * p.c_out;
        let per = oh.div_ceil(parts) * row;
        out.par_chunks_mut(per).enumerate().for_each(|(k, chunk)| {
            let r = job.residual.map(|r| &r[k * per..][..chunk.len()]);
            crate::kernels::activation::finish(&self.epilogue, chunk, r);
        });
        self.lock_stats().images += 1;
    }
}

/// `out` (patch rows of `per_row` floats, the last one maybe shorter) cut into each share's
/// whole rows, in order, and the patch rows shares have parts of, with their indices.
#[allow(clippy::type_complexity)]
fn cut_rows<'a>(
    out: &'a mut [f32],
    shares: &[Share],
    per_row: usize,
) -> (Vec<&'a mut [f32]>, Vec<(usize, &'a mut [f32])>) {
    // (first patch row, end, share whose whole rows they are, or none: a shared row), in
    // order: the shares' runs do not overlap.
    let mut pieces: Vec<(usize, usize, Option<usize>)> = (shares.iter().enumerate())
        .filter(|(_, s)| !s.rows.is_empty())
        .map(|(k, s)| (s.rows.start, s.rows.end, Some(k)))
        .collect();
    let mut partial: Vec<usize> = (shares.iter())
        .flat_map(|s| s.partial.iter().map(|&(r, _)| r))
        .collect();
    partial.sort_unstable();
    partial.dedup();
    pieces.extend(partial.into_iter().map(|r| (r, r + 1, None)));
    pieces.sort_unstable_by_key(|&(start, ..)| start);
    let mut bands: Vec<&mut [f32]> = shares.iter().map(|_| Default::default()).collect();
    let mut shared = Vec::new();
    let (mut rest, mut at) = (out, 0);
    for (start, end, k) in pieces {
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut((start * per_row - at).min(tail.len()));
        let len = ((end - start) * per_row).min(tail.len());
        let (piece, tail) = tail.split_at_mut(len);
        (rest, at) = (tail, start * per_row + len);
        match k {
            Some(k) => bands[k] = piece,
            None => shared.push((start, piece)),
        }
    }
    (bands, shared)
}

/// The residual of output rows `rows` of `job` (`row` floats each), `len` floats, if any.
fn residual_rows<'a>(
    job: &ConvJob<'a>,
    (rows, row): (&std::ops::Range<usize>, usize),
    len: usize,
) -> Option<&'a [f32]> {
    job.residual.map(|res| &res[rows.start * row..][..len])
}
