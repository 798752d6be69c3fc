//! Where a batch run switches from image at a time to layer at a time.
//!
//! Image at a time keeps an image's activations in its core's cache from one step to the
//! next, but reads every step's weights again for each image, and once a network's weights
//! outgrow the core's L2 cache those reads come from further out. Layer at a time reads a
//! step's weights once for the images that share them while they stay in cache, but sends
//! every activation out of the cache between steps. CNNs shrink their images and widen their
//! filter banks as they go, so the first steps move more activation bytes and the last ones
//! more weight bytes: a batch of at least two images per thread runs image by image up to
//! the step where, per image, the weights still to read outweigh the activations still to
//! move, and layer by layer from there (RegNetX-400MF's 400-channel stage, ResNet-18's
//! 512-channel one).

use super::{Plan, Src};
use crate::error::Result;
use crate::ops::Op;

impl Plan {
    /// Bytes of weights step `i` reads (convolutions and fully connected layers).
    fn step_weight_bytes(&self, i: usize) -> u64 {
        let floats = match &self.graph.nodes[self.steps[i].node].op {
            Op::Conv(c) => c.weights.len(),
            Op::Linear(l) => l.weight.len(),
            _ => 0,
        };
        4 * floats as u64
    }

    /// Bytes of activations step `i` reads and writes for one image.
    fn step_activation_bytes(&self, i: usize) -> u64 {
        let floats: usize = self.img_in_shapes[i]
            .iter()
            .zip(&self.steps[i].inputs)
            .filter(|(_, src)| !matches!(src, Src::Const(_)))
            .map(|(shape, _)| shape.iter().product::<usize>())
            .sum::<usize>()
            + self.img_out_shapes[i].iter().product::<usize>();
        4 * floats as u64
    }

    /// The first step a batch run in image mode runs layer by layer (the step count: none):
    /// the switch that least moves, per image, the weights of the steps before it plus the
    /// activations of the steps from it on. A network whose weights fit in L2 stays image by
    /// image: they are not read again from further out.
    pub(super) fn choose_layer_from(&self) -> usize {
        let len = self.steps.len();
        let weights: Vec<u64> = (0..len).map(|i| self.step_weight_bytes(i)).collect();
        if weights.iter().sum::<u64>() <= crate::kernels::cache::l2_bytes_or_default() {
            return len;
        }
        // Moved bytes with the switch at `k`, from `k = len` (all image by image) down.
        let mut moved: u64 = weights.iter().sum();
        let (mut best, mut best_k) = (moved, len);
        for k in (0..len).rev() {
            moved = moved - weights[k] + self.step_activation_bytes(k);
            if moved < best {
                (best, best_k) = (moved, k);
            }
        }
        best_k
    }

    /// Runs a batch of at least one image per thread: the steps before
    /// [`Self::layer_from_for`] image by image, the rest layer by layer; the output goes to
    /// the output slot.
    pub(super) fn run_by_images(&mut self, input: &[f32], n: usize) -> Result<()> {
        let (from, len) = (self.layer_from_for(n), self.steps.len());
        self.run_images(input, n, from)?;
        if from < len {
            self.grow_slots_from(from);
            self.run_layer_range(input, n, from..len)?;
        }
        Ok(())
    }

    /// [`Plan::layer_from`] for a batch of `n` images, or the step count: where no thread
    /// would take two images layer by layer, no filter bank would be shared, and handing
    /// the steps over to the pool costs tens of microseconds (ResNet-20 on one thread: 11 %
    /// slower at batch 1, 8 % at 2). `HASTE_IMAGE_MODE=whole` asks for every step image by
    /// image (to measure what the switch gains).
    fn layer_from_for(&self, n: usize) -> usize {
        let whole = std::env::var("HASTE_IMAGE_MODE").is_ok_and(|v| v == "whole");
        if whole || n < 2 * self.threads {
            self.steps.len()
        } else {
            self.layer_from
        }
    }

    /// How many of the first steps a batch of `n` images runs image by image (the rest run
    /// layer by layer): none when the batch has fewer images than threads or some step
    /// cannot run image by image; [`Self::layer_from`] when every thread takes at least two
    /// images; all of them otherwise.
    pub fn image_steps(&self, n: usize) -> usize {
        if self.image_mode && n >= self.threads {
            self.layer_from_for(n)
        } else {
            0
        }
    }

    /// The first step a batch of at least two images per thread runs layer by layer (the
    /// step count when it runs image by image to the end; see the module documentation).
    pub fn layer_from(&self) -> usize {
        self.layer_from
    }

    /// Sets [`Self::layer_from`] (at most the step count): the same numbers wherever the
    /// switch is, at another speed.
    pub fn set_layer_from(&mut self, step: usize) {
        self.layer_from = step.min(self.steps.len());
    }
}
