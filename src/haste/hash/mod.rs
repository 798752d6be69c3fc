//! Step 2: hash every input channel of a window to a bucket code.
//!
//! The window's pixels are gathered pixel-major (`[pixel][channel]`, from the image transposed
//! to HWC once per image) so that every step below is a vector operation over channels:
//!
//! 1. **Centering**: at every pixel, subtract the mean over channels. Centered values are only
//!    used for hashing; the convolution uses the original input.
//! 2. **Projection**: for each hyperplane `l`, `<z_c, r_l>` for all channels `c` at once, as
//!    sums and differences of pixel rows (ternary) or a dense dot product (Gaussian).
//! 3. **Code**: bit `l` of channel `c`'s code is `<z_c, r_l> > 0`.
//! 4. Optionally (**magnitude bins**, not in the paper), the bucket key also holds
//!    `floor(log2(||x_c||) / step)` of the uncentered channel's L2 norm over the window, with a
//!    separate bin for norms `<= ZERO_NORM`, so channels of very different levels never merge.
//!
//! Non-finite inputs (NaN, +-inf) are counted and hashed as 0; they still reach the
//! convolution unchanged, as in the dense layer.
//!
//! Where: a layer hashes the copy of each patch's window it also merges and convolves
//! ([`hash_copied_window`], `copied.rs`: the projection's loops, per instruction set);
//! this file holds the entry for a window still in the image ([`hash_window`]), the
//! thresholds and codes, and the keys; `sanitized.rs` the path for non-finite windows.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod copied;
mod sanitized;

#[cfg(target_arch = "x86_64")]
use avx2::thresholds_and_codes_avx2;
#[cfg(target_arch = "x86_64")]
use avx512::{project_avx512, thresholds_and_codes_avx512};
pub use copied::{hash_copied_window, hash_finite_window, EdgeTerms, WindowTerms};
pub use sanitized::hash_window_sanitized;

use super::config::HyperplaneKind;
use super::hyperplanes::Hyperplanes;
use super::steps::StepTimer;
use super::window::Window;
use crate::kernels::isa::Isa;

/// Channels hashed together (one AVX-512 register of sums per hyperplane).
const LANES: usize = 16;

/// Channels whose window norm is at most this fall in the "zero" magnitude bin.
pub const ZERO_NORM: f32 = 1e-12;

/// Bucket key of a channel: the angular code in the low 64 bits, the magnitude bin (0 when
/// magnitude bins are off or for the zero bin) in the high 64 bits.
pub type Key = u128;

/// Reusable buffers of the hashing step.
#[derive(Clone, Debug, Default)]
pub struct HashScratch {
    /// Window pixels, `[win_h * win_w][c_in]` in hyperplane coordinates (absent pixels unused).
    z: Vec<f32>,
    acc: Vec<f32>,
    norm2: Vec<f32>,
    /// `[L][c rounded up to 16]`: every channel's projection on every hyperplane.
    proj: Vec<f32>,
    thresholds: Vec<f32>,
    codes: Vec<u64>,
    /// Ternary: window positions of the entries at present pixels, and where each
    /// hyperplane's `+1` and `-1` lists end in it.
    pos: Vec<u32>,
    lists: Vec<u32>,
    /// The window [`hash_window`] copies out of the image.
    window: Vec<f32>,
    /// Output: one key per input channel.
    pub keys: Vec<Key>,
}

impl HashScratch {
    /// Bytes its buffers hold.
    pub fn bytes(&self) -> u64 {
        use crate::kernels::buffer_bytes as b;
        let floats = [
            &self.z,
            &self.acc,
            &self.norm2,
            &self.proj,
            &self.thresholds,
        ];
        let floats: u64 = floats.into_iter().map(b).sum();
        let ints = b(&self.codes) + b(&self.pos) + b(&self.lists);
        floats + ints + b(&self.window) + b(&self.keys)
    }

    /// Grows the buffers for `c_in` channels over windows of `d` pixels.
    pub fn reserve(&mut self, c_in: usize, d: usize) {
        grow(&mut self.z, c_in * d);
        grow(&mut self.acc, c_in);
        grow(&mut self.norm2, c_in);
        grow(&mut self.codes, c_in);
        grow(&mut self.keys, c_in);
    }
}

pub(crate) use crate::kernels::grow;

/// What hashing one window did, for the stats and FLOP counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashCounts {
    /// Non-finite input values seen in the window (hashed as 0).
    pub nonfinite: u64,
    /// Hyperplane entries used (nonzero and at a present pixel); the projection costs
    /// `c_in` times this.
    pub entries_used: u64,
}

/// Hashes the `c` channels of window `win` of the HWC image `hwc` (width `img_w`) into
/// `s.keys[..c]`: the window is copied out of the image (zeros outside it) and hashed by
/// (a test and benchmark entry: the layer builds its [`WindowTerms`] once)
/// [`hash_copied_window`], or by [`hash_window_sanitized`] when it holds a non-finite value.
///
/// Centering needs no pass over the window: by linearity, the projection of the centered
/// channel `z_c = x_c - m` (`m` the per-pixel mean over channels) is `<x_c, r_l> - <m, r_l>`,
/// and `<m, r_l>` is the mean over channels of `<x_c, r_l>`, so it costs one mean per
/// hyperplane.
#[allow(clippy::too_many_arguments)]
pub fn hash_window(
    isa: Isa,
    hwc: &[f32],
    img_w: usize,
    c: usize,
    win: &Window,
    hp: &Hyperplanes,
    centering: bool,
    magnitude_step: Option<f32>,
    s: &mut HashScratch,
) -> HashCounts {
    s.reserve(c, hp.dim());
    let mut buf = std::mem::take(&mut s.window);
    grow(&mut buf, hp.dim() * c);
    win.copy_into(hwc, img_w, c, hp.window(), &mut buf);
    let mut off = StepTimer::new(false);
    let terms = WindowTerms::new(hp, c);
    let (cen, mag) = (centering, magnitude_step);
    let counts = hash_copied_window(isa, &buf, c, win, hp, &terms, cen, mag, s, &mut off)
        .unwrap_or_else(|| {
            hash_window_sanitized(isa, hwc, img_w, c, win, hp, centering, magnitude_step, s)
        });
    s.window = buf;
    counts
}

/// Each hyperplane's threshold into `thresholds`, and the channels' codes into `codes`
/// (`c` channels). `proj` holds `L` rows of `cpad` projections (zero past `c`).
///
/// - The threshold is the mean of the hyperplane's projections over the channels when
///   `centering`, else 0. The sum runs in 16 lanes along the row, then as a pairwise tree over
///   the lanes ([`sum16`]): the same order on every instruction set.
/// - Bit `l` of a channel's code is set when its projection on hyperplane `l` is above the
///   threshold (a NaN is not).
///
/// Returns false, with the codes unset, when a sum is not finite.
fn thresholds_and_codes(
    proj: &[f32],
    cpad: usize,
    c: usize,
    centering: bool,
    thresholds: &mut Vec<f32>,
    codes: &mut [u64],
) -> bool {
    if !row_thresholds(proj, cpad, c, centering, thresholds, row_sum) {
        return false;
    }
    codes.fill(0);
    for (l, &t) in thresholds.iter().enumerate() {
        for (code, &v) in codes.iter_mut().zip(&proj[l * cpad..]) {
            *code |= ((v > t) as u64) << l;
        }
    }
    true
}

/// Each hyperplane's threshold into `thresholds`: the sum of its row of `proj` (`cpad`
/// values, by a tier's `row_sum`) over the `c` channels turned into the mean when
/// `centering`, else 0; false when a sum is not finite.
#[inline(always)]
fn row_thresholds(
    proj: &[f32],
    cpad: usize,
    c: usize,
    centering: bool,
    thresholds: &mut Vec<f32>,
    row_sum: impl Fn(&[f32]) -> f32,
) -> bool {
    thresholds.clear();
    thresholds.extend(proj.chunks_exact(cpad).map(row_sum));
    let sums = &mut thresholds[..];
    if !sums.iter().all(|s| s.is_finite()) {
        return false;
    }
    for t in sums.iter_mut() {
        *t = if centering { *t / c as f32 } else { 0.0 };
    }
    true
}

/// Sum of a row of `16 * k` projections: 16 lanes, then [`sum16`].
fn row_sum(row: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for block in row.chunks_exact(LANES) {
        for (a, &v) in lanes.iter_mut().zip(block) {
            *a += v;
        }
    }
    sum16(&lanes)
}

/// Keys from the codes (and the magnitude bins).
#[inline(always)]
fn finish_keys(
    s: &mut HashScratch,
    c: usize,
    magnitude_step: Option<f32>,
    counts: HashCounts,
) -> HashCounts {
    let (codes, norm2) = (&s.codes[..c], &s.norm2[..c]);
    let keys = &mut s.keys[..c];
    match magnitude_step {
        None => {
            for (k, &code) in keys.iter_mut().zip(codes.iter()) {
                *k = code as Key;
            }
        }
        Some(step) => {
            for ((k, &code), &n2) in keys.iter_mut().zip(codes.iter()).zip(norm2.iter()) {
                *k = code as Key | (magnitude_bin(n2, step) as Key) << 64;
            }
        }
    }
    counts
}

/// The magnitude bin of a channel with squared window norm `norm2`, as an unsigned label:
/// 0 for the zero bin, else `1 +` the offset bin `floor(log2(norm) / step)`.
pub fn magnitude_bin(norm2: f32, step: f32) -> u64 {
    if norm2.is_nan() || norm2 <= ZERO_NORM * ZERO_NORM {
        return 0;
    }
    const LIMIT: f64 = (1u64 << 40) as f64;
    if step == 0.5 && norm2.is_normal() {
        // The default step: `floor(log2(norm2))` is the float's exponent, exactly (the libm
        // call cost 0.2 cycles per channel and window pixel on 16-channel layers).
        let exponent = ((norm2.to_bits() >> 23) & 0xff) as i32 - 127;
        return (exponent as f64 + LIMIT) as u64 + 1;
    }
    magnitude_bin_by_log(norm2, step)
}

/// [`magnitude_bin`] of a norm past the zero bin, by the logarithm (any step).
fn magnitude_bin_by_log(norm2: f32, step: f32) -> u64 {
    const LIMIT: f64 = (1u64 << 40) as f64;
    let bin = (0.5 * (norm2 as f64).log2() / step as f64)
        .floor()
        .clamp(-LIMIT, LIMIT);
    (bin + LIMIT) as u64 + 1
}

/// `v[0] + .. + v[15]` as a pairwise tree (halves, quarters, ...), the same order everywhere.
#[inline(always)]
fn sum16(v: &[f32; LANES]) -> f32 {
    let a: [f32; 8] = std::array::from_fn(|i| v[i] + v[i + 8]);
    let b: [f32; 4] = std::array::from_fn(|i| a[i] + a[i + 4]);
    let c: [f32; 2] = std::array::from_fn(|i| b[i] + b[i + 2]);
    c[0] + c[1]
}

/// Sum of a slice in 16 interleaved lanes (vectorizes; deterministic order).
#[inline(always)]
fn sum_lanes(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = v.chunks_exact(16);
    for ch in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(ch) {
            *l += x;
        }
    }
    let mut tail = 0.0;
    for &x in chunks.remainder() {
        tail += x;
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests;
