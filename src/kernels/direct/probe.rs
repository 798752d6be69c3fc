//! Timings, once per process, that choose between blocks giving the same bits: whether a
//! narrow layer's pair blocks ([`super::pairs`]) beat masked 512-bit lanes depends on how
//! the CPU runs AVX-512, which no feature flag tells.

use super::blocks::{masked_block, vector_masks, Pass};
use super::{Epilogue, Filters, Geom};

/// A kind of block under test: the outputs from `j0` of the probe's layer (as many as the
/// block takes), every output channel.
pub(super) type BlockFn = unsafe fn(Pass, *mut f32, usize);

/// Outputs of the probe's layer: a multiple of every block size timed.
const OUTPUTS: usize = 96;

/// Timings of each kind of block, alternated, the best kept. With five, one process in
/// about twenty on a busy VM kept the masked blocks where half blocks were 20 % faster.
const ROUNDS: usize = 9;

/// Whether `candidate` blocks (of `step` outputs each) are at least 3 % faster than
/// `baseline` blocks (of `base_step`) on a 1 x 1 layer of 32 -> `c_out` channels over 96
/// outputs (12 KB of input, in L1): both timed in turns ([`ROUNDS`] times, after one round
/// not counted), the best of each kept. About two milliseconds.
///
/// # Safety
/// The CPU must support AVX-512F, and both kinds of block must compute whole blocks of such
/// a layer.
#[cfg_attr(test, allow(dead_code))]
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn faster(
    c_out: usize,
    (candidate, step): (BlockFn, usize),
    (baseline, base_step): (BlockFn, usize),
) -> bool {
    const C_IN: usize = 32;
    assert!(OUTPUTS.is_multiple_of(step) && OUTPUTS.is_multiple_of(base_step));
    let g = Geom::pointwise(C_IN, c_out, (1, OUTPUTS));
    let win: Vec<f32> = (0..OUTPUTS * C_IN).map(|i| (i % 7) as f32 * 0.25).collect();
    let weights: Vec<f32> = (0..C_IN * c_out).map(|i| (i % 5) as f32 * 0.5).collect();
    let mut out = vec![0.0f32; OUTPUTS * c_out];
    let p = Pass {
        g: &g,
        win: &win,
        f: Filters::Panels {
            weights: &weights,
            width: c_out,
        },
        kys: (0, 1),
        terms: None,
        first: true,
        last: false,
        e: Epilogue::NONE,
        prefetch: std::ptr::null(),
        prefetch_stride: 16,
    };
    let o = out.as_mut_ptr();
    let time = |(block, step): (BlockFn, usize)| {
        let t = std::time::Instant::now();
        for _ in 0..64 {
            for j0 in (0..OUTPUTS).step_by(step) {
                // SAFETY: every block lies inside the outputs and channels above, and the
                // window holds all the inputs they read.
                unsafe { block(p, o, j0) }
            }
        }
        std::hint::black_box(o);
        t.elapsed()
    };
    // A round of each first, not counted: the output's first writes fault its pages in.
    time((candidate, step));
    time((baseline, base_step));
    let (mut best, mut best_base) = (std::time::Duration::MAX, std::time::Duration::MAX);
    for _ in 0..ROUNDS {
        best = best.min(time((candidate, step)));
        best_base = best_base.min(time((baseline, base_step)));
    }
    best.as_secs_f64() < 0.97 * best_base.as_secs_f64()
}

/// The masked blocks of 12 outputs x 2 vectors a 24-channel layer runs otherwise.
///
/// # Safety
/// As [`masked_block`].
#[cfg_attr(test, allow(dead_code))]
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn masked_24(p: Pass, out: *mut f32, j0: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { masked_block(p, out, j0, vector_masks(24)) }
}
