//! Pooling over NCHW planes.

use crate::ops::PoolParams;

/// Max or average pooling of one `h` x `w` plane into an `oh` x `ow` plane.
pub fn pool_plane(p: &PoolParams, max: bool, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
    let (oh, ow) = p.out_hw(h, w);
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
            let mut count = 0usize;
            for ky in 0..p.kernel.0 {
                let iy = (oy * p.stride.0 + ky * p.dilation.0) as isize - p.pads[0] as isize;
                for kx in 0..p.kernel.1 {
                    let ix = (ox * p.stride.1 + kx * p.dilation.1) as isize - p.pads[1] as isize;
                    let inside = iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize;
                    if inside {
                        let v = x[iy as usize * w + ix as usize];
                        if max {
                            acc = acc.max(v);
                        } else {
                            acc += v;
                        }
                        count += 1;
                    } else if p.count_include_pad
                        && iy < (h + p.pads[2]) as isize
                        && ix < (w + p.pads[3]) as isize
                    {
                        count += 1;
                    }
                }
            }
            out[oy * ow + ox] = if max { acc } else { acc / count.max(1) as f32 };
        }
    }
}

/// Mean of a plane.
pub fn mean(x: &[f32]) -> f32 {
    x.iter().sum::<f32>() / x.len().max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_2x2() {
        let p = PoolParams {
            kernel: (2, 2),
            stride: (2, 2),
            pads: [0; 4],
            dilation: (1, 1),
            ceil_mode: false,
            count_include_pad: false,
        };
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut out = [0.0; 4];
        pool_plane(&p, true, &x, 4, 4, &mut out);
        assert_eq!(out, [5.0, 7.0, 13.0, 15.0]);
        pool_plane(&p, false, &x, 4, 4, &mut out);
        assert_eq!(out, [2.5, 4.5, 10.5, 12.5]);
    }
}
