//! The data-dependent layer choices, made on one batch of images (no labels): layers whose
//! merging there cannot pay go back to dense, and, when asked, layers measured slower.

use super::report::layer_stats;
use super::{layer_kernel, Compression, KernelSwitch};
use crate::datasets::{load_batch_skipping, Dataset};
use crate::error::Result;
use crate::haste::cost::{
    predicted_time_ratio, CostLayer, Merging, Patches, MAX_PREDICTED_TIME_RATIO,
};
use crate::haste::{HasteKernel, LayerStats};
use crate::plan::Plan;
use std::sync::Arc;

impl Compression {
    /// The layer choices the options ask to make on a batch (`input`, `n` images) once
    /// [`Compression::apply`] has run: with `cost_aware` or several tiles,
    /// [`Self::keep_dense_where_merging_cannot_pay`]; with `keep_dense_when_slower`,
    /// [`Self::keep_dense_where_faster`]. Statistics are cleared after, so a following run's
    /// are its own.
    pub fn choose_layers_on(&mut self, plan: &mut Plan, input: &[f32], n: usize) -> Result<()> {
        if self.options.cost_aware || self.options.chooses_tiles() {
            self.keep_dense_where_merging_cannot_pay(plan, input, n)?;
        }
        if self.options.keep_dense_when_slower {
            self.keep_dense_where_faster(plan, input, n)?;
        }
        clear_stats(plan);
        Ok(())
    }

    /// [`Self::choose_layers_on`] on the first batch of `data` (`batch` images, at most
    /// `limit`), loaded on the plan's threads.
    pub fn choose_layers_on_data(
        &mut self,
        plan: &mut Plan,
        data: &dyn Dataset,
        (batch, limit, skip_bad): (usize, Option<usize>, bool),
    ) -> Result<()> {
        let total = limit.map_or(data.len(), |l| l.min(data.len()));
        let n = batch.clamp(1, plan.max_batch()).min(total);
        if n == 0 {
            return Ok(());
        }
        let per_image: usize = plan.image_shape().iter().product();
        let mut buf = vec![0.0f32; n * per_image];
        let (loaded, _) = plan
            .thread_pool()
            .install(|| load_batch_skipping(data, 0, n, per_image, &mut buf, skip_bad))?;
        if loaded.is_empty() {
            return Ok(());
        }
        self.choose_layers_on(plan, &buf[..loaded.len() * per_image], loaded.len())
    }

    /// Runs the compressed plan on a batch (`input`, `n` images) at each tile of
    /// [`super::CompressOptions::tiles`], keeps each layer at the tile of its least predicted
    /// time ([`predicted_time_ratio`] from the channels it merged there) and, with
    /// `cost_aware`, puts the dense kernel back on every layer whose prediction is above
    /// [`MAX_PREDICTED_TIME_RATIO`]. The predictions appear in
    /// [`super::ConvLayerReport::predicted_time_ratio`]; statistics are cleared. Returns how
    /// many layers went back to dense. Deterministic: no clock is read.
    pub fn keep_dense_where_merging_cannot_pay(
        &mut self,
        plan: &mut Plan,
        input: &[f32],
        n: usize,
    ) -> Result<usize> {
        let tiles = self.options.tiles();
        let layers: Vec<(usize, usize)> = plan
            .per_conv_macs()
            .iter()
            .enumerate()
            .map(|(k, &(step, _))| (k, step))
            .filter(|&(_, step)| layer_stats(plan, step).is_some())
            .collect();
        // Per step: (predicted time ratio, tile) at the best tile so far.
        let mut best: Vec<Option<(f64, usize)>> = vec![None; plan.num_steps()];
        for (i, &tile) in tiles.iter().enumerate() {
            if i > 0 {
                for &(k, step) in &layers {
                    rebuild_at_tile(plan, step, k, &self.options, tile)?;
                }
            }
            clear_stats(plan);
            plan.run(input, n)?;
            for &(_, step) in &layers {
                let Some((p, _, s)) = layer_stats(plan, step) else {
                    continue;
                };
                if s.patches == 0 {
                    continue;
                }
                let (op, h, w) = plan.conv_at(step).expect("step is a conv");
                let at = Patches::of_image(&p, (h, w), tile);
                let predicted = predicted_time_ratio(&CostLayer::of(op), at, Merging::of_stats(&s));
                if best[step].is_none_or(|(b, _)| predicted < b) {
                    best[step] = Some((predicted, tile));
                }
            }
        }
        let mut reverted = 0;
        for &(k, step) in &layers {
            let Some((predicted, tile)) = best[step] else {
                continue;
            };
            self.predicted[step] = Some(predicted);
            if self.options.cost_aware && predicted > MAX_PREDICTED_TIME_RATIO {
                plan.use_dense(step);
                reverted += 1;
            } else if tiles.last() != Some(&tile) {
                rebuild_at_tile(plan, step, k, &self.options, tile)?;
            }
        }
        Ok(reverted)
    }

    /// Times every compressed layer against its dense kernel on a batch (`input`, `n`
    /// images; best of `rounds` (at least two) runs each, alternating). The timings appear in
    /// [`super::ConvLayerReport::timing`]; statistics are cleared. Returns the compressed
    /// steps.
    pub fn time_layers(
        &mut self,
        plan: &mut Plan,
        input: &[f32],
        n: usize,
        rounds: usize,
    ) -> Result<Vec<usize>> {
        let switch = KernelSwitch::of(plan);
        let compressed = switch.steps();
        let mut best = vec![(f64::INFINITY, f64::INFINITY); plan.num_steps()];
        let mut result = Ok(());
        for _ in 0..rounds.max(2) {
            result = time_steps(plan, input, n).map(|t| {
                best.iter_mut().zip(t).for_each(|(b, t)| b.0 = b.0.min(t));
            });
            switch.to_dense(plan);
            result = result.and_then(|_| time_steps(plan, input, n)).map(|t| {
                best.iter_mut().zip(t).for_each(|(b, t)| b.1 = b.1.min(t));
            });
            switch.to_compressed(plan)?;
            if result.is_err() {
                break;
            }
        }
        clear_stats(plan);
        result?;
        for &s in &compressed {
            self.timing[s] = Some(best[s]);
        }
        Ok(compressed)
    }

    /// [`Self::time_layers`], then puts the dense kernel back where the compressed one is
    /// slower. Returns how many layers went back to dense.
    pub fn keep_dense_where_faster(
        &mut self,
        plan: &mut Plan,
        input: &[f32],
        n: usize,
    ) -> Result<usize> {
        let mut reverted = 0;
        for s in self.time_layers(plan, input, n, 2)? {
            if let Some((h, d)) = self.timing[s] {
                if h > d {
                    plan.use_dense(s);
                    reverted += 1;
                }
            }
        }
        Ok(reverted)
    }

    /// Times every step of every HASTE layer ([`crate::haste::steps`]) over `runs` runs of
    /// the batch (after one untimed run), into the statistics [`Self::reports`] returns:
    /// per layer, those of its fastest run (shared machines slow whole runs down by tens of
    /// percent; the least disturbed run is the best estimate of each step's cost). The
    /// layers keep profiling until the plan's kernels are reset.
    pub fn profile_steps(
        &self,
        plan: &mut Plan,
        input: &[f32],
        n: usize,
        runs: usize,
    ) -> Result<()> {
        let mut profiled = Vec::new();
        for step in 0..plan.num_steps() {
            if plan.runs_dense(step) {
                continue;
            }
            let Some(k) = plan.conv_kernel(step) else {
                continue;
            };
            if let Some(h) = k.as_any().downcast_ref::<HasteKernel>() {
                let kernel = Arc::new(h.with_profile_steps(true));
                plan.set_conv_kernel(step, kernel.clone())?;
                profiled.push(kernel);
            }
        }
        plan.run(input, n)?;
        clear_stats(plan);
        let mut best: Vec<Option<LayerStats>> = vec![None; profiled.len()];
        for _ in 0..runs.max(1) {
            plan.run(input, n)?;
            for (k, best) in profiled.iter().zip(&mut best) {
                let s = k.take_stats();
                let ticks = |s: &LayerStats| s.steps.total();
                if best.as_ref().is_none_or(|b| ticks(&s) < ticks(b)) {
                    *best = Some(s);
                }
            }
        }
        for (k, best) in profiled.iter().zip(best) {
            k.add_stats(&best.unwrap_or_default());
        }
        Ok(())
    }
}

/// Puts HASTE at `tile` on the `k`-th convolution (`step`), dropping its kernel first: its
/// weights' copy is freed before the new kernel lays out its own, so the two never coexist
/// (the first-batch choice at three tiles raised ResNet-18's peak memory at batch 16 from
/// 212 to 247 MiB; with this, 223).
fn rebuild_at_tile(
    plan: &mut Plan,
    step: usize,
    k: usize,
    options: &super::CompressOptions,
    tile: usize,
) -> Result<()> {
    plan.use_dense(step);
    plan.set_conv_kernel(step, layer_kernel(plan, step, k, options, tile)?)
}

/// Clears the statistics every compressed kernel of `plan` has accumulated.
pub(super) fn clear_stats(plan: &Plan) {
    for step in 0..plan.num_steps() {
        layer_stats(plan, step);
    }
}

/// Seconds of each step in one run of the batch (the plan's own profiling is kept).
fn time_steps(plan: &mut Plan, input: &[f32], n: usize) -> Result<Vec<f64>> {
    let saved = plan.step_seconds().map(<[f64]>::to_vec);
    plan.set_profiling(true);
    let result = plan.run(input, n).map(|_| ());
    let t = plan.step_seconds().map(<[f64]>::to_vec).unwrap_or_default();
    plan.restore_profiling(saved);
    result.map(|_| t)
}
