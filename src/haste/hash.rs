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

use super::config::HyperplaneKind;
use super::conv::Window;
use super::hyperplanes::Hyperplanes;
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
    finish_keys(s, c, magnitude_step, counts)
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

/// [`thresholds_and_codes`] in registers, with the same bits: the row sums are the same
/// additions (lane `i` of the tree's first level is `v[i] + v[i + 8]`, and so on), and each
/// hyperplane's compare gives a mask of channels whose codes get bit `l`.
///
/// # Safety
/// AVX-512F must be supported.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn thresholds_and_codes_avx512(
    proj: &[f32],
    cpad: usize,
    c: usize,
    centering: bool,
    thresholds: &mut Vec<f32>,
    codes: &mut [u64],
) -> bool {
    use std::arch::x86_64::*;
    thresholds.clear();
    for row in proj.chunks_exact(cpad) {
        thresholds.push(row_sum_avx512(row));
    }
    if !sums_to_thresholds(thresholds, c, centering) {
        return false;
    }
    assert!(proj.len() >= thresholds.len() * cpad && codes.len() <= cpad);
    for ch0 in (0..codes.len()).step_by(LANES) {
        let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for (l, &t) in thresholds.iter().enumerate() {
            // SAFETY: row `l` holds `cpad >= ch0 + 16` values (asserted above).
            let v = unsafe { _mm512_loadu_ps(proj.as_ptr().add(l * cpad + ch0)) };
            let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_set1_ps(t));
            let bit = _mm512_set1_epi64(1i64 << l);
            lo = _mm512_mask_or_epi64(lo, gt as u8, lo, bit);
            hi = _mm512_mask_or_epi64(hi, (gt >> 8) as u8, hi, bit);
        }
        let mut lanes = [0u64; LANES];
        // SAFETY: `lanes` holds 16 values.
        unsafe {
            _mm512_storeu_si512(lanes.as_mut_ptr() as *mut _, lo);
            _mm512_storeu_si512(lanes.as_mut_ptr().add(8) as *mut _, hi);
        }
        let n = (codes.len() - ch0).min(LANES);
        codes[ch0..ch0 + n].copy_from_slice(&lanes[..n]);
    }
    true
}

/// [`row_sum`] in one register.
///
/// # Safety
/// AVX-512F must be supported.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn row_sum_avx512(row: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut v = _mm512_setzero_ps();
    for block in row.chunks_exact(LANES) {
        // SAFETY: `block` holds 16 values.
        v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(block.as_ptr()) });
    }
    // Halves, quarters, pairs, then the last two: the low lanes of each step hold the sums
    // `sum16` forms (an addition of two finite values is the same either way round).
    let a = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b01_00_11_10>(v, v));
    let b = _mm512_add_ps(a, _mm512_shuffle_f32x4::<0b00_00_00_01>(a, a));
    let c = _mm512_add_ps(b, _mm512_permute_ps::<0b00_00_11_10>(b));
    let d = _mm512_add_ps(c, _mm512_permute_ps::<0b00_00_00_01>(c));
    _mm512_cvtss_f32(d)
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

    /// # Safety
    /// AVX-512F must be supported.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, proj: &mut [f32], norm2: &mut [f32]) -> bool {
        use std::arch::x86_64::*;
        let lc = self.hp.count();
        let mask: u16 = if self.cw == LANES {
            0xffff
        } else {
            (1u16 << self.cw) - 1
        };
        let zero = _mm512_setzero_ps();
        // The accumulators are the block's rows of `proj` (only `L` of them to clear).
        let cpad = self.cpad;
        let base = proj[self.ch0..].as_mut_ptr();
        assert!(proj.len() >= (lc.max(1) - 1) * cpad + self.ch0 + LANES);
        for l in 0..lc {
            // SAFETY: row `l` of the block lies inside `proj` (asserted above).
            unsafe { _mm512_storeu_ps(base.add(l * cpad), zero) };
        }
        let (mut nf, mut n2) = (zero, zero);
        for r in self.win.r0..self.win.r1 {
            for col in self.win.c0..self.win.c1 {
                let row = self.row(r, col);
                // SAFETY: `row` holds `cw` values; the mask loads exactly those.
                let x = unsafe { _mm512_maskz_loadu_ps(mask, row.as_ptr()) };
                for t in self.hp.terms_at(r * self.fw + col) {
                    // SAFETY: `t.l < L`, so the row lies inside `proj` (asserted above).
                    unsafe {
                        let a = base.add(t.l as usize * cpad);
                        _mm512_storeu_ps(
                            a,
                            _mm512_fmadd_ps(x, _mm512_set1_ps(t.w), _mm512_loadu_ps(a)),
                        );
                    }
                }
                nf = _mm512_fmadd_ps(x, zero, nf);
                if self.magnitude {
                    n2 = _mm512_fmadd_ps(x, x, n2);
                }
            }
        }
        let mut n2s = [0.0f32; LANES];
        // SAFETY: `n2s` holds 16 values.
        unsafe { _mm512_storeu_ps(n2s.as_mut_ptr(), n2) };
        norm2[self.ch0..][..self.cw].copy_from_slice(&n2s[..self.cw]);
        // A NaN lane compares unordered with itself.
        _mm512_cmp_ps_mask::<_CMP_ORD_Q>(nf, nf) == 0xffff
    }
}

/// [`hash_window`] for a window that holds non-finite values: the window is copied and
/// centered explicitly, non-finite values counted and hashed as 0.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub fn hash_window_sanitized(
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
    let (_, fw) = hp.window();
    let mut counts = HashCounts::default();
    let z = &mut s.z;
    let norm2 = &mut s.norm2[..c];
    norm2.fill(0.0);
    let span = (win.c1 - win.c0) * c;
    for r in win.r0..win.r1 {
        let iy = (win.iy + r as isize) as usize;
        let ix = (win.ix + win.c0 as isize) as usize;
        let src = &hwc[(iy * img_w + ix) * c..][..span];
        let dst = &mut z[(r * fw + win.c0) * c..][..span];
        dst.copy_from_slice(src);
        for px in dst.chunks_exact_mut(c) {
            let mut sum = sum_lanes(px);
            if !sum.is_finite() {
                for v in px.iter_mut() {
                    if !v.is_finite() {
                        counts.nonfinite += 1;
                        *v = 0.0;
                    }
                }
                sum = sum_lanes(px);
                if !sum.is_finite() {
                    // Finite values too large to sum in f32.
                    sum = (px.iter().map(|&v| v as f64).sum::<f64>()) as f32;
                }
            }
            if magnitude_step.is_some() {
                for (n, &v) in norm2.iter_mut().zip(px.iter()) {
                    *n += v * v;
                }
            }
            if centering {
                let mean = sum / c as f32;
                for v in px.iter_mut() {
                    *v -= mean;
                }
            }
        }
    }

    let codes = &mut s.codes[..c];
    let full = win.covers(hp.window());
    match hp.kind() {
        HyperplaneKind::Ternary => {
            // Entries at present pixels, per hyperplane: `+1`s then `-1`s (window positions).
            let pos = &mut s.pos;
            pos.clear();
            let lists = &mut s.lists;
            lists.clear();
            for l in 0..hp.count() {
                let (plus, minus) = hp.signed_entries(l);
                for list in [plus, minus] {
                    for e in list {
                        if full || win.has(e.r as usize, e.c as usize) {
                            pos.push(e.pos);
                        }
                    }
                    lists.push(pos.len() as u32);
                }
            }
            counts.entries_used += pos.len() as u64;
            // 16 channels at a time, each hyperplane's sums kept in registers; per channel the
            // additions happen in the same order as one hyperplane at a time over all channels.
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 {
                let mut ch0 = 0;
                while ch0 < c {
                    let cw = (c - ch0).min(LANES);
                    // SAFETY: AVX-512F is supported (checked above); `pos` holds positions of
                    // the window, and `z` holds `c` channels at each of them.
                    let code = unsafe { project_avx512(z, c, ch0, cw, pos, lists) };
                    codes[ch0..ch0 + cw].copy_from_slice(&code[..cw]);
                    ch0 += LANES;
                }
                return finish_keys(s, c, magnitude_step, counts);
            }
            let mut ch0 = 0;
            while ch0 < c {
                let cw = (c - ch0).min(LANES);
                let mut code = [0u64; LANES];
                let mut from = 0usize;
                for l in 0..lists.len() / 2 {
                    let (mid, to) = (lists[2 * l] as usize, lists[2 * l + 1] as usize);
                    let mut acc = [0.0f32; LANES];
                    for &p in &pos[from..mid] {
                        let row = &z[p as usize * c + ch0..][..cw];
                        for k in 0..cw {
                            acc[k] += row[k];
                        }
                    }
                    for &p in &pos[mid..to] {
                        let row = &z[p as usize * c + ch0..][..cw];
                        for k in 0..cw {
                            acc[k] -= row[k];
                        }
                    }
                    for k in 0..LANES {
                        code[k] |= ((acc[k] > 0.0) as u64) << l;
                    }
                    from = to;
                }
                codes[ch0..ch0 + cw].copy_from_slice(&code[..cw]);
                ch0 += LANES;
            }
        }
        HyperplaneKind::Gaussian => {
            codes.fill(0);
            let acc = &mut s.acc[..c];
            for l in 0..hp.count() {
                acc.fill(0.0);
                let hrow = hp.row(l);
                for r in win.r0..win.r1 {
                    for col in win.c0..win.c1 {
                        let pos = r * fw + col;
                        let wgt = hrow[pos];
                        counts.entries_used += 1;
                        let row = &z[pos * c..][..c];
                        for (a, &v) in acc.iter_mut().zip(row) {
                            *a += wgt * v;
                        }
                    }
                }
                for (code, &a) in codes.iter_mut().zip(acc.iter()) {
                    *code |= ((a > 0.0) as u64) << l;
                }
            }
        }
    }

    finish_keys(s, c, magnitude_step, counts)
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

/// The codes of channels `ch0..ch0 + cw` (`cw <= 16`): hyperplane `l` adds the rows at
/// `pos[lists[2l - 1]..lists[2l]]` and subtracts those at `pos[lists[2l]..lists[2l + 1]]`, in
/// order (the same additions, in the same order, as the portable loop).
///
/// # Safety
/// AVX-512F must be supported; every `p * c + ch0 + cw <= z.len()` for `p` in `pos`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn project_avx512(
    z: &[f32],
    c: usize,
    ch0: usize,
    cw: usize,
    pos: &[u32],
    lists: &[u32],
) -> [u64; LANES] {
    use std::arch::x86_64::*;
    let mask: u16 = if cw == LANES {
        0xffff
    } else {
        (1u16 << cw) - 1
    };
    assert!(pos.iter().all(|&p| p as usize * c + ch0 + cw <= z.len()));
    let base = z.as_ptr().add(ch0);
    let zero = _mm512_setzero_ps();
    let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
    let mut from = 0usize;
    for l in 0..lists.len() / 2 {
        let (mid, to) = (lists[2 * l] as usize, lists[2 * l + 1] as usize);
        let mut acc = zero;
        for &p in &pos[from..mid] {
            acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mask, base.add(p as usize * c)));
        }
        for &p in &pos[mid..to] {
            acc = _mm512_sub_ps(acc, _mm512_maskz_loadu_ps(mask, base.add(p as usize * c)));
        }
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(acc, zero);
        let bit = _mm512_set1_epi64(1i64 << l);
        lo = _mm512_mask_or_epi64(lo, gt as u8, lo, bit);
        hi = _mm512_mask_or_epi64(hi, (gt >> 8) as u8, hi, bit);
        from = to;
    }
    let mut code = [0u64; LANES];
    _mm512_storeu_si512(code.as_mut_ptr() as *mut _, lo);
    _mm512_storeu_si512(code.as_mut_ptr().add(8) as *mut _, hi);
    code
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
mod tests {
    use super::*;

    /// The vector thresholds and codes against the portable loops, bit for bit, over rows of
    /// one to four blocks of channels, with signed zeros (ties with the threshold 0 when not
    /// centering); and a NaN projection reported as a non-finite sum by both.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_thresholds_and_codes_give_the_portable_bits() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for (c, lc) in [(3usize, 5usize), (16, 14), (37, 20), (48, 64), (64, 6)] {
            let cpad = c.next_multiple_of(LANES);
            let mut proj = vec![0.0f32; lc * cpad];
            for l in 0..lc {
                for k in 0..c {
                    let i = l * 131 + k * 17;
                    proj[l * cpad + k] = match i % 11 {
                        0 => -0.0,
                        1 => 0.0,
                        2 if l % 4 == 1 => 0.25,
                        _ => ((i * 7919 % 1009) as f32 - 504.0) * 1.37e-3,
                    };
                }
            }
            for centering in [true, false] {
                let (mut t_want, mut t_got) = (Vec::new(), Vec::new());
                let (mut want, mut got) = (vec![0u64; c], vec![u64::MAX; c]);
                assert!(thresholds_and_codes(
                    &proj,
                    cpad,
                    c,
                    centering,
                    &mut t_want,
                    &mut want
                ));
                // SAFETY: AVX-512F is checked above.
                let ok = unsafe {
                    thresholds_and_codes_avx512(&proj, cpad, c, centering, &mut t_got, &mut got)
                };
                assert!(ok);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&t_got), bits(&t_want), "c {c}, L {lc}");
                assert_eq!(got, want, "c {c}, L {lc}, centering {centering}");
                let all = u64::MAX >> (64 - lc);
                assert!(want.iter().any(|&w| w != 0) && want.iter().any(|&w| w != all));
            }
            // A NaN projection: the sum is not finite, on both paths.
            let mut bad = proj.clone();
            bad[cpad + c / 2] = f32::NAN;
            let (mut t, mut codes) = (Vec::new(), vec![0u64; c]);
            assert!(!thresholds_and_codes(
                &bad, cpad, c, true, &mut t, &mut codes
            ));
            // SAFETY: as above.
            assert!(!unsafe {
                thresholds_and_codes_avx512(&bad, cpad, c, true, &mut t, &mut codes)
            });
        }
    }

    #[test]
    fn magnitude_bins() {
        assert_eq!(magnitude_bin(0.0, 0.5), 0);
        assert_eq!(magnitude_bin(1e-30, 0.5), 0);
        // norm 1 and 1.2 share the [1, sqrt 2) half-octave; 1.5 does not.
        assert_eq!(magnitude_bin(1.0, 0.5), magnitude_bin(1.44, 0.5));
        assert_ne!(magnitude_bin(1.0, 0.5), magnitude_bin(2.25, 0.5));
        assert_ne!(magnitude_bin(1e-20, 0.5), 0);
        assert!(magnitude_bin(f32::INFINITY, 0.5) > magnitude_bin(1e30, 0.5));
    }

    #[test]
    fn lane_sum() {
        let v: Vec<f32> = (0..37).map(|i| i as f32).collect();
        assert_eq!(sum_lanes(&v), (0..37).sum::<i32>() as f32);
    }
}
