//! A growable buffer of floats whose first float sits at the start of a cache line.
//!
//! A `Vec<f32>` starts where the allocator puts it: 16 bytes past a line's start for large
//! blocks. Vectors of 16 floats read from such a buffer then straddle two lines each, and a
//! load that splits costs twice: HASTE's projection of a window (`examples`-style timing of
//! `hash_copied_window`, 64 to 512 channels) took 0.78-0.98 cycles per channel and window
//! pixel from a misaligned copy against 0.62-0.71 from an aligned one.

use std::ops::{Deref, DerefMut};

/// One cache line of floats.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Floats in whole cache lines; dereferences to the first `len` of them.
#[derive(Clone, Default)]
pub struct AlignedFloats {
    lines: Vec<Line>,
    len: usize,
}

impl std::fmt::Debug for AlignedFloats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedFloats({} floats)", self.len)
    }
}

impl AlignedFloats {
    /// Bytes it holds (its capacity).
    pub fn bytes(&self) -> u64 {
        crate::kernels::buffer_bytes(&self.lines)
    }

    /// Grows the buffer to at least `n` floats (new ones zero; never shrinks, so steady state
    /// does not allocate).
    pub fn grow(&mut self, n: usize) {
        if n > self.len {
            self.lines.resize(n.div_ceil(16), Line::default());
            self.len = n;
        }
    }
}

impl From<&[f32]> for AlignedFloats {
    fn from(v: &[f32]) -> AlignedFloats {
        let mut a = AlignedFloats::default();
        a.grow(v.len());
        a.copy_from_slice(v);
        a
    }
}

impl Deref for AlignedFloats {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `Line` is 16 floats with no padding (`repr(C)`, 64 bytes), so the lines
        // are `16 * lines.len() >= len` initialized floats in one allocation.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl DerefMut for AlignedFloats {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, and `&mut self` borrows the lines exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_line_and_keeps_its_values_as_it_grows() {
        let mut a = AlignedFloats::default();
        assert!(a.is_empty());
        a.grow(5);
        assert_eq!(a.len(), 5);
        a[4] = 3.0;
        a.grow(1000);
        assert_eq!((a.len(), a[4], a[999]), (1000, 3.0, 0.0));
        assert_eq!(a.as_ptr() as usize % 64, 0);
        a.grow(10);
        assert_eq!(a.len(), 1000, "never shrinks");
        let b = AlignedFloats::from(&[1.0, 2.0, 3.0][..]);
        assert_eq!(
            (&b[..], b.as_ptr() as usize % 64),
            (&[1.0, 2.0, 3.0][..], 0)
        );
    }
}
