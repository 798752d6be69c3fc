//! The convolution kernel interface: what the plan calls for a convolution step.
//!
//! A plan runs every convolution through a [`ConvKernel`]. [`DenseConv`] (the direct kernel
//! or im2col + GEMM) is every convolution's kernel when a plan is built; a compressed variant
//! (HASTE, [`crate::haste::HasteKernel`]) replaces it per step through
//! [`crate::Plan::set_conv_kernel`]. A kernel owns its weights in its own layout, its own
//! statistics, and asks for the per-thread buffers it needs from a type-keyed [`Scratch`], so
//! the plan schedules and runs steps without knowing what a kernel computes.
//!
//! Contract of every kernel, checked by the plan's tests for each variant:
//! - it reads the memory orders of [`ConvJob::io`] that the plan chose for the step (see
//!   [`crate::plan::layout`]): NCHW always; pixel-major input where
//!   [`DenseConv::reads_pixel_major`] holds for the convolution, pixel-major output for any;
//! - its output is complete: bias, the fused residual ([`ConvJob::residual`]) and the
//!   activation of the [`crate::ops::ConvOp`] it was built from;
//! - the same input gives the same bits, whatever the thread count.

mod dense;

pub use dense::DenseConv;

use super::depthwise::DepthwiseScratch;
use super::direct::DirectScratch;
use super::grouped::GroupedScratch;
use super::grow;
use super::layout::IoLayout;
use std::any::Any;

/// One image of a convolution step.
#[derive(Clone, Copy)]
pub struct ConvJob<'a> {
    /// The image, `[c_in, h, w]` in the memory order of `io.input`.
    pub x: &'a [f32],
    pub hw: (usize, usize),
    pub io: IoLayout,
    /// The fused residual this image's output adds ([`crate::ops::ConvOp::residual`]), in
    /// the output's shape and order.
    pub residual: Option<&'a [f32]>,
    /// The scale of each input channel this image's input is multiplied by first
    /// ([`crate::ops::ConvOp::input_scale`]): handed only to kernels that
    /// [`ConvKernel::scales_input`]; for the others the plan scales the input
    /// ([`scale_input`]).
    pub in_scale: Option<&'a [f32]>,
}

/// Several images of a convolution step, one after the other in memory, without an input
/// scale (see [`ConvKernel::run_images`]).
#[derive(Clone, Copy)]
pub struct ConvBatch<'a> {
    /// The images, `images` times `[c_in, h, w]` in the memory order of `io.input`.
    pub x: &'a [f32],
    pub images: usize,
    pub hw: (usize, usize),
    pub io: IoLayout,
    /// The fused residual of every image, laid out as the output.
    pub residual: Option<&'a [f32]>,
}

impl<'a> ConvBatch<'a> {
    /// Image `k` alone, its output `out_len` floats long.
    pub fn job(&self, k: usize, out_len: usize) -> ConvJob<'a> {
        let in_len = self.x.len() / self.images.max(1);
        ConvJob {
            x: &self.x[k * in_len..][..in_len],
            hw: self.hw,
            io: self.io,
            residual: self.residual.map(|r| &r[k * out_len..][..out_len]),
            in_scale: None,
        }
    }
}

/// `job`'s input with each channel multiplied by its `in_scale` (in the input's memory
/// order), in `buf`; the job without a scale, reading it. A job without a scale as it is.
pub fn scale_input<'a>(job: &ConvJob<'a>, buf: &'a mut Vec<f32>) -> ConvJob<'a> {
    let Some(s) = job.in_scale else {
        return *job;
    };
    grow(buf, job.x.len());
    let scaled = &mut buf[..job.x.len()];
    scale_image_into(job.x, s, job.io.input_nhwc, scaled);
    ConvJob {
        x: scaled,
        in_scale: None,
        ..*job
    }
}

/// One image `x` with channel `ch` multiplied by `scale[ch]`, into `out` (as long as `x`):
/// pixel-major (`nhwc`) or planar, into a buffer the caller keeps (not one grown pixel by
/// pixel per call).
pub fn scale_image_into(x: &[f32], scale: &[f32], nhwc: bool, out: &mut [f32]) {
    let c = scale.len().max(1);
    if nhwc {
        for (o, px) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            for ((o, &v), &k) in o.iter_mut().zip(px).zip(scale) {
                *o = v * k;
            }
        }
    } else {
        let plane = (x.len() / c).max(1);
        for ((o, ch), &k) in out
            .chunks_exact_mut(plane)
            .zip(x.chunks_exact(plane))
            .zip(scale)
        {
            for (o, &v) in o.iter_mut().zip(ch) {
                *o = v * k;
            }
        }
    }
}

/// How a convolution step is computed.
pub trait ConvKernel: Send + Sync + Any {
    /// A short name for reports: `"dense"`, `"haste"`.
    fn name(&self) -> &'static str;

    /// One image on the calling thread, into `out` (`[c_out, oh, ow]` in `job.io`'s output
    /// order).
    fn run_image(&self, job: &ConvJob, out: &mut [f32], scratch: &mut Scratch);

    /// Whether this kernel takes [`ConvJob::in_scale`] itself (folded into its weights);
    /// otherwise the plan hands it the input already scaled.
    fn scales_input(&self) -> bool {
        false
    }

    /// Whether [`Self::run_images`] does better than image after image, so the plan hands
    /// each thread its share of a batch at once.
    fn batches_images(&self) -> bool {
        false
    }

    /// The images of `batch` on the calling thread, into `out` (one image's output after
    /// another). By default image after image.
    fn run_images(&self, batch: &ConvBatch, out: &mut [f32], scratch: &mut Scratch) {
        let out_len = out.len() / batch.images.max(1);
        for (k, o) in out.chunks_exact_mut(out_len.max(1)).enumerate() {
            self.run_image(&batch.job(k, out_len), o, scratch);
        }
    }

    /// One image with `threads` workers of the current rayon pool (a batch smaller than the
    /// thread count). By default the calling thread does it alone.
    fn run_image_parallel(
        &self,
        job: &ConvJob,
        out: &mut [f32],
        threads: usize,
        scratches: &dyn Scratches,
    ) {
        let _ = threads;
        scratches.with_thread(&mut |s| self.run_image(job, out, s));
    }

    /// The kernel a wrapper (for example an error probe) runs, if this is one.
    fn inner(&self) -> Option<&dyn ConvKernel> {
        None
    }

    /// For downcasting to the concrete kernel (its statistics, its configuration).
    fn as_any(&self) -> &dyn Any;
}

/// The kernel of concrete type `T` in `kernel` or the kernels it wraps.
pub fn find_kernel<T: ConvKernel>(mut kernel: &dyn ConvKernel) -> Option<&T> {
    loop {
        if let Some(k) = kernel.as_any().downcast_ref::<T>() {
            return Some(k);
        }
        kernel = kernel.inner()?;
    }
}

/// Where the workers of [`ConvKernel::run_image_parallel`] get their buffers.
pub trait Scratches: Sync {
    /// Runs `f` with the calling thread's scratch.
    fn with_thread(&self, f: &mut dyn FnMut(&mut Scratch));
    /// Runs `f` with the scratch shared by the parts of one image (one at a time).
    fn with_shared(&self, f: &mut dyn FnMut(&mut Scratch));
}

/// The heap bytes a scratch value holds (its buffers' capacities), so that a plan's memory
/// counts its kernels' scratch ([`crate::plan::Plan::memory`]).
pub trait ScratchBytes {
    fn scratch_bytes(&self) -> u64;
}

/// Bytes of a buffer's capacity.
pub fn buffer_bytes<T>(v: &Vec<T>) -> u64 {
    (v.capacity() * std::mem::size_of::<T>()) as u64
}

/// A value a kernel keeps in a [`Scratch`] ([`Scratch::get`]).
pub trait ScratchPart: Any + Send + ScratchBytes {}

impl<T: Any + Send + ScratchBytes> ScratchPart for T {}

/// A thread's reusable buffers: the dense kernels' own, plus one value of each type other
/// kernels ask for ([`Scratch::get`]). Grown on first use, then reused: a steady-state run
/// does not allocate.
#[derive(Default)]
pub struct Scratch {
    /// im2col column matrix.
    pub col: Vec<f32>,
    pub direct: DirectScratch,
    pub depthwise: DepthwiseScratch,
    pub grouped: GroupedScratch,
    /// An NCHW result on its way to a pixel-major output.
    pub nchw: Vec<f32>,
    others: Vec<Box<dyn ScratchPart>>,
}

impl ScratchBytes for Scratch {
    fn scratch_bytes(&self) -> u64 {
        let own = buffer_bytes(&self.col) + buffer_bytes(&self.nchw);
        let kernels = self.direct.scratch_bytes()
            + self.depthwise.scratch_bytes()
            + self.grouped.scratch_bytes();
        own + kernels + self.others.iter().map(|o| o.scratch_bytes()).sum::<u64>()
    }
}

impl Scratch {
    /// This scratch's value of type `T` (created on first use).
    pub fn get<T: ScratchPart + Default>(&mut self) -> &mut T {
        let at = match self
            .others
            .iter()
            .position(|b| (&**b as &dyn Any).is::<T>())
        {
            Some(i) => i,
            None => {
                self.others.push(Box::<T>::default());
                self.others.len() - 1
            }
        };
        (&mut *self.others[at] as &mut dyn Any)
            .downcast_mut::<T>()
            .expect("the value at `at` has type T")
    }
}

/// [`Scratches`] over one scratch, for callers that run on one thread.
pub struct OneThread<'a>(pub std::sync::Mutex<&'a mut Scratch>);

impl Scratches for OneThread<'_> {
    fn with_thread(&self, f: &mut dyn FnMut(&mut Scratch)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn with_shared(&self, f: &mut dyn FnMut(&mut Scratch)) {
        self.with_thread(f)
    }
}
