//! Step 3: channels sharing a key form a bucket.
//!
//! Buckets are numbered in the order of their smallest channel, and each bucket lists its
//! channels in increasing order. So when every bucket is a singleton, bucket `b` is channel `b`
//! and the reduced convolution is the dense one, term for term.

use super::hash::{grow, Key};
use crate::kernels::isa::Isa;

#[cfg(target_arch = "x86_64")]
mod compare;

/// [`Buckets::bucket_of`] of a channel in no bucket.
pub const NO_BUCKET: u32 = u32::MAX;

/// The buckets of one window.
#[derive(Clone, Debug, Default)]
pub struct Buckets {
    count: usize,
    c_in: usize,
    /// Channels in some bucket (`c_in` less those skipped).
    kept: usize,
    /// Bucket of each channel.
    bucket_of: Vec<u32>,
    /// `members[starts[b]..starts[b + 1]]` are the channels of bucket `b`, increasing.
    members: Vec<u32>,
    starts: Vec<u32>,
    /// `1 / |b|` per bucket.
    inv_sizes: Vec<f32>,
    /// Hash table of the grouping (bucket index per slot) and the key of each bucket.
    slots: Vec<u32>,
    bucket_keys: Vec<Key>,
    /// The channels kept, increasing (the grouping's loops run over them without a test).
    kept_channels: Vec<u32>,
}

impl Buckets {
    /// Groups channels `0..keys.len()` by key.
    pub fn group(&mut self, keys: &[Key]) {
        self.group_skipping(keys, &[]);
    }

    /// Groups channels `0..keys.len()` by key, leaving out the channels `ch` with
    /// `skip[ch]` (`skip` empty: none): they belong to no bucket ([`Self::bucket_of`] gives
    /// them [`NO_BUCKET`]), and the buckets are numbered by their first channel kept.
    pub fn group_skipping(&mut self, keys: &[Key], skip: &[bool]) {
        let c = keys.len();
        assert!(
            skip.is_empty() || skip.len() >= c,
            "a skip flag per channel"
        );
        self.c_in = c;
        grow(&mut self.bucket_of, c);
        grow(&mut self.members, c);
        grow(&mut self.starts, c + 1);
        // Open addressing in a table of at least 4c slots (a quarter full at most, so a probe
        // rarely goes past its first slot): a channel's key either has a bucket already
        // (numbered by first appearance in channel order) or opens the next one. Whether it
        // opens one is a coin flip on real data, so that choice is made without a branch;
        // only a slot holding another key (rare) takes the probing loop.
        let size = (4 * c).next_power_of_two().max(2);
        let shift = 64 - size.trailing_zeros();
        let empty = c as u32;
        self.slots.clear();
        self.slots.resize(size, empty);
        // One key past the buckets' for the empty slot to point at: it never matches a real
        // key's bucket test below because an empty slot is tested first.
        grow(&mut self.bucket_keys, c + 1);
        let starts = &mut self.starts[..c + 1];
        starts.fill(0);
        let (slots, bucket_keys) = (&mut self.slots[..size], &mut self.bucket_keys[..c + 1]);
        let mut next = 0u32;
        let bucket_of = &mut self.bucket_of[..c];
        let kept = kept_channels(skip, c, &mut self.kept_channels);
        if kept.len() < c {
            bucket_of.fill(NO_BUCKET);
        }
        for &ch in kept.iter() {
            let ch = ch as usize;
            // SAFETY: a kept channel is below `c` (see `kept_channels`).
            let k = unsafe { *keys.get_unchecked(ch) };
            let h = ((k as u64) ^ ((k >> 64) as u64).rotate_left(29))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut i = (h >> shift) as usize;
            // SAFETY (the unchecked reads and writes below): `i < size` (the top bits of a
            // hash, then masked); a slot holds `empty = c` or a bucket below `next <= c`,
            // and `bucket_keys` and `starts` hold `c + 1` entries.
            let slot = unsafe {
                loop {
                    let slot = *slots.get_unchecked(i);
                    // An empty slot or this key's bucket, tested without a branch between
                    // the two (which of them it is is the coin flip); only a slot holding
                    // another key (rare) loops.
                    let stop = (slot == empty) | (*bucket_keys.get_unchecked(slot as usize) == k);
                    if stop {
                        break slot;
                    }
                    i = (i + 1) & (size - 1);
                }
            };
            let opens = slot == empty;
            let b = if opens { next } else { slot };
            unsafe {
                *slots.get_unchecked_mut(i) = b;
                *bucket_keys.get_unchecked_mut(b as usize) = k;
                *starts.get_unchecked_mut(b as usize + 1) += 1;
            }
            next += opens as u32;
            // SAFETY: as `k` above.
            unsafe { *bucket_of.get_unchecked_mut(ch) = b };
        }
        let runs = next as usize;
        let starts = &mut self.starts[..runs + 1];
        for b in 0..runs {
            starts[b + 1] += starts[b];
        }
        // Counting sort of channels by bucket (stable: channels stay increasing).
        for &ch in kept.iter() {
            let b = self.bucket_of[ch as usize] as usize;
            self.members[starts[b] as usize] = ch;
            starts[b] += 1;
        }
        for b in (0..runs).rev() {
            starts[b + 1] = starts[b];
        }
        starts[0] = 0;
        self.count = runs;
        self.kept = self.starts[runs] as usize;
        self.set_inv_sizes();
    }

    /// [`Self::group_skipping`] on the tier `isa`, the same buckets: on AVX-512, up to 256
    /// channels whose keys lie below `2^16` (at most 16 hyperplanes, no magnitude bins), or
    /// 64 below `2^32`, and on AVX2 up to 128 below `2^16`, by comparing keys in vector
    /// registers (`compare.rs`); the others by the hash table.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    pub fn group_skipping_on(&mut self, isa: Isa, keys: &[Key], skip: &[bool]) {
        let c = keys.len();
        assert!(
            skip.is_empty() || skip.len() >= c,
            "a skip flag per channel"
        );
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let counts = has!("popcnt") && has!("bmi1");
            // SAFETY (both): the caller runs tier `isa` only where the CPU supports it, and
            // the other features are checked.
            let done = match isa {
                Isa::Avx512 if counts => unsafe {
                    compare::group_avx512(self, keys, skip, has!("avx512bw"))
                },
                Isa::Avx2 if counts => unsafe { compare::group_avx2(self, keys, skip) },
                _ => false,
            };
            if done {
                return;
            }
        }
        self.group_skipping(keys, skip);
    }

    /// Bytes its buffers hold.
    pub fn bytes(&self) -> u64 {
        use crate::kernels::buffer_bytes as b;
        let ints = [&self.bucket_of, &self.members, &self.starts, &self.slots];
        let ints: u64 = ints.into_iter().map(b).sum();
        let floats = b(&self.inv_sizes);
        ints + floats + b(&self.bucket_keys) + b(&self.kept_channels)
    }

    fn set_inv_sizes(&mut self) {
        grow(&mut self.inv_sizes, self.count);
        let table = reciprocals();
        for b in 0..self.count {
            let k = (self.starts[b + 1] - self.starts[b]) as usize;
            self.inv_sizes[b] = match table.get(k) {
                Some(&r) => r,
                None => 1.0 / k as f32,
            };
        }
    }

    /// `1 / |b|` for every bucket `b`.
    pub fn inv_sizes(&self) -> &[f32] {
        &self.inv_sizes[..self.count]
    }

    /// Number of channels in bucket `b`.
    pub fn size(&self, b: usize) -> usize {
        (self.starts[b + 1] - self.starts[b]) as usize
    }

    /// Number of buckets.
    pub fn count(&self) -> usize {
        self.count
    }

    /// True when every channel is alone in its bucket (then bucket `b` is channel `b`).
    pub fn all_singletons(&self) -> bool {
        self.count == self.c_in
    }

    /// Channels of bucket `b`, increasing.
    pub fn members(&self, b: usize) -> &[u32] {
        &self.members[self.starts[b] as usize..self.starts[b + 1] as usize]
    }

    /// The channels kept, bucket by bucket (`members(b)` is
    /// `order()[starts()[b]..starts()[b + 1]]`).
    pub fn order(&self) -> &[u32] {
        &self.members[..self.kept]
    }

    /// Channels left out of every bucket.
    pub fn skipped(&self) -> usize {
        self.c_in - self.kept
    }

    /// Offsets of the buckets in [`Self::order`] (`count() + 1` entries).
    pub fn starts(&self) -> &[u32] {
        &self.starts[..self.count + 1]
    }

    /// Bucket of channel `c` ([`NO_BUCKET`] for a channel left out).
    pub fn bucket_of(&self) -> &[u32] {
        &self.bucket_of[..self.c_in]
    }

    /// Pretend every channel is its own bucket (a test hook: the reduced conv becomes dense).
    pub fn make_singletons(&mut self, c: usize) {
        self.c_in = c;
        self.count = c;
        self.kept = c;
        grow(&mut self.bucket_of, c);
        grow(&mut self.members, c);
        grow(&mut self.starts, c + 1);
        for i in 0..c {
            self.bucket_of[i] = i as u32;
            self.members[i] = i as u32;
            self.starts[i] = i as u32;
        }
        self.starts[c] = c as u32;
        self.set_inv_sizes();
    }
}

/// `1 / k` for the bucket sizes `k` below [`RECIPROCALS`] (1 for `k = 0`), computed once per
/// process: a division per bucket would cost more than the grouping itself. The table was
/// per grouping and rebuilt whenever the layer's channel count changed, and the patches of
/// a thread share their groupings across layers: on EfficientNet-Lite1, whose 1x1 layers
/// alternate widths, every patch rebuilt it (`c_in + 1` divisions and an allocation).
fn reciprocals() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..RECIPROCALS).map(|k| 1.0 / k.max(1) as f32).collect())
}

/// Bucket sizes whose reciprocals [`reciprocals`] holds (16 KB); larger buckets divide.
const RECIPROCALS: usize = 4096;

/// The channels below `c` not flagged in `skip` (`skip` empty: all), increasing, into
/// `list`, written without a branch per channel: which channels are zero over a window
/// follows no pattern a branch predictor learns, and both of the grouping's loops tested
/// every channel (ResNet-18's HASTE layers, L = 14: the grouping 0.25-0.27 -> 0.22-0.25
/// cycles per channel and window pixel without the tests).
fn kept_channels<'a>(skip: &[bool], c: usize, list: &'a mut Vec<u32>) -> &'a [u32] {
    grow(list, c);
    if skip.is_empty() {
        for (ch, slot) in list[..c].iter_mut().enumerate() {
            *slot = ch as u32;
        }
        return &list[..c];
    }
    let mut n = 0;
    for (ch, &skipped) in skip[..c].iter().enumerate() {
        list[n] = ch as u32;
        n += !skipped as usize;
    }
    &list[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_in_first_channel_order() {
        let mut b = Buckets::default();
        b.group(&[7, 3, 7, 9, 3, 7]);
        assert_eq!(b.count(), 3);
        assert_eq!(b.members(0), &[0, 2, 5]);
        assert_eq!(b.members(1), &[1, 4]);
        assert_eq!(b.members(2), &[3]);
        assert_eq!(b.bucket_of(), &[0, 1, 0, 2, 1, 0]);
        assert!(!b.all_singletons());
        b.group(&[5, 4, 3]);
        assert!(b.all_singletons());
        assert_eq!(b.members(0), &[0]);
        assert_eq!(b.members(2), &[2]);
        b.group(&[]);
        assert_eq!(b.count(), 0);
    }

    /// Every tier's grouping against the hash table's, field by field: 1 to 300 channels (the
    /// vector path takes up to 256 with keys of 16 bits, 64 with keys of 32), few or many
    /// distinct keys, some channels skipped, keys of 40 bits (left to the table), one
    /// `Buckets` reused.
    #[test]
    fn every_tier_groups_as_the_hash_table() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for isa in Isa::available() {
            let mut got = Buckets::default();
            for case in 0..1800 {
                let c = 1 + case % 300;
                let distinct = [1, 2, 5, 30, 1 << 14][case % 5];
                let wide = [0, 0, 0, 1u128 << 20, 0, 1u128 << 40, 0][case % 7];
                let keys: Vec<Key> = (0..c).map(|_| (next() % distinct) as Key | wide).collect();
                let skip: Vec<bool> = match case % 3 {
                    0 => Vec::new(),
                    1 => (0..c).map(|_| next() % 4 == 0).collect(),
                    _ => (0..c).map(|_| next() % 8 != 0).collect(),
                };
                let mut want = Buckets::default();
                want.group_skipping(&keys, &skip);
                got.group_skipping_on(isa, &keys, &skip);
                let what = format!("{isa:?}, case {case}, {c} channels");
                assert_eq!(got.count(), want.count(), "{what}");
                assert_eq!(got.skipped(), want.skipped(), "{what}");
                assert_eq!(got.bucket_of(), want.bucket_of(), "{what}");
                assert_eq!(got.starts(), want.starts(), "{what}");
                assert_eq!(got.order(), want.order(), "{what}");
                assert_eq!(got.inv_sizes(), want.inv_sizes(), "{what}");
                assert_eq!(got.all_singletons(), want.all_singletons(), "{what}");
            }
        }
    }

    /// One `Buckets` reused: a grouping that skips channels after one that kept all, and the
    /// other way round, leaves nothing of the one before.
    #[test]
    fn a_reused_grouping_forgets_the_skips_before() {
        let mut b = Buckets::default();
        let keys = [4, 4, 2, 4, 2];
        b.group_skipping(&keys, &[false, true, false, true, true]);
        assert_eq!(b.bucket_of(), &[0, NO_BUCKET, 1, NO_BUCKET, NO_BUCKET]);
        b.group(&keys);
        assert_eq!(b.bucket_of(), &[0, 0, 1, 0, 1]);
        assert_eq!((b.members(0), b.members(1)), (&[0, 1, 3][..], &[2, 4][..]));
        b.group_skipping(&keys, &[true; 5]);
        assert_eq!((b.count(), b.skipped()), (0, 5));
        assert_eq!(b.bucket_of(), &[NO_BUCKET; 5]);
    }
}
