//! Where a HASTE layer's time goes, step by step: a clock the forward pass laps at every step
//! boundary when profiling is on ([`super::HasteConv::set_profile_steps`]), so
//! `haste bench --layers --steps` can show the cost of each step per input channel and
//! window pixel on a network's real activations.
//!
//! The clock is the time-stamp counter on x86-64 (about 25-40 cycles per read, a few hundred
//! per patch against the thousands a patch costs) and nanoseconds elsewhere. Off, a lap is
//! one predictable branch.

/// Clock ticks spent in each step of a HASTE layer, summed over the patches it ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepCycles {
    /// Copying the window out of the image (what the hash and the input merge read).
    pub window_copy: u64,
    /// Projecting the window on the hyperplanes (and the norms for magnitude bins).
    pub project: u64,
    /// Thresholds (centering), sign bits and bucket keys.
    pub code: u64,
    /// Grouping channels by key.
    pub group: u64,
    /// Averaging each bucket's channels.
    pub input_merge: u64,
    /// Summing merged buckets' filter rows.
    pub filter_merge: u64,
    /// The per-patch table of filter rows the kernel reads.
    pub row_table: u64,
    /// The reduced convolution.
    pub kernel: u64,
    /// Windows, statistics, FLOP counts: the patch loop's bookkeeping.
    pub bookkeeping: u64,
    /// The image's transposes and the bias.
    pub layout: u64,
    /// Sum over patches of `c_in` times the window's pixels inside the image: the unit the
    /// per-patch work is quoted in.
    pub channel_pixels: u64,
    /// True when the ticks are TSC cycles (x86-64), false when nanoseconds.
    pub cycles: bool,
}

impl StepCycles {
    pub fn add(&mut self, o: &StepCycles) {
        self.window_copy += o.window_copy;
        self.project += o.project;
        self.code += o.code;
        self.group += o.group;
        self.input_merge += o.input_merge;
        self.filter_merge += o.filter_merge;
        self.row_table += o.row_table;
        self.kernel += o.kernel;
        self.bookkeeping += o.bookkeeping;
        self.layout += o.layout;
        self.channel_pixels += o.channel_pixels;
        self.cycles |= o.cycles;
    }

    /// The steps by name with their ticks, in pipeline order.
    pub fn named(&self) -> [(&'static str, u64); 10] {
        [
            ("window_copy", self.window_copy),
            ("project", self.project),
            ("code", self.code),
            ("group", self.group),
            ("input_merge", self.input_merge),
            ("filter_merge", self.filter_merge),
            ("row_table", self.row_table),
            ("kernel", self.kernel),
            ("bookkeeping", self.bookkeeping),
            ("layout", self.layout),
        ]
    }

    /// Every step's ticks together: the layer's time as the steps saw it.
    pub fn total(&self) -> u64 {
        self.named().iter().map(|(_, t)| t).sum()
    }

    /// The fixed work of a patch, whatever it merges: everything but the filter merge and
    /// the kernel (the transposes count too: a pixel-major network has none).
    pub fn fixed(&self) -> u64 {
        self.window_copy
            + self.project
            + self.code
            + self.group
            + self.input_merge
            + self.row_table
            + self.bookkeeping
            + self.layout
    }

    /// `ticks` per input channel and window pixel (0 before any patch).
    pub fn per_channel_pixel(&self, ticks: u64) -> f64 {
        if self.channel_pixels == 0 {
            0.0
        } else {
            ticks as f64 / self.channel_pixels as f64
        }
    }

    /// True when nothing was timed (profiling off).
    pub fn is_empty(&self) -> bool {
        self.named().iter().all(|(_, t)| *t == 0)
    }
}

/// A lap clock: [`Self::lap`] charges the ticks since the previous lap to a step.
#[derive(Clone, Copy, Debug)]
pub struct StepTimer {
    on: bool,
    last: u64,
    pub ticks: StepCycles,
}

impl StepTimer {
    /// A clock that times when `on` (and otherwise does nothing).
    pub fn new(on: bool) -> StepTimer {
        StepTimer {
            on,
            last: if on { now() } else { 0 },
            ticks: StepCycles {
                cycles: on && cfg!(target_arch = "x86_64"),
                ..Default::default()
            },
        }
    }

    /// Charges the ticks since the last lap to the step `pick` selects.
    #[inline(always)]
    pub fn lap(&mut self, pick: fn(&mut StepCycles) -> &mut u64) {
        if self.on {
            let t = now();
            *pick(&mut self.ticks) += t.wrapping_sub(self.last);
            self.last = t;
        }
    }

    /// Counts the unit of the per-patch work (only when timing).
    #[inline(always)]
    pub fn count_channel_pixels(&mut self, n: u64) {
        if self.on {
            self.ticks.channel_pixels += n;
        }
    }
}

#[inline(always)]
fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` exists on every x86-64 CPU.
        unsafe { std::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_charge_the_step_they_name_and_off_charges_nothing() {
        let mut off = StepTimer::new(false);
        off.lap(|s| &mut s.kernel);
        off.count_channel_pixels(5);
        assert!(off.ticks.is_empty());
        assert_eq!(off.ticks.channel_pixels, 0);

        let mut on = StepTimer::new(true);
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        on.lap(|s| &mut s.kernel);
        on.count_channel_pixels(4);
        assert!(on.ticks.kernel > 0, "{:?}", on.ticks);
        assert_eq!(on.ticks.project, 0);
        assert_eq!(on.ticks.per_channel_pixel(8), 2.0);
        assert_eq!(on.ticks.fixed(), 0);
    }
}
