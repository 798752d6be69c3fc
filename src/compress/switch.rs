//! Switching a compressed plan to dense and back without rebuilding its kernels: what timing
//! the two side by side needs (`bench`, [`super::Compression::time_layers`]).

use crate::error::Result;
use crate::kernels::ConvKernel;
use crate::plan::Plan;
use std::sync::Arc;

/// The compressed kernels a plan runs, by step.
pub struct KernelSwitch(Vec<(usize, Arc<dyn ConvKernel>)>);

impl KernelSwitch {
    /// The kernels `plan` runs now on its compressed steps.
    pub fn of(plan: &Plan) -> KernelSwitch {
        KernelSwitch(
            (0..plan.num_steps())
                .filter(|&s| !plan.runs_dense(s))
                .filter_map(|s| plan.conv_kernel(s).map(|k| (s, k.clone())))
                .collect(),
        )
    }

    /// The compressed steps.
    pub fn steps(&self) -> Vec<usize> {
        self.0.iter().map(|&(s, _)| s).collect()
    }

    /// Every compressed step back on the dense kernel.
    pub fn to_dense(&self, plan: &mut Plan) {
        self.0.iter().for_each(|&(s, _)| plan.use_dense(s));
    }

    /// Every compressed step on its compressed kernel again.
    pub fn to_compressed(&self, plan: &mut Plan) -> Result<()> {
        for (s, k) in &self.0 {
            plan.set_conv_kernel(*s, k.clone())?;
        }
        Ok(())
    }
}
