//! Grouping up to 64 channels by comparing keys in vector registers (AVX-512).
//!
//! The hash table of [`super::Buckets::group_skipping`] reads its slots back after writing
//! them and the bucket counts after adding to them, so a channel's loads wait on the
//! previous channel's stores: on ResNet-18's 64-channel HASTE layers (L = 14) it took
//! 0.27-0.28 cycles per channel and window pixel, about 28 cycles a channel. Here each
//! channel's key is compared with all 64 at once (four vectors), and the mask of equal keys
//! gives, with no table and nothing read back, its bucket's first channel, its rank in the
//! bucket and the bucket's size: 0.15-0.19 (BENCHMARKS.md, twenty-ninth session).

use super::{Buckets, NO_BUCKET};
use crate::haste::hash::Key;
use crate::kernels::grow;

/// The most channels [`group`] takes: one bit each in a `u64`.
const MAX_CHANNELS: usize = 64;

/// The keys below `2^32` as 32-bit lanes (`narrow[ch]`; lanes past `keys.len()` zero), or
/// `None` when one is wider. `keys.len() <= 64`.
fn narrow_keys(keys: &[Key]) -> Option<[u32; MAX_CHANNELS]> {
    let mut narrow = [0u32; MAX_CHANNELS];
    let mut wide = 0u128;
    for (n, &k) in narrow.iter_mut().zip(keys) {
        *n = k as u32;
        wide |= k >> 32;
    }
    (wide == 0).then_some(narrow)
}

/// The channels not flagged in `skip` (empty: none) among `0..c`, one bit each.
fn kept_mask(skip: &[bool], c: usize) -> u64 {
    let all = if c == MAX_CHANNELS {
        u64::MAX
    } else {
        (1u64 << c) - 1
    };
    let skipped = skip[..c.min(skip.len())]
        .iter()
        .enumerate()
        .fold(0u64, |m, (ch, &s)| m | (s as u64) << ch);
    all & !skipped
}

/// [`Buckets::group_skipping`] on AVX-512, into `b`: `false` (and `b` untouched) when it does
/// not apply (more than [`MAX_CHANNELS`] channels, or a key of 32 bits or more).
///
/// # Safety
/// AVX-512F, POPCNT and BMI1 must be supported.
#[target_feature(enable = "avx512f,popcnt,bmi1")]
pub(super) unsafe fn group(b: &mut Buckets, keys: &[Key], skip: &[bool]) -> bool {
    let c = keys.len();
    if c > MAX_CHANNELS {
        return false;
    }
    let Some(narrow) = narrow_keys(keys) else {
        return false;
    };
    let kept = kept_mask(skip, c);
    b.c_in = c;
    grow(&mut b.bucket_of, c);
    grow(&mut b.members, c);
    grow(&mut b.starts, c + 1);
    grow(&mut b.inv_sizes, c);
    if kept.count_ones() as usize != c {
        b.bucket_of[..c].fill(NO_BUCKET);
    }
    // SAFETY: the features are the caller's promise; the buffers were grown above.
    let (count, placed) = unsafe {
        match c.div_ceil(16) {
            0 | 1 => buckets_of::<1>(b, &narrow, c, kept),
            2 => buckets_of::<2>(b, &narrow, c, kept),
            3 => buckets_of::<3>(b, &narrow, c, kept),
            _ => buckets_of::<4>(b, &narrow, c, kept),
        }
    };
    b.count = count;
    b.kept = placed;
    true
}

/// The buckets of the `kept` channels among the first `c` lanes of `keys` (`c <= 16 * NV`),
/// into `b`'s `bucket_of`, `members`, `starts` and `inv_sizes`; returns the bucket count and
/// the channels placed.
///
/// Three passes, none of whose steps waits on the one before: each channel's key against
/// every key gives its bucket's first channel (the lowest of the mask), its rank among its
/// bucket's channels (those below it) and its bucket's size; the first channels in order
/// number the buckets and place their member lists; each channel is written into its slot.
/// (Finding a bucket from the one before, one bucket at a time, chained a compare, a move to
/// a general register and a bit scan per bucket: about 25 cycles each.)
///
/// # Safety
/// AVX-512F, POPCNT and BMI1 must be supported; `b.bucket_of` and `b.members` hold `c`
/// entries, `b.starts` and `b.inv_sizes` one more than the kept channels.
#[target_feature(enable = "avx512f,popcnt,bmi1")]
unsafe fn buckets_of<const NV: usize>(
    b: &mut Buckets,
    keys: &[u32; MAX_CHANNELS],
    c: usize,
    kept: u64,
) -> (usize, usize) {
    use std::arch::x86_64::*;
    assert!(c <= 16 * NV && NV <= 4);
    // SAFETY: `keys` holds 64 lanes, so `NV <= 4` vectors of 16.
    let lanes: [__m512i; NV] =
        std::array::from_fn(|v| unsafe { _mm512_loadu_si512(keys.as_ptr().add(16 * v).cast()) });
    let (mut first, mut rank, mut size) = (
        [0u8; MAX_CHANNELS],
        [0u8; MAX_CHANNELS],
        [0u8; MAX_CHANNELS],
    );
    let mut opens = 0u64;
    for ch in 0..c {
        let key = _mm512_set1_epi32(keys[ch] as i32);
        let mut same = 0u64;
        for (v, &l) in lanes.iter().enumerate() {
            same |= (_mm512_cmpeq_epi32_mask(key, l) as u64) << (16 * v);
        }
        same &= kept;
        let below = same & ((1u64 << ch) - 1);
        first[ch] = same.trailing_zeros() as u8;
        rank[ch] = below.count_ones() as u8;
        size[ch] = same.count_ones() as u8;
        opens |= ((below == 0) as u64 & (kept >> ch)) << ch;
    }
    let table = super::reciprocals();
    let mut label = [0u32; MAX_CHANNELS];
    let (mut count, mut placed, mut left) = (0usize, 0u32, opens);
    b.starts[0] = 0;
    while left != 0 {
        let f = left.trailing_zeros() as usize;
        left &= left - 1;
        label[f] = count as u32;
        placed += size[f] as u32;
        count += 1;
        b.starts[count] = placed;
        b.inv_sizes[count - 1] = table[size[f] as usize];
    }
    let mut left = kept;
    while left != 0 {
        let ch = left.trailing_zeros() as usize;
        left &= left - 1;
        let bucket = label[first[ch] as usize];
        b.bucket_of[ch] = bucket;
        b.members[(b.starts[bucket as usize] + rank[ch] as u32) as usize] = ch as u32;
    }
    (count, placed as usize)
}
