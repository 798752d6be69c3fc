//! A dataset without its first items: `eval --skip N` scores on the images a calibration
//! on the first N did not see.

use super::Dataset;
use crate::error::Result;
use std::path::Path;

/// `inner` without its first `skip` items.
pub struct Skip {
    inner: Box<dyn Dataset>,
    skip: usize,
}

impl Skip {
    /// `inner` from item `skip` on (empty when it has no more).
    pub fn new(inner: Box<dyn Dataset>, skip: usize) -> Skip {
        let skip = skip.min(inner.len());
        Skip { inner, skip }
    }
}

impl Dataset for Skip {
    fn len(&self) -> usize {
        self.inner.len() - self.skip
    }

    fn label(&self, index: usize) -> usize {
        self.inner.label(self.skip + index)
    }

    fn item_name(&self, index: usize) -> String {
        self.inner.item_name(self.skip + index)
    }

    fn source(&self) -> &Path {
        self.inner.source()
    }

    fn load(&self, index: usize, out: &mut [f32]) -> Result<()> {
        self.inner.load(self.skip + index, out)
    }

    fn has_labels(&self) -> bool {
        self.inner.has_labels()
    }
}
