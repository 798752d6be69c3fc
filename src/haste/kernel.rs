//! Step 5's hot loop: the reduced convolution of one patch as one fused, implicit GEMM.
//!
//! `out[j][co] = sum_{(ky, kx)} sum_b win[pix(j, ky, kx)][first_b] * W'[(ky, kx), b][co]`
//!
//! - `win` is the input window in full-channel layout `[win_h][win_w][c_in]` where, for every
//!   bucket with more than one channel, the slot of its first channel holds the bucket mean
//!   (singleton channels are left as they are), so the merged input of bucket `b` is
//!   `win[pix][first_b]`: no compaction, no im2col (the receptive field is addressed in place).
//! - the merged filter rows `W'[(ky, kx), b]` are addressed through one row address per
//!   bucket, `rows[b]` (its tap-0 row), plus `kk * tap_stride` for tap `kk`: singleton buckets
//!   point into the layer's weights `[(ky, kx)][c_in][c_out]` directly (never copied), merged
//!   buckets into a buffer of the same layout where only their rows are written.
//!
//! Every output is accumulated with fused multiply-adds in the fixed order (tap, bucket), so
//! the AVX-512 kernel and the portable one ([`patch_gemm_generic`], `f32::mul_add`) give
//! identical bits. FLOPs: exactly the reduced convolution's `n * B * K^2 * c_out`.

/// Geometry of one patch GEMM.
#[derive(Clone, Copy, Debug)]
pub struct PatchGeom {
    /// Window row length (pixels) and channels per window pixel.
    pub win_w: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    /// Patch rows and columns (`n = ph * pw` outputs).
    pub ph: usize,
    pub pw: usize,
    /// Distance (elements) between the rows of consecutive taps of one bucket.
    pub tap_stride: usize,
    /// Output row length (pixels): output `j = (oy, ox)` goes to `out[(oy * out_w + ox) *
    /// c_out..]` (pixel-major, so a patch writes into a whole HWC image in place).
    pub out_w: usize,
}

impl PatchGeom {
    #[inline(always)]
    fn pix(&self, j: usize, ky: usize, kx: usize) -> usize {
        let (oy, ox) = (j / self.pw, j % self.pw);
        ((oy * self.sh + ky) * self.win_w + ox * self.sw + kx) * self.c_in
    }

    #[inline(always)]
    fn opix(&self, j: usize) -> usize {
        ((j / self.pw) * self.out_w + j % self.pw) * self.c_out
    }
}

/// Portable kernel (same arithmetic, same order as the AVX-512 one).
///
/// # Safety
/// Every `rows[b] + kk * tap_stride .. + c_out` (as `*const f32`) must be readable for
/// `kk < kh * kw`, `first[b] < c_in`, `win` must hold the whole window.
#[inline(always)]
pub unsafe fn patch_gemm_generic(
    g: &PatchGeom,
    win: &[f32],
    first: &[u32],
    rows: &[usize],
    out: &mut [f32],
) {
    let n = g.ph * g.pw;
    for j in 0..n {
        let o = &mut out[g.opix(j)..][..g.c_out];
        o.fill(0.0);
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let kk = ky * g.kw + kx;
                let a = &win[g.pix(j, ky, kx)..][..g.c_in];
                for (&f, &r) in first.iter().zip(rows) {
                    let av = a[f as usize];
                    // SAFETY: the caller guarantees the row is readable.
                    let w = unsafe {
                        std::slice::from_raw_parts(
                            (r as *const f32).add(kk * g.tap_stride),
                            g.c_out,
                        )
                    };
                    for (d, &wv) in o.iter_mut().zip(w) {
                        *d = av.mul_add(wv, *d);
                    }
                }
            }
        }
    }
}

/// AVX-512 kernel: blocks of up to 8 outputs x 32 output channels held in 16 registers.
///
/// # Safety
/// As [`patch_gemm_generic`], and the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn patch_gemm_avx512(
    g: &PatchGeom,
    win: &[f32],
    first: &[u32],
    rows: &[usize],
    out: &mut [f32],
) {
    let n = g.ph * g.pw;
    assert!(n == 0 || out.len() >= g.opix(n - 1) + g.c_out);
    let mut j0 = 0;
    while j0 < n {
        let mr = (n - j0).min(8);
        let mut co0 = 0;
        while co0 < g.c_out {
            let width = (g.c_out - co0).min(32);
            let m0 = if width >= 16 {
                0xffff
            } else {
                (1u16 << width) - 1
            };
            let m1 = if width > 16 {
                if width == 32 {
                    0xffff
                } else {
                    (1u16 << (width - 16)) - 1
                }
            } else {
                0
            };
            macro_rules! go {
                ($mr:literal) => {
                    if m1 == 0 {
                        block::<$mr, 1>(g, win, first, rows, out, j0, co0, [m0, 0])
                    } else {
                        block::<$mr, 2>(g, win, first, rows, out, j0, co0, [m0, m1])
                    }
                };
            }
            // SAFETY: forwarded from the caller; blocks stay inside `n` and `c_out`.
            unsafe {
                match mr {
                    8 => go!(8),
                    7 => go!(7),
                    6 => go!(6),
                    5 => go!(5),
                    4 => go!(4),
                    3 => go!(3),
                    2 => go!(2),
                    _ => go!(1),
                }
            }
            co0 += 32;
        }
        j0 += 8;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn block<const MR: usize, const NV: usize>(
    g: &PatchGeom,
    win: &[f32],
    first: &[u32],
    rows: &[usize],
    out: &mut [f32],
    j0: usize,
    co0: usize,
    masks: [u16; 2],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let wp = win.as_ptr();
    let nb = first.len();
    let fp = first.as_ptr();
    let rp = rows.as_ptr();
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let kk = ky * g.kw + kx;
            let abase: [*const f32; MR] = std::array::from_fn(|i| wp.add(g.pix(j0 + i, ky, kx)));
            let toff = (kk * g.tap_stride + co0) * 4;
            for b in 0..nb {
                let f = *fp.add(b) as usize;
                let w = (*rp.add(b) + toff) as *const f32;
                let mut wv = [_mm512_setzero_ps(); NV];
                for (v, x) in wv.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(masks[v], w.add(16 * v));
                }
                for i in 0..MR {
                    let a = _mm512_set1_ps(*abase[i].add(f));
                    for v in 0..NV {
                        acc[i][v] = _mm512_fmadd_ps(a, wv[v], acc[i][v]);
                    }
                }
            }
        }
    }
    let op = out.as_mut_ptr();
    for (i, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(op.add(g.opix(j0 + i) + co0 + 16 * v), masks[v], x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx512_matches_generic_bitwise() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            for &(c_in, c_out, ph, pw) in &[
                (5usize, 3usize, 3usize, 2usize),
                (20, 40, 4, 4),
                (7, 16, 3, 3),
                (9, 33, 1, 5),
            ] {
                let (kh, kw, sh, sw) = (3, 3, 1, 1);
                let (wh, ww) = ((ph - 1) * sh + kh, (pw - 1) * sw + kw);
                let win: Vec<f32> = (0..wh * ww * c_in)
                    .map(|i| ((i * 31 % 17) as f32 - 8.0) / 7.0)
                    .collect();
                let taps = kh * kw;
                let wt: Vec<f32> = (0..taps * c_in * c_out)
                    .map(|i| ((i * 13 % 23) as f32 - 11.0) / 9.0)
                    .collect();
                let first: Vec<u32> = (0..c_in as u32).filter(|c| c % 3 != 1).collect();
                let rows: Vec<usize> = first
                    .iter()
                    .map(|&f| wt.as_ptr() as usize + f as usize * c_out * 4)
                    .collect();
                let g = PatchGeom {
                    win_w: ww,
                    c_in,
                    c_out,
                    kh,
                    kw,
                    sh,
                    sw,
                    ph,
                    pw,
                    tap_stride: c_in * c_out,
                    out_w: pw + 1,
                };
                let mut a = vec![0.0; ph * (pw + 1) * c_out];
                let mut b = vec![0.0; ph * (pw + 1) * c_out];
                unsafe {
                    patch_gemm_generic(&g, &win, &first, &rows, &mut a);
                    patch_gemm_avx512(&g, &win, &first, &rows, &mut b);
                }
                assert_eq!(a, b);
            }
        }
    }
}
