//! Dense and compressed on the same batches, in turns: each batch is loaded once and run by
//! both networks one after the other, so their accuracies come from one pass and their speeds
//! from the same moments. Timed one pass after the other, a neighbour's burst or a slow spell
//! of the machine fell on one side only: ResNet-56's ratio read 0.94x to 1.00x between
//! identical runs of `haste eval` for a policy that changes 1 % of its FLOPs.

use super::{batches, EvalOptions, EvalReport, HasteReport, Scores};
use crate::compress::{compress_on, flops_summary, Compression, KernelSwitch};
use crate::compress::{CompressOptions, Policy};
use crate::datasets::Dataset;
use crate::error::Result;
use crate::plan::Plan;

/// Compresses `plan` with `compress` (choosing layers and tiles on the first batch, as
/// [`super::evaluate_haste`] does), then evaluates the dense and the compressed network in
/// turns on every batch; the dense kernels are back on `plan` afterwards.
pub fn evaluate_in_turns(
    plan: &mut Plan,
    data: &dyn Dataset,
    options: EvalOptions,
    compress: &CompressOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<(EvalReport, HasteReport)> {
    let first_batch = (options.batch, options.limit, options.skip_bad);
    let compression = compress_on(plan, compress, data, first_batch)?;
    in_turns(plan, data, options, &compression, progress)
}

/// [`evaluate_in_turns`] with `policy`'s per-layer settings.
pub fn evaluate_policy_in_turns(
    plan: &mut Plan,
    data: &dyn Dataset,
    options: EvalOptions,
    policy: &Policy,
    progress: &mut dyn FnMut(usize),
) -> Result<(EvalReport, HasteReport)> {
    let compression = Compression::apply_policy(plan, policy)?;
    in_turns(plan, data, options, &compression, progress)
}

/// Each batch through the dense network and through `compression` (on `plan`), the one that
/// goes first alternating so that neither always finds the batch in cache. Each side's wall
/// time is the loading plus its own time in the model.
fn in_turns(
    plan: &mut Plan,
    data: &dyn Dataset,
    options: EvalOptions,
    compression: &Compression,
    progress: &mut dyn FnMut(usize),
) -> Result<(EvalReport, HasteReport)> {
    let switch = KernelSwitch::of(plan);
    let (mut dense, mut haste) = (Scores::default(), Scores::default());
    let mut dense_first = true;
    let pass = batches(plan, data, options, progress, &mut |plan, x, loaded| {
        for on_dense in [dense_first, !dense_first] {
            if on_dense {
                switch.to_dense(plan);
                dense.run(plan, x, loaded, data)?;
            } else {
                switch.to_compressed(plan)?;
                haste.run(plan, x, loaded, data)?;
            }
        }
        dense_first = !dense_first;
        Ok(())
    });
    // The reports read the statistics of the compressed kernels, so they must be in place.
    let layers = switch
        .to_compressed(plan)
        .map(|()| compression.reports(plan));
    plan.reset_conv_kernels();
    let (pass, layers) = (pass?, layers?);
    let loading = (pass.seconds - dense.compute - haste.compute).max(0.0);
    let seconds = (loading + dense.compute, loading + haste.compute);
    let dense = dense.report(data, &pass, seconds.0)?;
    let eval = haste.report(data, &pass, seconds.1)?;
    let flops = flops_summary(plan, &layers);
    Ok((
        dense,
        HasteReport {
            eval,
            layers,
            flops,
        },
    ))
}
