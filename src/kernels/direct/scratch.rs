//! The per-thread buffers of [`super::DirectConv`].

/// Per-thread buffers of [`super::DirectConv`], grown on first use and then reused.
#[derive(Clone, Debug, Default)]
pub struct DirectScratch {
    /// Zero-padded pixel-major input `[hp][wp][c_in]`.
    pub(super) padded: Vec<f32>,
    /// Pixel-major output `[oh][ow][c_out]`.
    pub(super) out: Vec<f32>,
    /// Per part of `DirectConv::forward_parallel`: the padded input rows that part reads.
    pub(super) bands: Vec<Vec<f32>>,
}

impl crate::kernels::ScratchBytes for DirectScratch {
    fn scratch_bytes(&self) -> u64 {
        use crate::kernels::buffer_bytes;
        let bands: u64 = self.bands.iter().map(buffer_bytes).sum();
        buffer_bytes(&self.padded) + buffer_bytes(&self.out) + buffer_bytes(&self.bands) + bands
    }
}
