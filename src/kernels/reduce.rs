//! Reductions along axes of a tensor in NCHW order: the mean over some axes (ReduceMean) and
//! the softmax along one. A ReduceMean over an image's two spatial axes runs as a global
//! average pooling instead (`Plan::image_means`), in either memory order.

/// The mean of `x` (shape `shape`) over the axes `reduced` marks, into `out` (the kept
/// axes in order). Sums run in input order, so the result is deterministic.
pub fn reduce_mean(x: &[f32], shape: &[usize], reduced: &[bool], out: &mut [f32]) {
    let rank = shape.len();
    // Each axis' stride in `out` (0 for a reduced axis).
    let mut ostride = vec![0usize; rank];
    let mut acc = 1;
    for k in (0..rank).rev() {
        if !reduced[k] {
            ostride[k] = acc;
            acc *= shape[k];
        }
    }
    let count: usize = (0..rank)
        .filter(|&k| reduced[k])
        .map(|k| shape[k])
        .product();
    out.fill(0.0);
    let n = count.max(1) as f32;
    if let Some((outer, inner)) = one_run(shape, reduced).filter(|&(_, inner)| inner * count > 0) {
        // The reduced axes are one run: each output line is the sum of `count` input lines
        // (in input order, as the general loop below adds them).
        let line = inner * count;
        if inner == 1 {
            // Means of rows (a layer norm written out, over the last axis): one sum a row.
            for (o, xo) in out.iter_mut().zip(x.chunks(line)).take(outer) {
                *o = xo.iter().fold(0.0, |s, &v| s + v) / n;
            }
            return;
        }
        for (o, xo) in out.chunks_mut(inner).zip(x.chunks(line)).take(outer) {
            for xi in xo.chunks(inner) {
                o.iter_mut().zip(xi).for_each(|(o, &v)| *o += v);
            }
            o.iter_mut().for_each(|v| *v /= n);
        }
        return;
    }
    let mut idx = vec![0usize; rank];
    for &v in x {
        let o: usize = idx.iter().zip(&ostride).map(|(i, s)| i * s).sum();
        out[o] += v;
        for k in (0..rank).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out.iter_mut().for_each(|v| *v /= n);
}

/// The sizes before and after the reduced axes of `shape` when they are one contiguous run
/// (none reduced: `None`).
fn one_run(shape: &[usize], reduced: &[bool]) -> Option<(usize, usize)> {
    let first = reduced.iter().position(|&r| r)?;
    let end = first + reduced[first..].iter().take_while(|&&r| r).count();
    if reduced[end..].iter().any(|&r| r) {
        return None;
    }
    Some((
        shape[..first].iter().product(),
        shape[end..].iter().product(),
    ))
}

/// Softmax of `x` (shape `shape`) along axis `axis`, into `out`: `exp(x - max)`, divided by
/// its sum, per line along the axis.
pub fn softmax(x: &[f32], shape: &[usize], axis: usize, out: &mut [f32]) {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let line = |base: usize| (0..n).map(move |k| base + k * inner);
    for outer in 0..x.len() / (n * inner).max(1) {
        for i in 0..inner {
            let base = outer * n * inner + i;
            let max = line(base).map(|k| x[k]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for k in line(base) {
                out[k] = crate::ops::exp(x[k] - max);
                sum += out[k];
            }
            line(base).for_each(|k| out[k] /= sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition: every output the mean of its inputs, summed in input order.
    fn plain_mean(x: &[f32], shape: &[usize], reduced: &[bool]) -> Vec<f32> {
        let kept: Vec<usize> = (0..shape.len()).filter(|&k| !reduced[k]).collect();
        let out_len: usize = kept.iter().map(|&k| shape[k]).product();
        let (mut sums, mut counts) = (vec![0.0f32; out_len], vec![0usize; out_len]);
        let strides = crate::kernels::layout::strides(shape);
        for (i, &v) in x.iter().enumerate() {
            let o = kept
                .iter()
                .fold(0, |o, &k| o * shape[k] + i / strides[k] % shape[k]);
            sums[o] += v;
            counts[o] += 1;
        }
        sums.iter()
            .zip(&counts)
            .map(|(s, &n)| s / n.max(1) as f32)
            .collect()
    }

    #[test]
    fn means_over_any_axes_are_the_plain_ones() {
        let shape = [2, 3, 4, 5];
        let x: Vec<f32> = (0..120)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        // One run of axes (the fast path) and runs with gaps (the general one).
        for mask in 0u32..16 {
            let reduced: Vec<bool> = (0..4).map(|k| mask >> k & 1 == 1).collect();
            let want = plain_mean(&x, &shape, &reduced);
            let mut got = vec![f32::NAN; want.len()];
            reduce_mean(&x, &shape, &reduced, &mut got);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "axes {reduced:?}"
            );
        }
    }

    #[test]
    fn an_empty_axis_gives_zeros() {
        let mut out = [f32::NAN; 3];
        reduce_mean(&[], &[3, 0], &[false, true], &mut out);
        assert_eq!(out, [0.0; 3]);
    }
}
