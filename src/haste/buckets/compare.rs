//! Grouping by comparing keys in vector registers: up to 256 channels on AVX-512, 128 on
//! AVX2.
//!
//! The hash table of [`super::Buckets::group_skipping`] reads its slots back after writing
//! them and the bucket counts after adding to them, so a channel's loads wait on the
//! previous channel's stores: on ResNet-18's HASTE layers (L = 14, tile 8) it took 0.27-0.34
//! cycles per channel and window pixel at 64 and 128 channels (about 30 cycles a channel),
//! 0.49-0.62 at 256. Here each channel's key is compared with every key at once, and the
//! mask of equal keys gives, with no table and nothing read back, its bucket's first
//! channel, its rank in the bucket and the bucket's size: 0.14-0.22 and 0.33-0.35 on
//! AVX-512 (BENCHMARKS.md, twenty-ninth session). Keys below `2^16` (up to 16 hyperplanes,
//! no magnitude bins) go 32 to a vector with AVX-512BW (up to 256 channels) and 16 to a
//! vector on AVX2 (up to 128); keys below `2^32` 16 to a vector on AVX-512, up to 64
//! channels (at 128, eight compares a channel cost what the table does; at 512, sixteen of
//! 16 bits do too).

use super::{Buckets, NO_BUCKET};
use crate::haste::hash::Key;
use crate::kernels::grow;

/// The most channels [`group_avx512`] takes: one bit each in four `u64` words.
const MAX_CHANNELS: usize = 256;

/// Words of 64 channels' mask bits.
const WORDS: usize = MAX_CHANNELS / 64;

/// The most channels it takes with keys of 32 bits (four vectors of 16).
const MAX_WIDE_CHANNELS: usize = 64;

/// The keys as `T` lanes (`narrow[ch]`; lanes past `keys.len()` zero), or `None` when one
/// is `bits` bits or wider.
fn narrow_keys<T: Copy + Default>(
    keys: &[Key],
    bits: u32,
    to: impl Fn(Key) -> T,
) -> Option<[T; MAX_CHANNELS]> {
    let mut narrow = [T::default(); MAX_CHANNELS];
    let mut wide = 0u128;
    for (n, &k) in narrow.iter_mut().zip(keys) {
        *n = to(k);
        wide |= k >> bits;
    }
    (wide == 0).then_some(narrow)
}

/// The channels not flagged in `skip` (empty: none) among `0..c`, one bit each in words of 64.
fn kept_mask(skip: &[bool], c: usize) -> [u64; WORDS] {
    std::array::from_fn(|w| {
        let (lo, hi) = ((64 * w).min(c), (64 * w + 64).min(c));
        let all = if hi - lo == 64 {
            u64::MAX
        } else {
            (1u64 << (hi - lo)) - 1
        };
        let skipped =
            (lo..hi.min(skip.len())).fold(0u64, |m, ch| m | (skip[ch] as u64) << (ch - lo));
        all & !skipped
    })
}

/// [`Buckets::group_skipping`] on AVX-512, into `b`: `false` (and `b` untouched) when it does
/// not apply (more than [`MAX_CHANNELS`] channels, or a key of 32 bits or more). Keys below
/// `2^16` are compared 32 to a vector when `bw` (AVX-512BW), the others 16 to a vector.
///
/// # Safety
/// AVX-512F, POPCNT and BMI1 must be supported, and AVX-512BW with `bw`.
#[target_feature(enable = "avx512f,popcnt,bmi1")]
pub(super) unsafe fn group_avx512(b: &mut Buckets, keys: &[Key], skip: &[bool], bw: bool) -> bool {
    let c = keys.len();
    if c > MAX_CHANNELS {
        return false;
    }
    let kept = kept_mask(skip, c);
    // SAFETY (every arm): the features are the caller's promise; `c` fits the vectors.
    let found = if let Some(keys) = narrow_keys(keys, 16, |k| k as u16).filter(|_| bw) {
        unsafe {
            match c.div_ceil(32) {
                0 | 1 => find_16::<1, 1>(&keys, c, kept),
                2 => find_16::<2, 1>(&keys, c, kept),
                3 => find_16::<3, 2>(&keys, c, kept),
                4 => find_16::<4, 2>(&keys, c, kept),
                5 => find_16::<5, 3>(&keys, c, kept),
                6 => find_16::<6, 3>(&keys, c, kept),
                7 => find_16::<7, 4>(&keys, c, kept),
                _ => find_16::<8, 4>(&keys, c, kept),
            }
        }
    } else if let Some(keys) =
        narrow_keys(keys, 32, |k| k as u32).filter(|_| c <= MAX_WIDE_CHANNELS)
    {
        unsafe {
            match c.div_ceil(16) {
                0 | 1 => find_32::<1, 1>(&keys, c, kept),
                2 => find_32::<2, 1>(&keys, c, kept),
                3 => find_32::<3, 1>(&keys, c, kept),
                _ => find_32::<4, 1>(&keys, c, kept),
            }
        }
    } else {
        return false;
    };
    // SAFETY: as above.
    unsafe { place(b, &found, c, kept) };
    true
}

/// The most channels [`group_avx2`] takes (eight vectors of 16 keys).
const MAX_AVX2_CHANNELS: usize = 128;

/// [`Buckets::group_skipping`] on AVX2, into `b`: `false` (and `b` untouched) when it does
/// not apply (more than 128 channels, or a key of 16 bits or more).
///
/// # Safety
/// AVX2, POPCNT and BMI1 must be supported.
#[target_feature(enable = "avx2,popcnt,bmi1")]
pub(super) unsafe fn group_avx2(b: &mut Buckets, keys: &[Key], skip: &[bool]) -> bool {
    let c = keys.len();
    if c > MAX_AVX2_CHANNELS {
        return false;
    }
    let Some(narrow) = narrow_keys(keys, 16, |k| k as u16) else {
        return false;
    };
    let kept = kept_mask(skip, c);
    // SAFETY (every arm): the features are the caller's promise; `c` fits the vectors.
    let found = unsafe {
        match c.div_ceil(32) {
            0 | 1 => find_16_avx2::<1, 1>(&narrow, c, kept),
            2 => find_16_avx2::<2, 1>(&narrow, c, kept),
            3 => find_16_avx2::<3, 2>(&narrow, c, kept),
            _ => find_16_avx2::<4, 2>(&narrow, c, kept),
        }
    };
    // SAFETY: as above.
    unsafe { place(b, &found, c, kept) };
    true
}

/// [`Found`] for `c` channels with 16-bit `keys` on AVX2 (`c <= 32 * NP`: `NP` pairs of
/// vectors of 16 keys, `W` words of masks). Each pair's two compares are packed to bytes,
/// put back in channel order and moved to a general register as 32 bits.
///
/// # Safety
/// AVX2, POPCNT and BMI1 must be supported.
#[target_feature(enable = "avx2,popcnt,bmi1")]
unsafe fn find_16_avx2<const NP: usize, const W: usize>(
    keys: &[u16; MAX_CHANNELS],
    c: usize,
    kept: [u64; WORDS],
) -> Found {
    use std::arch::x86_64::*;
    assert!(c <= 32 * NP && NP <= 4 && W == NP.div_ceil(2));
    // SAFETY: `keys` holds 256 lanes: `NP <= 4` pairs of vectors of 16.
    let lanes: [[__m256i; 2]; NP] = std::array::from_fn(|p| {
        std::array::from_fn(|h| unsafe {
            _mm256_loadu_si256(keys.as_ptr().add(32 * p + 16 * h).cast())
        })
    });
    let mut found = Found::new();
    found.record_all::<W>(c, kept, |ch| {
        let key = _mm256_set1_epi16(keys[ch] as i16);
        let mut same = [0u64; WORDS];
        for (p, [a, b]) in lanes.iter().enumerate() {
            // Bytes per 128-bit half: a's 8, b's 8, a's next 8, b's next 8; the quadwords
            // reordered to a's 16 then b's 16.
            let packed =
                _mm256_packs_epi16(_mm256_cmpeq_epi16(key, *a), _mm256_cmpeq_epi16(key, *b));
            let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
            same[p / 2] |= (_mm256_movemask_epi8(ordered) as u32 as u64) << (32 * (p % 2));
        }
        same
    });
    found
}

/// Each channel's bucket, found from the mask of the kept channels with its key (`same`, in
/// words of 64): the bucket's first channel, the channel's rank in it, the bucket's size;
/// and the channels that open a bucket.
struct Found {
    first: [u8; MAX_CHANNELS],
    rank: [u8; MAX_CHANNELS],
    size: [u16; MAX_CHANNELS],
    opens: [u64; WORDS],
}

impl Found {
    fn new() -> Found {
        Found {
            first: [0; MAX_CHANNELS],
            rank: [0; MAX_CHANNELS],
            size: [0; MAX_CHANNELS],
            opens: [0; WORDS],
        }
    }

    /// Records channel `ch` of word `WI` of `W` (each word's channels in a loop of their own:
    /// no test per channel on which word it is).
    #[inline(always)]
    fn record<const WI: usize, const W: usize>(
        &mut self,
        ch: usize,
        same: [u64; WORDS],
        kept: [u64; WORDS],
    ) {
        let s: [u64; W] = std::array::from_fn(|w| same[w] & kept[w]);
        let bit = ch % 64;
        let mut rank = (s[WI] & ((1u64 << bit) - 1)).count_ones();
        for &word in &s[..WI] {
            rank += word.count_ones();
        }
        // A kept channel's own bit is in word `WI`, so its bucket's first channel is in a
        // word up to that one.
        let mut first = 64 * WI as u32 + s[WI].trailing_zeros();
        for w in (0..WI).rev() {
            if s[w] != 0 {
                first = 64 * w as u32 + s[w].trailing_zeros();
            }
        }
        self.first[ch] = first as u8;
        self.rank[ch] = rank as u8;
        self.size[ch] = s.iter().map(|w| w.count_ones()).sum::<u32>() as u16;
        self.opens[WI] |= ((rank == 0) as u64 & (kept[WI] >> bit)) << bit;
    }

    /// [`Self::record`] of channels `0..c`, `same(ch)` giving each one's mask.
    #[inline(always)]
    fn record_all<const W: usize>(
        &mut self,
        c: usize,
        kept: [u64; WORDS],
        mut same: impl FnMut(usize) -> [u64; WORDS],
    ) {
        macro_rules! word {
            ($wi:literal) => {
                if $wi < W {
                    for ch in 64 * $wi..c.min(64 * $wi + 64) {
                        self.record::<$wi, W>(ch, same(ch), kept);
                    }
                }
            };
        }
        word!(0);
        word!(1);
        word!(2);
        word!(3);
    }
}

/// [`Found`] for `c` channels with 16-bit `keys` (`c <= 32 * NV`, `W` words of masks).
///
/// # Safety
/// AVX-512F, AVX-512BW, POPCNT and BMI1 must be supported.
#[target_feature(enable = "avx512f,avx512bw,popcnt,bmi1")]
unsafe fn find_16<const NV: usize, const W: usize>(
    keys: &[u16; MAX_CHANNELS],
    c: usize,
    kept: [u64; WORDS],
) -> Found {
    use std::arch::x86_64::*;
    assert!(c <= 32 * NV && NV <= 8 && W == NV.div_ceil(2));
    // SAFETY: `keys` holds 256 lanes: `NV <= 8` vectors of 32.
    let lanes: [__m512i; NV] =
        std::array::from_fn(|v| unsafe { _mm512_loadu_si512(keys.as_ptr().add(32 * v).cast()) });
    let mut found = Found::new();
    found.record_all::<W>(c, kept, |ch| {
        let key = _mm512_set1_epi16(keys[ch] as i16);
        let mut same = [0u64; WORDS];
        for (v, &l) in lanes.iter().enumerate() {
            same[v / 2] |= (_mm512_cmpeq_epi16_mask(key, l) as u64) << (32 * (v % 2));
        }
        same
    });
    found
}

/// [`Found`] for `c` channels with 32-bit `keys` (`c <= 16 * NV`, `W` words of masks).
///
/// # Safety
/// AVX-512F, POPCNT and BMI1 must be supported.
#[target_feature(enable = "avx512f,popcnt,bmi1")]
unsafe fn find_32<const NV: usize, const W: usize>(
    keys: &[u32; MAX_CHANNELS],
    c: usize,
    kept: [u64; WORDS],
) -> Found {
    use std::arch::x86_64::*;
    assert!(c <= 16 * NV && NV <= 4 && W == NV.div_ceil(4));
    // SAFETY: `keys` holds 256 lanes: `NV <= 4` vectors of 16.
    let lanes: [__m512i; NV] =
        std::array::from_fn(|v| unsafe { _mm512_loadu_si512(keys.as_ptr().add(16 * v).cast()) });
    let mut found = Found::new();
    found.record_all::<W>(c, kept, |ch| {
        let key = _mm512_set1_epi32(keys[ch] as i32);
        let mut same = [0u64; WORDS];
        for (v, &l) in lanes.iter().enumerate() {
            same[v / 4] |= (_mm512_cmpeq_epi32_mask(key, l) as u64) << (16 * (v % 4));
        }
        same
    });
    found
}

/// Numbers the buckets by their first channels, in order, and writes `b`'s lists: each kept
/// channel's bucket, and its slot in the member list from its bucket's start and its rank.
/// Nothing here waits on what it stored.
///
/// # Safety
/// POPCNT and BMI1 must be supported.
#[target_feature(enable = "popcnt,bmi1")]
unsafe fn place(b: &mut Buckets, found: &Found, c: usize, kept: [u64; WORDS]) {
    b.c_in = c;
    grow(&mut b.bucket_of, c);
    grow(&mut b.members, c);
    grow(&mut b.starts, c + 1);
    grow(&mut b.inv_sizes, c);
    if kept.iter().map(|w| w.count_ones()).sum::<u32>() as usize != c {
        b.bucket_of[..c].fill(NO_BUCKET);
    }
    let table = super::reciprocals();
    let mut label = [0u32; MAX_CHANNELS];
    let (mut count, mut placed) = (0usize, 0u32);
    b.starts[0] = 0;
    for (w, &opens) in found.opens.iter().enumerate() {
        let mut left = opens;
        while left != 0 {
            let f = 64 * w + left.trailing_zeros() as usize;
            left &= left - 1;
            let size = found.size[f] as u32;
            label[f] = count as u32;
            placed += size;
            count += 1;
            b.starts[count] = placed;
            b.inv_sizes[count - 1] = table[size as usize];
        }
    }
    for (w, &kept) in kept.iter().enumerate() {
        let mut left = kept;
        while left != 0 {
            let ch = 64 * w + left.trailing_zeros() as usize;
            left &= left - 1;
            let bucket = label[found.first[ch] as usize];
            b.bucket_of[ch] = bucket;
            b.members[(b.starts[bucket as usize] + found.rank[ch] as u32) as usize] = ch as u32;
        }
    }
    b.count = count;
    b.kept = placed as usize;
}
