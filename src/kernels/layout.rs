//! Data movement kernels, generic over the element type so constant folding (i64 shapes) and
//! the runtime (f32 activations) share them: slice, transpose, concat, pad, broadcast.

use crate::ops::shape::AxisSlice;

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Copies `out[idx] = input[base + sum(idx[k] * step[k])]` over the output shape `dims`.
/// The innermost axis is copied in a tight loop (contiguous when its step is 1).
fn strided_copy<T: Copy>(input: &[T], base: isize, dims: &[usize], steps: &[isize], out: &mut [T]) {
    let rank = dims.len();
    if rank == 0 {
        out[0] = input[base as usize];
        return;
    }
    let inner = dims[rank - 1];
    let inner_step = steps[rank - 1];
    if inner == 0 {
        return;
    }
    let mut idx = vec![0usize; rank - 1];
    for row in out.chunks_exact_mut(inner) {
        let mut off = base;
        for k in 0..rank - 1 {
            off += idx[k] as isize * steps[k];
        }
        if inner_step == 1 {
            let start = off as usize;
            row.copy_from_slice(&input[start..start + inner]);
        } else {
            for (j, o) in row.iter_mut().enumerate() {
                *o = input[(off + j as isize * inner_step) as usize];
            }
        }
        for k in (0..rank - 1).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// ONNX Slice with resolved per-axis ranges.
pub fn slice<T: Copy>(input: &[T], shape: &[usize], ranges: &[AxisSlice], out: &mut [T]) {
    let st = strides(shape);
    let base: isize = ranges
        .iter()
        .zip(&st)
        .map(|(r, &s)| r.start as isize * s as isize)
        .sum();
    let steps: Vec<isize> = ranges
        .iter()
        .zip(&st)
        .map(|(r, &s)| r.step as isize * s as isize)
        .collect();
    let dims: Vec<usize> = ranges.iter().map(|r| r.count).collect();
    strided_copy(input, base, &dims, &steps, out);
}

/// Permutes axes: `out` has shape `perm.map(|p| shape[p])`.
pub fn transpose<T: Copy>(input: &[T], shape: &[usize], perm: &[usize], out: &mut [T]) {
    let st = strides(shape);
    let dims: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let steps: Vec<isize> = perm.iter().map(|&p| st[p] as isize).collect();
    strided_copy(input, 0, &dims, &steps, out);
}

/// Concatenates along `axis`; every input has the same shape except on `axis`. Runs of
/// the outer index go to the current rayon pool, at least `min_len` of them a task
/// (`usize::MAX`: one task; SqueezeNet's channel concats of pixel-major maps ran on one
/// core at batch 1, a sixth of its time).
pub fn concat<T: Copy + Send + Sync>(
    inputs: &[(&[T], &[usize])],
    axis: usize,
    out: &mut [T],
    min_len: usize,
) {
    use rayon::prelude::*;
    let Some((_, first)) = inputs.first() else {
        return;
    };
    let outer: usize = first[..axis].iter().product();
    let inners: Vec<usize> = inputs
        .iter()
        .map(|(_, s)| s[axis..].iter().product::<usize>())
        .collect();
    let out_inner: usize = inners.iter().sum();
    if outer == 0 || out_inner == 0 {
        return;
    }
    // Outer runs of at least 16 K values a task.
    let rows = ((1 << 14) / out_inner).max(1);
    out[..outer * out_inner]
        .par_chunks_mut(rows * out_inner)
        .with_min_len(min_len)
        .enumerate()
        .for_each(|(t, o)| {
            let mut pos = 0;
            for r in t * rows..t * rows + o.len() / out_inner {
                for ((data, _), &inner) in inputs.iter().zip(&inners) {
                    o[pos..pos + inner].copy_from_slice(&data[r * inner..(r + 1) * inner]);
                    pos += inner;
                }
            }
        });
}

/// Constant padding; `pads` in ONNX order (begins then ends), negative values crop.
pub fn pad<T: Copy>(
    input: &[T],
    shape: &[usize],
    pads: &[i64],
    value: T,
    out: &mut [T],
    out_shape: &[usize],
) {
    out.fill(value);
    let rank = shape.len();
    // Region of the input that survives, and where it lands.
    let mut src = Vec::with_capacity(rank);
    let mut dst_start = Vec::with_capacity(rank);
    for i in 0..rank {
        let begin = pads[i];
        let crop_begin = (-begin).max(0) as usize;
        let crop_end = (-pads[i + rank]).max(0) as usize;
        let count = shape[i].saturating_sub(crop_begin + crop_end);
        src.push(AxisSlice {
            start: crop_begin as i64,
            step: 1,
            count,
        });
        dst_start.push(begin.max(0) as usize);
    }
    if src.iter().any(|a| a.count == 0) {
        return;
    }
    let ist = strides(shape);
    let ost = strides(out_shape);
    let dims: Vec<usize> = src.iter().map(|a| a.count).collect();
    let inner = dims[rank - 1];
    let mut idx = vec![0usize; rank];
    loop {
        let mut ioff = 0;
        let mut ooff = 0;
        for k in 0..rank {
            ioff += (src[k].start as usize + idx[k]) * ist[k];
            ooff += (dst_start[k] + idx[k]) * ost[k];
        }
        out[ooff..ooff + inner].copy_from_slice(&input[ioff..ioff + inner]);
        let mut k = rank - 1;
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Elementwise `f(a, b)` with numpy broadcasting into `out` of shape `out_shape`.
pub fn broadcast_binary<T: Copy>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out: &mut [T],
    out_shape: &[usize],
    f: impl Fn(T, T) -> T,
) {
    if a_shape == b_shape {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
        return;
    }
    let ops = Broadcast::new(a_shape, b_shape, out_shape);
    ops.rows(a, b, out, 0, &f);
}

/// [`broadcast_binary`] (for differing shapes) split into runs of rows along the last axis,
/// run in parallel with at least `min_len` runs per task (at batch 1 a squeeze-excitation
/// scale over a large image ran on one core while the other waited).
pub fn broadcast_binary_parallel<T: Copy + Send + Sync>(
    (a, a_shape): (&[T], &[usize]),
    (b, b_shape): (&[T], &[usize]),
    out: &mut [T],
    out_shape: &[usize],
    min_len: usize,
    f: impl Fn(T, T) -> T + Sync,
) {
    use rayon::prelude::*;
    let ops = Broadcast::new(a_shape, b_shape, out_shape);
    let n = out_shape.last().copied().unwrap_or(1).max(1);
    // Runs of about 16 Ki values.
    let rows = (16_384 / n).max(1);
    out.par_chunks_mut(rows * n)
        .enumerate()
        .with_min_len(min_len)
        .for_each(|(k, o)| ops.rows(a, b, o, k * rows, &f));
}

/// The strides two broadcast operands are read with (0 along the axes they repeat on).
struct Broadcast<'s> {
    sa: Vec<usize>,
    sb: Vec<usize>,
    out_shape: &'s [usize],
}

impl<'s> Broadcast<'s> {
    fn new(a_shape: &[usize], b_shape: &[usize], out_shape: &'s [usize]) -> Broadcast<'s> {
        let rank = out_shape.len();
        let bstride = |shape: &[usize]| -> Vec<usize> {
            let st = strides(shape);
            (0..rank)
                .map(|i| {
                    let j = i as isize - (rank - shape.len()) as isize;
                    if j < 0 || shape[j as usize] == 1 {
                        0
                    } else {
                        st[j as usize]
                    }
                })
                .collect()
        };
        Broadcast {
            sa: bstride(a_shape),
            sb: bstride(b_shape),
            out_shape,
        }
    }

    /// Output rows (along the last axis) from `first` on, as many as `out` holds: row by
    /// row, where each operand either runs (stride 1) or stays (stride 0), so the inner loops
    /// vectorize (a per-channel scale of a pixel-major image is rows of channels times one
    /// row of scales).
    fn rows<T: Copy>(&self, a: &[T], b: &[T], out: &mut [T], first: usize, f: &impl Fn(T, T) -> T) {
        let (sa, sb, out_shape) = (&self.sa, &self.sb, self.out_shape);
        let rank = out_shape.len();
        if rank == 0 {
            out[0] = f(a[0], b[0]);
            return;
        }
        let last = rank - 1;
        let n = out_shape[last];
        // The multi-index of row `first`.
        let mut idx = vec![0usize; last];
        let mut r = first;
        for k in (0..last).rev() {
            idx[k] = r % out_shape[k].max(1);
            r /= out_shape[k].max(1);
        }
        for o in out.chunks_exact_mut(n.max(1)) {
            let (mut ia, mut ib) = (0, 0);
            for k in 0..last {
                ia += idx[k] * sa[k];
                ib += idx[k] * sb[k];
            }
            match (sa[last], sb[last]) {
                (0, 0) => o.fill(f(a[ia], b[ib])),
                (0, _) => {
                    let x = a[ia];
                    o.iter_mut()
                        .zip(&b[ib..ib + n])
                        .for_each(|(o, &y)| *o = f(x, y));
                }
                (_, 0) => {
                    let y = b[ib];
                    o.iter_mut()
                        .zip(&a[ia..ia + n])
                        .for_each(|(o, &x)| *o = f(x, y));
                }
                _ => {
                    let rows = o.iter_mut().zip(&a[ia..ia + n]).zip(&b[ib..ib + n]);
                    rows.for_each(|((o, &x), &y)| *o = f(x, y));
                }
            }
            for k in (0..last).rev() {
                idx[k] += 1;
                if idx[k] < out_shape[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
    }
}

/// `x = [c][h][w]` -> the pixel-major `[hp][wp][c]` image with the input at rows `top..`,
/// columns `left..`, zeros around it (the padding of a convolution). `dst` may be longer.
pub fn to_hwc_padded(
    x: &[f32],
    c: usize,
    (h, w): (usize, usize),
    (top, left): (usize, usize),
    (hp, wp): (usize, usize),
    dst: &mut [f32],
) {
    debug_assert!(top + h <= hp && left + w <= wp);
    let dst = &mut dst[..hp * wp * c];
    dst[..top * wp * c].fill(0.0);
    dst[(top + h) * wp * c..].fill(0.0);
    for y in 0..h {
        let row = &mut dst[(top + y) * wp * c..][..wp * c];
        row[..left * c].fill(0.0);
        row[(left + w) * c..].fill(0.0);
        let body = &mut row[left * c..][..w * c];
        planes_row_to_pixels(x, c, (h, w), y, body);
    }
}

/// Row `y` of the planar image `x` (`[c][h][w]`) written pixel-major into `body` (`w`
/// pixels of `c`).
fn planes_row_to_pixels(x: &[f32], c: usize, (h, w): (usize, usize), y: usize, body: &mut [f32]) {
    let plane = h * w;
    if c == 3 {
        // An RGB image (a network's first layer): the three planes' rows interleaved pixel
        // by pixel, each store next to the last (plane by plane, every store skipped two
        // floats).
        let row = |ch: usize| &x[ch * plane + y * w..][..w];
        let (r0, r1, r2) = (row(0), row(1), row(2));
        for (px, ((&a, &b), &c)) in body.chunks_exact_mut(3).zip(r0.iter().zip(r1).zip(r2)) {
            px.copy_from_slice(&[a, b, c]);
        }
        return;
    }
    // Blocks of 8 channels: 8 input rows are read in step, each write is a run of 8.
    const CH: usize = 8;
    let mut ch0 = 0;
    while ch0 + CH <= c {
        let src: [&[f32]; CH] = std::array::from_fn(|k| &x[(ch0 + k) * plane + y * w..][..w]);
        for (i, px) in body.chunks_exact_mut(c).enumerate() {
            for k in 0..CH {
                px[ch0 + k] = src[k][i];
            }
        }
        ch0 += CH;
    }
    for ch in ch0..c {
        let src = &x[ch * plane + y * w..][..w];
        for (px, &v) in body.chunks_exact_mut(c).zip(src) {
            px[ch] = v;
        }
    }
}

/// Channels `chans` of the pixel-major `hwc = [hw][c]` -> `out = [chans.len()][hw]`, plus
/// `bias[k]` on channel `chans.start + k` when given. Blocks of 16 pixels keep the rows read
/// in L1 while every write is a contiguous run.
pub fn from_hwc(
    hwc: &[f32],
    c: usize,
    hw: usize,
    chans: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    const PIX: usize = 16;
    let (hwc, out) = (&hwc[..hw * c], &mut out[..chans.len() * hw]);
    for p0 in (0..hw).step_by(PIX) {
        let n = PIX.min(hw - p0);
        let block = &hwc[p0 * c..][..n * c];
        for (k, ch) in chans.clone().enumerate() {
            let b = bias.map_or(0.0, |b| b[k]);
            let dst = &mut out[k * hw + p0..][..n];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = block[i * c + ch] + b;
            }
        }
    }
}

/// The memory order of a step's 4-D input and output: NCHW, or pixel-major NHWC (the shape
/// is NCHW either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoLayout {
    pub input_nhwc: bool,
    pub output_nhwc: bool,
}

impl IoLayout {
    /// NCHW in, NCHW out.
    pub const NCHW: IoLayout = IoLayout {
        input_nhwc: false,
        output_nhwc: false,
    };

    /// Pixel-major (NHWC) in, pixel-major out.
    pub const NHWC: IoLayout = IoLayout {
        input_nhwc: true,
        output_nhwc: true,
    };
}

/// Pixel-major `x = [h][w][c]` -> the `[hp][wp][c]` image with the input at rows `top..`,
/// columns `left..`, zeros around it. `dst` may be longer.
pub fn pad_hwc(
    x: &[f32],
    c: usize,
    (h, w): (usize, usize),
    (top, left): (usize, usize),
    (hp, wp): (usize, usize),
    dst: &mut [f32],
) {
    debug_assert!(top + h <= hp && left + w <= wp);
    for (r, row) in dst[..hp * wp * c].chunks_exact_mut(wp * c).enumerate() {
        pad_hwc_row(x, c, (h, w), (top, left), r, row);
    }
}

/// Row `r` of [`pad_hwc`]'s output (`row` holds `wp * c` values): rows can be filled
/// independently, e.g. on several threads.
pub fn pad_hwc_row(
    x: &[f32],
    c: usize,
    (h, w): (usize, usize),
    (top, left): (usize, usize),
    r: usize,
    row: &mut [f32],
) {
    pad_row(c, (h, w), (top, left), r, row, |y, body| {
        body.copy_from_slice(&x[y * w * c..][..w * c]);
    });
}

/// [`pad_hwc_row`] from a planar input `x = [c][h][w]`: padded row `r` of the pixel-major
/// image, transposed from the `c` planes (each channel's pixels written `c` apart).
pub fn pad_chw_row(
    x: &[f32],
    c: usize,
    (h, w): (usize, usize),
    (top, left): (usize, usize),
    r: usize,
    row: &mut [f32],
) {
    pad_row(c, (h, w), (top, left), r, row, |y, body| {
        planes_row_to_pixels(x, c, (h, w), y, body)
    });
}

/// Padded row `r` of a pixel-major image: zeros, but for the `w * c` values of image row
/// `r - top` (when it is one), which `fill_body(y, body)` writes.
fn pad_row(
    c: usize,
    (h, w): (usize, usize),
    (top, left): (usize, usize),
    r: usize,
    row: &mut [f32],
    fill_body: impl FnOnce(usize, &mut [f32]),
) {
    match r.checked_sub(top).filter(|&y| y < h) {
        Some(y) => {
            row[..left * c].fill(0.0);
            row[(left + w) * c..].fill(0.0);
            fill_body(y, &mut row[left * c..][..w * c]);
        }
        None => row.fill(0.0),
    }
}

/// Adds `bias[k]` to channel `k` of every pixel of a pixel-major `out = [pixels][c]`.
pub fn add_bias_hwc(out: &mut [f32], bias: &[f32]) {
    for px in out.chunks_exact_mut(bias.len()) {
        px.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
}

/// `[c][hw]` -> `[hw][c]`.
pub fn nchw_to_nhwc(x: &[f32], c: usize, hw: usize, out: &mut [f32]) {
    to_hwc_padded(x, c, (1, hw), (0, 0), (1, hw), out);
}

/// `[hw][c]` -> `[c][hw]`.
pub fn nhwc_to_nchw(x: &[f32], c: usize, hw: usize, out: &mut [f32]) {
    from_hwc(x, c, hw, 0..c, None, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_2d() {
        let mut out = [0; 6];
        transpose(&[1, 2, 3, 4, 5, 6], &[2, 3], &[1, 0], &mut out);
        assert_eq!(out, [1, 4, 2, 5, 3, 6]);
    }

    #[test]
    fn slice_with_step() {
        let input: Vec<i32> = (0..16).collect();
        let r = [
            AxisSlice {
                start: 0,
                step: 2,
                count: 2,
            },
            AxisSlice {
                start: 1,
                step: 2,
                count: 2,
            },
        ];
        let mut out = [0; 4];
        slice(&input, &[4, 4], &r, &mut out);
        assert_eq!(out, [1, 3, 9, 11]);
    }

    #[test]
    fn pad_and_concat() {
        let mut out = [9; 8];
        pad(&[1, 2], &[1, 2], &[0, 1, 1, 1], 0, &mut out, &[2, 4]);
        assert_eq!(out, [0, 1, 2, 0, 0, 0, 0, 0]);
        let mut c = [0; 6];
        concat(
            &[(&[1, 2][..], &[2, 1][..]), (&[3, 4, 5, 6][..], &[2, 2][..])],
            1,
            &mut c,
            usize::MAX,
        );
        assert_eq!(c, [1, 3, 4, 2, 5, 6]);
        // Enough outer rows for several parallel tasks, in one task and in many.
        let rows = 20_000;
        let a: Vec<u32> = (0..rows).collect();
        let b: Vec<u32> = (0..2 * rows).map(|v| v + 1_000_000).collect();
        let (sa, sb) = ([rows as usize, 1], [rows as usize, 2]);
        for min_len in [usize::MAX, 1] {
            let mut out = vec![0u32; 3 * rows as usize];
            concat(
                &[(&a[..], &sa[..]), (&b[..], &sb[..])],
                1,
                &mut out,
                min_len,
            );
            for (r, row) in out.chunks(3).enumerate() {
                assert_eq!(row, [a[r], b[2 * r], b[2 * r + 1]], "row {r}");
            }
        }
    }

    #[test]
    fn broadcast() {
        let mut out = [0; 6];
        broadcast_binary(
            &[1, 2, 3, 4, 5, 6],
            &[2, 3],
            &[10, 20],
            &[2, 1],
            &mut out,
            &[2, 3],
            |x, y| x + y,
        );
        assert_eq!(out, [11, 12, 13, 24, 25, 26]);
    }

    /// The parallel runs of rows start anywhere in the index space: each gives the values
    /// the whole loop gives, on a squeeze-excitation scale of a pixel-major image and on
    /// operands broadcast along several axes, with outputs of many runs.
    #[test]
    fn parallel_broadcast_equals_the_loop() {
        let value = |n: usize, k: usize| (0..n).map(|i| ((i * 31 + k) % 97) as i64).collect();
        for (xs, ys, os) in [
            (vec![1, 56, 56, 40], vec![1, 1, 1, 40], vec![1, 56, 56, 40]),
            (vec![2, 3, 70, 1], vec![3, 1, 90], vec![2, 3, 70, 90]),
            (vec![1, 1, 7], vec![300, 13, 1], vec![300, 13, 7]),
        ] {
            let x: Vec<i64> = value(xs.iter().product(), 1);
            let y: Vec<i64> = value(ys.iter().product(), 2);
            let len: usize = os.iter().product();
            let (mut want, mut got) = (vec![0; len], vec![-1; len]);
            broadcast_binary(&x, &xs, &y, &ys, &mut want, &os, |a, b| a * 1000 + b);
            broadcast_binary_parallel((&x, &xs), (&y, &ys), &mut got, &os, 1, |a, b| a * 1000 + b);
            assert_eq!(got, want, "{xs:?} x {ys:?}");
        }
    }
}
