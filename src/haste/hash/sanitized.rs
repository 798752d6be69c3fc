//! Hashing a window that holds non-finite values (NaN, +-inf): they are counted and hashed
//! as 0, on an explicit centered copy of the window.

use super::*;

/// [`hash_window`] for a window that holds non-finite values: the window is copied and
/// centered explicitly, non-finite values counted and hashed as 0.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
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
