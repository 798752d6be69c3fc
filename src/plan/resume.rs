//! Runs that start part-way: a [`Checkpoint`] keeps the values the steps from some step on
//! read that earlier steps wrote, so runs that differ only from that step on (the
//! calibration compresses one layer at a time, hundreds of times) skip the prefix they share.
//!
//! A checkpoint copies the values out of their slots, since a run from the step reuses the
//! slots of values that die on the way and the next run needs them again. Resumed runs go
//! step by step (layer mode), whatever the plan would choose for a whole run.

use super::{Plan, Src};
use crate::error::{Error, Result};

/// What the steps from [`Checkpoint::step`] on read from earlier steps, for one batch.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    step: usize,
    n: usize,
    /// Each live slot with where its value starts in it and the value (as many floats as
    /// its writer produced for the batch).
    values: Vec<(usize, usize, Vec<f32>)>,
}

impl Checkpoint {
    /// The step a run from this checkpoint starts at.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Images in the batch.
    pub fn images(&self) -> usize {
        self.n
    }
}

impl Plan {
    /// Runs the steps before `step` on a batch of `n` images, starting from `from` (a
    /// checkpoint of the same input at an earlier step) when given, and keeps what the steps
    /// from `step` on read.
    pub fn checkpoint(
        &mut self,
        input: &[f32],
        n: usize,
        step: usize,
        from: Option<&Checkpoint>,
    ) -> Result<Checkpoint> {
        let first = match from {
            Some(c) if c.step <= step && c.n == n => {
                self.restore(c);
                c.step
            }
            Some(_) => {
                return Err(Error::InvalidArgument(format!(
                    "a checkpoint of another batch or a later step than {step}"
                )))
            }
            None => 0,
        };
        self.prepare_batch(input, n)?;
        if step > self.steps.len() {
            return Err(Error::InvalidArgument(format!(
                "step {step} of a plan of {} steps",
                self.steps.len()
            )));
        }
        self.grow_slots();
        self.run_layer_range(input, n, first..step)?;
        let values = self
            .live_slots_at(step)
            .into_iter()
            .map(|(slot, writer)| {
                let len: usize = self.out_shapes[writer].iter().product();
                let at = self.slot_offsets[slot];
                (slot, at, self.slots[slot][at..at + len].to_vec())
            })
            .collect();
        Ok(Checkpoint { step, n, values })
    }

    /// Runs the batch of `checkpoint` from its step to the end, with the kernels set now:
    /// the same output as [`Plan::run`] when the steps before it ran as when it was taken.
    pub fn run_from(
        &mut self,
        checkpoint: &Checkpoint,
        input: &[f32],
    ) -> Result<(Vec<usize>, &[f32])> {
        let n = checkpoint.n;
        self.prepare_batch(input, n)?;
        self.grow_slots();
        self.restore(checkpoint);
        self.run_layer_range(input, n, checkpoint.step..self.steps.len())?;
        self.output_of_run()
    }

    fn restore(&mut self, checkpoint: &Checkpoint) {
        for &(slot, at, ref value) in &checkpoint.values {
            let buf = &mut self.slots[slot];
            if buf.len() < at + value.len() {
                buf.resize(at + value.len(), 0.0);
            }
            buf[at..at + value.len()].copy_from_slice(value);
            self.slot_offsets[slot] = at;
        }
    }

    /// The slots the steps from `step` on read before writing them, each with the step
    /// before `step` that wrote it last.
    pub(super) fn live_slots_at(&self, step: usize) -> Vec<(usize, usize)> {
        let mut writer: Vec<Option<usize>> = vec![None; self.slots.len()];
        for (i, s) in self.steps[..step].iter().enumerate() {
            writer[s.output] = Some(i);
        }
        let mut written = vec![false; self.slots.len()];
        let mut live = Vec::new();
        for s in &self.steps[step..] {
            for src in &s.inputs {
                if let Src::Slot(k) = *src {
                    if let (false, Some(w)) = (written[k], writer[k]) {
                        if !live.iter().any(|&(slot, _)| slot == k) {
                            live.push((k, w));
                        }
                    }
                }
            }
            written[s.output] = true;
        }
        live
    }
}
