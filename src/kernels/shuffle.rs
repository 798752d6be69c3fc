//! ShuffleNet's channel shuffle ([`crate::ops::Op::ChannelShuffle`]) on blocks of channels:
//! whole pixels of a pixel-major image or the planes of an NCHW one.

/// A channel shuffle of blocks of `c` channels of `inner` values each (whole pixel-major
/// pixels with `inner = 1`, NCHW images with `inner = h * w`): channel `j` of each block of
/// `out` is channel `(j % groups) * (c / groups) + j / groups` of the same block of `x`.
pub fn shuffle_channels<T: Copy>(x: &[T], c: usize, groups: usize, inner: usize, out: &mut [T]) {
    let per = c / groups.max(1);
    let block = c * inner;
    if block == 0 {
        return;
    }
    for (o, xi) in out.chunks_mut(block).zip(x.chunks(block)) {
        if inner == 1 && groups == 2 {
            // Two halves interleaved (ShuffleNet's shuffle), a loop the compiler vectorizes.
            let (lo, hi) = xi.split_at(per);
            for ((pair, &l), &h) in o.chunks_exact_mut(2).zip(lo).zip(hi) {
                pair[0] = l;
                pair[1] = h;
            }
            continue;
        }
        if inner == 1 {
            // Output channels `b * groups..` come from position `b` of each group: a loop
            // the compiler unrolls (a copy call per value took half of ShuffleNet's time).
            for (b, ob) in o.chunks_exact_mut(groups).enumerate() {
                for (a, v) in ob.iter_mut().enumerate() {
                    *v = xi[a * per + b];
                }
            }
            continue;
        }
        for (j, oj) in o.chunks_mut(inner).enumerate() {
            let from = (j % groups) * per + j / groups;
            oj.copy_from_slice(&xi[from * inner..][..inner]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_shuffles_follow_the_definition() {
        // Pixel-major blocks (one value a channel) in 2 and 3 groups, and NCHW planes.
        for (c, groups, inner) in [(6, 2, 1), (12, 3, 1), (6, 2, 4), (12, 4, 3)] {
            let blocks = 3;
            let x: Vec<u32> = (0..(blocks * c * inner) as u32).collect();
            let mut out = vec![u32::MAX; x.len()];
            shuffle_channels(&x, c, groups, inner, &mut out);
            let per = c / groups;
            for (i, &o) in out.iter().enumerate() {
                let (block, j, p) = (i / (c * inner), i / inner % c, i % inner);
                let from = (j % groups) * per + j / groups;
                assert_eq!(
                    o,
                    x[(block * c + from) * inner + p],
                    "c {c} groups {groups} at {i}"
                );
            }
        }
    }
}
