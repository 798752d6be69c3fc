//! How one image's patches split over threads: contiguous runs of patches in row order, of
//! about equal output area. Whole patch rows would leave a 56 x 56 layer at tile 8 (seven
//! patch rows) four rows on one of two threads and three on the other; a run may start and
//! end inside a patch row, so the seven rows split 25 patches to 24. The patches are the
//! same either way, so are the outputs.

use std::ops::Range;

/// One thread's patches: whole patch rows `rows`, and the patch rows it has only a part of
/// (the one its run starts in, the one it ends in), each with its patch columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Share {
    pub rows: Range<usize>,
    pub partial: Vec<(usize, Range<usize>)>,
}

/// The shares of `threads` workers in an `oh x ow` output tiled by `tile` (the last patch
/// row and column may be short): runs of patches cut where their output area comes
/// closest to an equal share. Empty shares are left out.
pub(super) fn patch_shares(oh: usize, ow: usize, tile: usize, threads: usize) -> Vec<Share> {
    let (rows, cols) = (oh.div_ceil(tile), ow.div_ceil(tile));
    let side = |i: usize, n: usize| tile.min(n - i * tile);
    let area = |p: usize| side(p / cols, oh) * side(p % cols, ow);
    let total = oh * ow;
    // `cuts[k]` is the first patch of share `k`.
    let mut cuts = vec![0];
    let (mut p, mut sum) = (0, 0);
    for k in 1..threads {
        let target = total * k / threads;
        // Take patches while the share comes closer to its target with the patch than
        // without it.
        while p < rows * cols && 2 * (target - sum.min(target)) >= area(p) {
            sum += area(p);
            p += 1;
        }
        cuts.push(p);
    }
    cuts.push(rows * cols);
    cuts.windows(2)
        .filter(|w| w[0] < w[1])
        .map(|w| share_of(w[0]..w[1], cols))
        .collect()
}

/// The share of patches `run` (row-major, `cols` to a row).
fn share_of(run: Range<usize>, cols: usize) -> Share {
    let (first, last) = (run.start / cols, (run.end - 1) / cols);
    let (start_col, end_col) = (run.start % cols, (run.end - 1) % cols + 1);
    if first == last && (start_col > 0 || end_col < cols) {
        return Share {
            rows: first..first,
            partial: vec![(first, start_col..end_col)],
        };
    }
    let mut partial = Vec::new();
    let whole_from = if start_col > 0 {
        partial.push((first, start_col..cols));
        first + 1
    } else {
        first
    };
    let whole_to = if end_col < cols {
        partial.push((last, 0..end_col));
        last
    } else {
        last + 1
    };
    Share {
        rows: whole_from..whole_to,
        partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every patch in exactly one share, in order, and the largest share's area within one
    /// patch of an equal split; the shapes the network layers take, and more threads than
    /// patches.
    #[test]
    fn shares_cover_every_patch_once_and_balance_the_area() {
        for (oh, ow, tile) in [
            (56, 56, 8),
            (56, 56, 16),
            (28, 28, 8),
            (28, 28, 16),
            (14, 14, 8),
        ]
        .into_iter()
        .chain([(7, 7, 8), (32, 32, 16), (13, 11, 4), (1, 9, 4)])
        {
            for threads in 1..=9 {
                let shares = patch_shares(oh, ow, tile, threads);
                let cols = ow.div_ceil(tile);
                let mut seen = Vec::new();
                let mut areas = Vec::new();
                for s in &shares {
                    let mut patches: Vec<usize> = s
                        .rows
                        .clone()
                        .flat_map(|r| (0..cols).map(move |c| r * cols + c))
                        .collect();
                    for (r, cs) in &s.partial {
                        patches.extend(cs.clone().map(|c| r * cols + c));
                    }
                    patches.sort();
                    let area: usize = patches
                        .iter()
                        .map(|&p| tile.min(oh - p / cols * tile) * tile.min(ow - p % cols * tile))
                        .sum();
                    areas.push(area);
                    seen.extend(patches);
                }
                let all: Vec<usize> = (0..oh.div_ceil(tile) * cols).collect();
                assert_eq!(seen, all, "{oh}x{ow} tile {tile}, {threads} threads");
                let most = areas.iter().max().copied().unwrap_or(0);
                assert!(
                    most <= (oh * ow).div_ceil(threads) + tile * tile,
                    "{oh}x{ow} tile {tile}, {threads} threads: {areas:?}"
                );
            }
        }
        // Seven patch rows over two threads: 25 patches and 24.
        let s = patch_shares(56, 56, 8, 2);
        assert_eq!(
            s[0],
            Share {
                rows: 0..3,
                partial: vec![(3, 0..4)]
            }
        );
        assert_eq!(
            s[1],
            Share {
                rows: 4..7,
                partial: vec![(3, 4..7)]
            }
        );
    }
}
