//! Step 7: per-layer diagnostics, accumulated over images.

use super::cost::FlopCount;
use super::steps::StepCycles;

/// What HASTE did in one layer, summed over the images it processed (merge with [`Self::add`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerStats {
    pub images: u64,
    pub patches: u64,
    pub c_in: usize,
    /// Sum over patches of the number of buckets.
    pub bucket_sum: u64,
    /// Index = bucket size (`1..=c_in`; index 0 unused): how many buckets had that size.
    pub bucket_size_hist: Vec<u64>,
    pub flops: FlopCount,
    /// Non-finite values seen in input windows (a pixel counts once per window reading it);
    /// they are hashed as 0.
    pub nonfinite_inputs: u64,
    /// Sum over patches of the channels zero over the whole window, left out of the buckets
    /// ([`super::HasteConfig::drop_zero_channels`]).
    pub zero_channels: u64,
    /// Clock ticks per step, when the layer profiles its steps (zero otherwise).
    pub steps: StepCycles,
}

impl LayerStats {
    /// Adds `o` into `self` (e.g. the stats of another thread).
    pub fn add(&mut self, o: &LayerStats) {
        self.images += o.images;
        self.patches += o.patches;
        self.c_in = self.c_in.max(o.c_in);
        self.bucket_sum += o.bucket_sum;
        if self.bucket_size_hist.len() < o.bucket_size_hist.len() {
            self.bucket_size_hist.resize(o.bucket_size_hist.len(), 0);
        }
        for (a, &b) in self.bucket_size_hist.iter_mut().zip(&o.bucket_size_hist) {
            *a += b;
        }
        self.flops.add(&o.flops);
        self.nonfinite_inputs += o.nonfinite_inputs;
        self.zero_channels += o.zero_channels;
        self.steps.add(&o.steps);
    }

    /// Mean number of buckets per patch (0 before any patch).
    pub fn mean_buckets(&self) -> f64 {
        if self.patches == 0 {
            0.0
        } else {
            self.bucket_sum as f64 / self.patches as f64
        }
    }

    /// Mean number of channels per patch left out as zero over the window.
    pub fn mean_zero_channels(&self) -> f64 {
        self.zero_channels as f64 / self.patches.max(1) as f64
    }

    /// Mean number of buckets of two or more channels per patch (0 before any patch).
    pub fn mean_multi_buckets(&self) -> f64 {
        let multi: u64 = self.bucket_size_hist.iter().skip(2).sum();
        multi as f64 / self.patches.max(1) as f64
    }

    /// Mean fraction of input channels kept per patch (`mean_buckets / c_in`).
    pub fn mean_kept_fraction(&self) -> f64 {
        if self.c_in == 0 {
            0.0
        } else {
            self.mean_buckets() / self.c_in as f64
        }
    }

    /// Records one patch with the given bucket sizes.
    pub(crate) fn record_patch(&mut self, sizes: impl Iterator<Item = usize>) {
        self.patches += 1;
        for s in sizes {
            if self.bucket_size_hist.len() <= s {
                self.bucket_size_hist.resize(s + 1, 0);
            }
            self.bucket_size_hist[s] += 1;
            self.bucket_sum += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_mean() {
        let mut a = LayerStats {
            c_in: 4,
            ..Default::default()
        };
        a.record_patch([1, 3].into_iter());
        let mut b = LayerStats {
            c_in: 4,
            ..Default::default()
        };
        b.record_patch([1, 1, 1, 1].into_iter());
        a.add(&b);
        assert_eq!(a.patches, 2);
        assert_eq!(a.bucket_sum, 6);
        assert_eq!(a.mean_buckets(), 3.0);
        assert_eq!(a.bucket_size_hist, vec![0, 5, 0, 1]);
    }
}
