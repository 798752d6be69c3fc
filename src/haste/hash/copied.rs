//! Hashing a window already copied out of the image (`[win.h][win.w][c]`, zeros where it lies
//! outside the image): the copy the input merge and the reduced convolution read anyway, so
//! the window is gathered from the image once per patch.
//!
//! Each hyperplane's nonzero entries at the window's pixels inside the image become one list
//! of offsets into that copy, in window order ([`WindowTerms`], built once per layer and per
//! edge of the image, and reused), and its projections are summed in registers, 16 channels
//! a lane vector, several vectors per pass. The entries on the padding would add exact
//! zeros, so leaving them out keeps the codes, and every channel's sum runs in window order,
//! as in the definition: the same bits on every tier.

use super::*;
use crate::kernels::direct::Live;
use crate::kernels::isa::{Fused, MulAdd, Unfused};
use std::sync::{Arc, Mutex};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod passes;

/// Each hyperplane's nonzero entries as offsets into a copied window of `c` channels over the
/// hyperplanes' whole window (`[fh][fw][c]`; an edge patch's smaller window is copied into
/// one of that size, zeros past its edge), built once per layer.
///
/// Every list is padded to the longest one's length with zero weights at offset 0, and the
/// hyperplanes to a multiple of 8 (`GROUP`) with all-zero ones, so the vector projection runs
/// several hyperplanes' sums side by side in loops of one fixed length: one hyperplane at a
/// time, its sum was one chain of dependent additions, and each list's random length made
/// its loop exit a mispredicted branch (4x slower). A zero-weight entry adds an exact zero to
/// a sum that starts at +0, so the projections keep their bits (the window is checked finite
/// before).
#[derive(Clone, Debug, Default)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub struct WindowTerms {
    /// Entry `j` of hyperplane `l` is `offs[l * len + j]` (floats into the window) with
    /// weight `ws[l * len + j]`, window order.
    offs: Vec<u32>,
    ws: Vec<f32>,
    /// The same entries entry-major: entry `j` of hyperplane `l` at `j * padded + l`, so a
    /// pass over a few hyperplanes reads its entries from one pointer (AVX2's 16 vector
    /// registers hold the sums, its general registers not one list pointer per hyperplane).
    offs_by_entry: Vec<u32>,
    ws_by_entry: Vec<f32>,
    len: usize,
    /// Each hyperplane's own entry count (its list past that is padding).
    lens: Vec<usize>,
    /// The largest offset.
    max_off: usize,
    /// The window rows and columns whose entries the lists hold: the hyperplanes' whole
    /// window, or the part of an edge patch's window inside the image.
    present: Live,
    /// The hyperplanes' entries at those pixels (what hashing a window there costs).
    present_entries: u64,
    /// The frame's row length (pixels), `fw`.
    row: usize,
    /// Hyperplanes, and the padded count.
    count: usize,
    padded: usize,
    c: usize,
}

/// The hyperplane terms of the edge patches' windows, built on first use (which pixels are
/// present depends on the image size) and kept: at most eight per image size (the sides
/// and corners) and a few more where the last tile is short.
#[derive(Debug, Default)]
pub struct EdgeTerms(Mutex<Vec<Arc<WindowTerms>>>);

impl Clone for EdgeTerms {
    fn clone(&self) -> Self {
        EdgeTerms(Mutex::new(self.lock().clone()))
    }
}

impl EdgeTerms {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<WindowTerms>>> {
        // A panic elsewhere cannot leave the list half-written: pushes are whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The terms of `hp` for `c` channels at the `present` pixels.
    pub fn get(&self, hp: &Hyperplanes, c: usize, present: Live) -> Arc<WindowTerms> {
        let mut list = self.lock();
        if let Some(t) = list.iter().find(|t| t.present == present) {
            return t.clone();
        }
        let t = Arc::new(WindowTerms::within(hp, c, present));
        list.push(t.clone());
        t
    }
}

/// Every pixel of the hyperplanes' window.
fn whole(hp: &Hyperplanes) -> Live {
    let (h, w) = hp.window();
    Live {
        rows: (0, h),
        cols: (0, w),
    }
}

/// Hyperplanes whose sums the vector projection keeps side by side (its lists are padded to
/// a multiple of this).
const GROUP: usize = 8;

impl WindowTerms {
    pub fn new(hp: &Hyperplanes, c: usize) -> WindowTerms {
        WindowTerms::within(hp, c, whole(hp))
    }

    /// The terms of the entries at the `present` pixels of the hyperplanes' window: an edge
    /// patch's window, copied into the frame's layout (zeros at its padding and past its
    /// edge). The other entries would multiply zeros, so its projections are those of the
    /// whole frame (up to the sign of a zero sum, which no code bit sees), for the work of
    /// its own pixels: a 7 x 7 layer at tile 16 hashed an 18 x 18 frame for the 7 x 7
    /// pixels inside its image, and at tile 8 a 9 x 9 window whose ring is padding.
    pub fn within(hp: &Hyperplanes, c: usize, present: Live) -> WindowTerms {
        let (_, fw) = hp.window();
        let ((r0, r1), (c0, c1)) = (present.rows, present.cols);
        let inside = |pos: usize| (r0..r1).contains(&(pos / fw)) && (c0..c1).contains(&(pos % fw));
        let lists: Vec<Vec<(u32, f32)>> = (0..hp.count())
            .map(|l| {
                let row = hp.row(l).iter().enumerate();
                row.filter(|&(pos, &w)| w != 0.0 && inside(pos))
                    .map(|(pos, &w)| ((pos * c) as u32, w))
                    .collect()
            })
            .collect();
        let len = lists.iter().map(Vec::len).max().unwrap_or(0);
        let max_off = lists.iter().flatten().map(|&(o, _)| o as usize).max();
        let padded = hp.count().next_multiple_of(GROUP);
        let mut s = WindowTerms {
            len,
            max_off: max_off.unwrap_or(0),
            count: hp.count(),
            padded,
            c,
            present,
            row: fw,
            ..Default::default()
        };
        let empty = std::iter::repeat_with(Vec::new).take(padded - hp.count());
        for list in lists.into_iter().chain(empty) {
            s.lens.push(list.len());
            let padding = std::iter::repeat_n((0u32, 0.0f32), len - list.len());
            for (o, w) in list.into_iter().chain(padding) {
                s.offs.push(o);
                s.ws.push(w);
            }
        }
        (s.offs_by_entry, s.ws_by_entry) = (0..len * padded)
            .map(|at| (at % padded) * len + at / padded)
            .map(|at| (s.offs[at], s.ws[at]))
            .unzip();
        s.present_entries = s.lens.iter().sum::<usize>() as u64;
        debug_assert_eq!(s.present_entries, entries_at(hp, present));
        s
    }

    /// The hyperplanes' entries the terms hold (the lists' padding left out).
    pub fn entries(&self) -> usize {
        self.present_entries as usize
    }

    /// Whether an edge window, whose pixels outside the image are zeros in its copy, is
    /// hashed faster with these terms (of its pixels inside the image) than with `base`,
    /// those of its extent: the frame's, or for a window smaller than the frame those within
    /// it (their entries on the padding add exact zeros). Each entry left out saves a load
    /// of each of its 16-channel vectors from the window, in L1; but these terms are a table
    /// of their own (8 bytes per entry of each padded list), whose lines the projection
    /// reads from L2 beside the others. A line from L2 costs about two vector loads saved:
    /// on ResNet-56 (L = 14, one thread) the 64-channel layers at 8 x 8, one patch whose
    /// ring is padding (loads saved 12 times the table's lines), hashed in 0.40-0.42 cycles
    /// per channel and window pixel instead of 0.48-0.58, and the 32-channel layers at 16 x
    /// 16 (1.2 to 2.5 times) in 0.45-0.50 instead of 0.51-0.55, but the 16-channel layers at
    /// 32 x 32 (0.6 to 1.3 times) in 0.71-0.74 instead of 0.61-0.65; Tiny Darknet's
    /// 16-channel layers at 56 x 56, tile 16, lost as much where their short edge windows
    /// took tables of their own instead of their extent's.
    pub fn pays_off_over(&self, base: &WindowTerms) -> bool {
        let left_out = base.entries().saturating_sub(self.entries());
        let entry = std::mem::size_of::<u32>() + std::mem::size_of::<f32>();
        let table_lines = (self.len * self.padded * entry).div_ceil(64);
        left_out * self.c.div_ceil(LANES) > 2 * table_lines
    }

    /// The present pixels' rows in a frame of `c`-channel pixels: their spans of floats.
    fn present_rows(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let ((r0, r1), (c0, c1)) = (self.present.rows, self.present.cols);
        (r0..r1).map(move |r| (r * self.row + c0) * self.c..(r * self.row + c1) * self.c)
    }

    /// Hyperplane `l`'s offsets and weights (`l` below the padded count).
    #[inline(always)]
    fn terms(&self, l: usize) -> (&[u32], &[f32]) {
        let at = l * self.len;
        (&self.offs[at..at + self.len], &self.ws[at..at + self.len])
    }
}

/// Hashes the `c` channels of the copied window `buf` (`[fh][fw][c]` for the hyperplanes'
/// window `(fh, fw)`, zeros outside the image) into `s.keys[..c]`; `terms` are `hp`'s for
/// `c` channels at the present pixels of the patch's window `win` (only that part of `buf` is
/// read). `None` when the window holds a non-finite value or a sum overflows: then
/// [`hash_window_sanitized`] hashes it from the image.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
#[inline(always)]
pub fn hash_copied_window(
    isa: Isa,
    buf: &[f32],
    c: usize,
    win: &Window,
    hp: &Hyperplanes,
    terms: &WindowTerms,
    centering: bool,
    magnitude_step: Option<f32>,
    s: &mut HashScratch,
    timer: &mut StepTimer,
) -> Option<HashCounts> {
    let finite = if terms.present == whole(hp) {
        all_finite(&buf[..hp.dim() * c])
    } else {
        terms.present_rows().all(|rows| all_finite(&buf[rows]))
    };
    if !finite {
        return None;
    }
    hash_finite_window(
        isa,
        buf,
        c,
        win,
        hp,
        terms,
        centering,
        magnitude_step,
        s,
        timer,
    )
}

/// [`hash_copied_window`] of a window the caller knows to be finite (the copy that scanned
/// it, [`crate::haste::window::Window::copy_window_scanning`]): `None` only when a sum
/// overflows.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
#[inline(always)]
pub fn hash_finite_window(
    isa: Isa,
    buf: &[f32],
    c: usize,
    win: &Window,
    hp: &Hyperplanes,
    terms: &WindowTerms,
    centering: bool,
    magnitude_step: Option<f32>,
    s: &mut HashScratch,
    timer: &mut StepTimer,
) -> Option<HashCounts> {
    assert_eq!(terms.c, c, "hyperplane terms for another channel count");
    let buf = &buf[..hp.dim() * c];
    assert_eq!(
        terms.row,
        hp.window().1,
        "hyperplane terms for another window"
    );
    let lc = hp.count();
    let cpad = c.next_multiple_of(LANES);
    grow(&mut s.proj, lc * cpad);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the caller runs tier `isa` only where the CPU supports it.
        unsafe { avx512::project_copied(buf, c, cpad, terms, lc, &mut s.proj) };
    } else if isa == Isa::Avx2 {
        // SAFETY: as above.
        unsafe { avx2::project_copied(buf, c, cpad, terms, lc, &mut s.proj) };
    } else if isa.fused() {
        project_generic::<Fused>(buf, c, cpad, terms, lc, &mut s.proj);
    } else {
        project_one_at_a_time::<Unfused>(buf, c, cpad, terms, lc, &mut s.proj);
    }
    #[cfg(target_arch = "aarch64")]
    if isa == Isa::Neon {
        // SAFETY: the caller runs tier `isa` only where the CPU supports it.
        unsafe { neon::project_copied(buf, c, cpad, terms, lc, &mut s.proj) };
    } else {
        project_generic::<Fused>(buf, c, cpad, terms, lc, &mut s.proj);
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    project_generic::<Fused>(buf, c, cpad, terms, lc, &mut s.proj);
    if magnitude_step.is_some() {
        let norm2 = &mut s.norm2[..c];
        norm2.fill(0.0);
        for rows in terms.present_rows() {
            if isa.fused() {
                window_norms::<Fused>(&buf[rows], c, norm2);
            } else {
                window_norms::<Unfused>(&buf[rows], c, norm2);
            }
        }
    }
    timer.lap(|t| &mut t.project);
    let proj = &s.proj[..lc * cpad];
    let (thresholds, codes) = (&mut s.thresholds, &mut s.codes[..c]);
    #[cfg(target_arch = "x86_64")]
    let finite = if isa == Isa::Avx512 {
        // SAFETY: the caller runs tier `isa` only where the CPU supports it.
        unsafe { thresholds_and_codes_avx512(proj, cpad, c, centering, thresholds, codes) }
    } else if isa == Isa::Avx2 {
        // SAFETY: as above.
        unsafe { thresholds_and_codes_avx2(proj, cpad, c, centering, thresholds, codes) }
    } else {
        thresholds_and_codes(proj, cpad, c, centering, thresholds, codes)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let finite = thresholds_and_codes(proj, cpad, c, centering, thresholds, codes);
    if !finite {
        return None;
    }
    // The terms of an edge window's own pixels counted theirs when they were built.
    let entries_used = if terms.present == win.live() {
        terms.present_entries
    } else {
        entries_at(hp, win.live())
    };
    let counts = HashCounts {
        nonfinite: 0,
        entries_used,
    };
    let counts = finish_keys(s, c, magnitude_step, counts);
    timer.lap(|t| &mut t.code);
    Some(counts)
}

/// Hyperplane entries at the `present` pixels of the window (what the projection costs).
fn entries_at(hp: &Hyperplanes, present: Live) -> u64 {
    let (_, fw) = hp.window();
    if present == whole(hp) {
        return hp.nnz() as u64;
    }
    let ((r0, r1), (c0, c1)) = (present.rows, present.cols);
    let mut used = 0u64;
    for r in r0..r1 {
        for col in c0..c1 {
            used += hp.terms_at(r * fw + col).len() as u64;
        }
    }
    used
}

/// True when every value is finite: `x * 0` is NaN exactly for NaN and infinities. Four
/// independent vectors of sums, so the check runs at load speed, not at the latency of one
/// chain of additions.
#[inline(always)]
fn all_finite(buf: &[f32]) -> bool {
    let mut acc = [[0.0f32; LANES]; 4];
    let mut chunks = buf.chunks_exact(4 * LANES);
    for ch in &mut chunks {
        for (a, v) in acc.iter_mut().zip(ch.chunks_exact(LANES)) {
            for (a, &x) in a.iter_mut().zip(v) {
                *a += x * 0.0;
            }
        }
    }
    let mut tail = 0.0f32;
    for &x in chunks.remainder() {
        tail += x * 0.0;
    }
    tail == 0.0 && acc.iter().flatten().all(|&a| a == 0.0)
}

/// Adds each channel's squared norm over the pixels of `buf` to `norm2`, pixels in window
/// order (zeros add nothing). A block of 16 channels at a time over every pixel, its sums in
/// registers: pixel by pixel in memory, each pixel waited on the previous one's stores (0.4
/// cycles per channel and pixel on 16-channel layers).
#[inline(always)]
fn window_norms<M: MulAdd>(buf: &[f32], c: usize, norm2: &mut [f32]) {
    let blocks = c / LANES;
    for k in 0..blocks {
        let sums: &mut [f32; LANES] = (&mut norm2[k * LANES..][..LANES])
            .try_into()
            .expect("a block");
        let mut acc = *sums;
        for px in buf.chunks_exact(c) {
            let x: &[f32; LANES] = px[k * LANES..][..LANES].try_into().expect("a block");
            for (a, &x) in acc.iter_mut().zip(x) {
                *a = M::madd(x, x, *a);
            }
        }
        *sums = acc;
    }
    let tail = blocks * LANES;
    if tail == c {
        return;
    }
    for px in buf.chunks_exact(c) {
        for (n, &x) in norm2[tail..c].iter_mut().zip(&px[tail..]) {
            *n = M::madd(x, x, *n);
        }
    }
}

/// The projections of every channel on every hyperplane into `proj` (`L` rows of `cpad`,
/// zero past `c`): per block of 16 channels and hyperplane, the entries' fused
/// multiply-adds in window order, in registers. Four hyperplanes at a time (their lists are
/// padded to one length with zero weights, which add exact zeros): one hyperplane's sums
/// were one chain of dependent multiply-adds per vector, so the loop ran at their latency
/// (AVX2: 1.1 cycles per channel and window pixel on ResNet-18's HASTE layers).
#[inline(always)]
fn project_generic<M: MulAdd>(
    buf: &[f32],
    c: usize,
    cpad: usize,
    lists: &WindowTerms,
    lc: usize,
    proj: &mut [f32],
) {
    const H: usize = 4;
    debug_assert!(lists.padded.is_multiple_of(H) && lists.padded >= lc);
    for ch0 in (0..c).step_by(LANES) {
        let cw = (c - ch0).min(LANES);
        for l0 in (0..lc).step_by(H) {
            let [(o0, w0), (o1, w1), (o2, w2), (o3, w3)]: [(&[u32], &[f32]); H] =
                std::array::from_fn(|h| lists.terms(l0 + h));
            let mut acc = [[0.0f32; LANES]; H];
            let [a0, a1, a2, a3] = &mut acc;
            let n = lists.len;
            let (o0, o1, o2, o3) = (&o0[..n], &o1[..n], &o2[..n], &o3[..n]);
            let (w0, w1, w2, w3) = (&w0[..n], &w1[..n], &w2[..n], &w3[..n]);
            let lanes = |o: u32| -> &[f32; LANES] {
                buf[o as usize + ch0..][..LANES]
                    .try_into()
                    .expect("16 lanes")
            };
            if cw == LANES {
                for j in 0..n {
                    let (x0, x1, x2, x3) = (lanes(o0[j]), lanes(o1[j]), lanes(o2[j]), lanes(o3[j]));
                    for i in 0..LANES {
                        a0[i] = M::madd(x0[i], w0[j], a0[i]);
                        a1[i] = M::madd(x1[i], w1[j], a1[i]);
                        a2[i] = M::madd(x2[i], w2[j], a2[i]);
                        a3[i] = M::madd(x3[i], w3[j], a3[i]);
                    }
                }
            } else {
                let terms = [(o0, w0), (o1, w1), (o2, w2), (o3, w3)];
                for j in 0..n {
                    for (acc, (offs, ws)) in acc.iter_mut().zip(&terms) {
                        let x = &buf[offs[j] as usize + ch0..][..cw];
                        for (a, &x) in acc.iter_mut().zip(x) {
                            *a = M::madd(x, ws[j], *a);
                        }
                    }
                }
            }
            for (h, acc) in acc.iter().enumerate().take(lc - l0) {
                proj[(l0 + h) * cpad + ch0..][..LANES].copy_from_slice(acc);
            }
        }
    }
}

/// The projections of every channel on every hyperplane into `proj` (`L` rows of `cpad`,
/// zero past `c`), one hyperplane at a time: [`project_generic`]'s sums, for a tier with
/// few vector registers (SSE2's 16 hold four hyperplanes' sums of 16 lanes and nothing
/// else: spilled, they were 30 % slower).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn project_one_at_a_time<M: MulAdd>(
    buf: &[f32],
    c: usize,
    cpad: usize,
    lists: &WindowTerms,
    lc: usize,
    proj: &mut [f32],
) {
    for ch0 in (0..c).step_by(LANES) {
        let cw = (c - ch0).min(LANES);
        for l in 0..lc {
            let (offs, ws) = lists.terms(l);
            let mut acc = [0.0f32; LANES];
            if cw == LANES {
                for (&o, &w) in offs.iter().zip(ws) {
                    let x: &[f32; LANES] = buf[o as usize + ch0..][..LANES]
                        .try_into()
                        .expect("16 lanes");
                    for (a, &x) in acc.iter_mut().zip(x) {
                        *a = M::madd(x, w, *a);
                    }
                }
            } else {
                for (&o, &w) in offs.iter().zip(ws) {
                    let x = &buf[o as usize + ch0..][..cw];
                    for (a, &x) in acc.iter_mut().zip(x) {
                        *a = M::madd(x, w, *a);
                    }
                }
            }
            proj[l * cpad + ch0..][..LANES].copy_from_slice(&acc);
        }
    }
}
