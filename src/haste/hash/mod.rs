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

#[cfg(target_arch = "x86_64")]
mod avx512;
mod sanitized;

#[cfg(target_arch = "x86_64")]
use avx512::{project_avx512, thresholds_and_codes_avx512};
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
    /// Output: one key per input channel.
    pub keys: Vec<Key>,
}

impl HashScratch {
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
/// `s.keys[..c]`.
///
/// The projections are taken straight from the image: by linearity, the projection of the
/// centered channel `z_c = x_c - m` (`m` the per-pixel mean over channels) is
/// `<x_c, r_l> - <m, r_l>`, and `<m, r_l>` is the mean over channels of `<x_c, r_l>`. So
/// centering costs one mean per hyperplane instead of a pass over the window, and the window
/// is read once, pixel by pixel, each pixel's row of channels feeding every hyperplane with an
/// entry there. A window holding a non-finite value is hashed by [`hash_window_sanitized`]
/// instead, which counts those values and hashes them as 0.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
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
    let mut off = StepTimer::new(false);
    hash_window_timed(
        isa,
        hwc,
        img_w,
        c,
        win,
        hp,
        centering,
        magnitude_step,
        s,
        &mut off,
    )
}

/// [`hash_window`], charging the projection and the codes to `timer`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn hash_window_timed(
    isa: Isa,
    hwc: &[f32],
    img_w: usize,
    c: usize,
    win: &Window,
    hp: &Hyperplanes,
    centering: bool,
    magnitude_step: Option<f32>,
    s: &mut HashScratch,
    timer: &mut StepTimer,
) -> HashCounts {
    let (_, fw) = hp.window();
    let lc = hp.count();
    let cpad = c.next_multiple_of(LANES);
    grow(&mut s.proj, lc * cpad);
    let mut finite = true;
    for ch0 in (0..c).step_by(LANES) {
        let cw = (c - ch0).min(LANES);
        let block = ProjectBlock {
            hwc,
            img_w,
            c,
            win,
            hp,
            fw,
            ch0,
            cw,
            cpad,
            magnitude: magnitude_step.is_some(),
        };
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 {
            // SAFETY: the caller runs tier `isa` only where the CPU supports it.
            finite &= unsafe { block.run_avx512(&mut s.proj, &mut s.norm2) };
            continue;
        }
        finite &= block.run_generic(&mut s.proj, &mut s.norm2);
    }
    timer.lap(|t| &mut t.project);
    // Threshold of each hyperplane: the mean projection over channels (centering), or 0.
    let proj = &s.proj[..lc * cpad];
    let (thresholds, codes) = (&mut s.thresholds, &mut s.codes[..c]);
    #[cfg(target_arch = "x86_64")]
    let finite = finite && {
        if isa == Isa::Avx512 {
            // SAFETY: the caller runs tier `isa` only where the CPU supports it.
            unsafe { thresholds_and_codes_avx512(proj, cpad, c, centering, thresholds, codes) }
        } else {
            thresholds_and_codes(proj, cpad, c, centering, thresholds, codes)
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let finite = finite && thresholds_and_codes(proj, cpad, c, centering, thresholds, codes);
    if !finite {
        return hash_window_sanitized(isa, hwc, img_w, c, win, hp, centering, magnitude_step, s);
    }
    let entries_used = if win.covers(hp.window()) {
        hp.nnz() as u64
    } else {
        let mut used = 0u64;
        for r in win.r0..win.r1 {
            for col in win.c0..win.c1 {
                used += hp.terms_at(r * fw + col).len() as u64;
            }
        }
        used
    };
    let counts = HashCounts {
        nonfinite: 0,
        entries_used,
    };
    let counts = finish_keys(s, c, magnitude_step, counts);
    timer.lap(|t| &mut t.code);
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
    thresholds.clear();
    thresholds.extend(proj.chunks_exact(cpad).map(row_sum));
    if !sums_to_thresholds(thresholds, c, centering) {
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

/// Turns each hyperplane's sum of projections over the `c` channels into its threshold (the
/// mean when `centering`, else 0), in place; false when a sum is not finite.
#[inline(always)]
fn sums_to_thresholds(sums: &mut [f32], c: usize, centering: bool) -> bool {
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

/// Projections of channels `ch0..ch0 + cw` (`cw <= 16`) of one window onto every hyperplane:
/// `proj[l * cpad + ch0 + k] = sum_pixels w_l(pixel) * x_{ch0 + k}(pixel)`, pixels in window
/// order, with the squared norms when `magnitude` is on. Both versions do the same fused
/// multiply-adds in the same order (exact additions for ternary weights), so they give the
/// same bits. Returns false when the window holds a non-finite value.
struct ProjectBlock<'a> {
    hwc: &'a [f32],
    img_w: usize,
    c: usize,
    win: &'a Window,
    hp: &'a Hyperplanes,
    fw: usize,
    ch0: usize,
    cw: usize,
    cpad: usize,
    magnitude: bool,
}

impl ProjectBlock<'_> {
    #[inline(always)]
    fn row(&self, r: usize, col: usize) -> &[f32] {
        let iy = (self.win.iy + r as isize) as usize;
        let ix = (self.win.ix + col as isize) as usize;
        &self.hwc[(iy * self.img_w + ix) * self.c + self.ch0..][..self.cw]
    }

    #[inline(always)]
    fn run_generic(&self, proj: &mut [f32], norm2: &mut [f32]) -> bool {
        let lc = self.hp.count();
        let mut acc = [[0.0f32; LANES]; 64];
        let mut nf = [0.0f32; LANES];
        let mut n2 = [0.0f32; LANES];
        for r in self.win.r0..self.win.r1 {
            for col in self.win.c0..self.win.c1 {
                let row = self.row(r, col);
                for t in self.hp.terms_at(r * self.fw + col) {
                    let a = &mut acc[t.l as usize];
                    for (a, &x) in a.iter_mut().zip(row) {
                        *a = x.mul_add(t.w, *a);
                    }
                }
                for (k, &x) in row.iter().enumerate() {
                    nf[k] = x.mul_add(0.0, nf[k]);
                    if self.magnitude {
                        n2[k] = x.mul_add(x, n2[k]);
                    }
                }
            }
        }
        for (l, a) in acc.iter().enumerate().take(lc) {
            proj[l * self.cpad + self.ch0..][..LANES].copy_from_slice(a);
        }
        norm2[self.ch0..][..self.cw].copy_from_slice(&n2[..self.cw]);
        nf.iter().all(|v| v.is_finite())
    }
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
