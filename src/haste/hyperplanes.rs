//! Step 1: the random hyperplanes of one layer, drawn once from the layer's seed.
//!
//! A hyperplane lives in the space of one input window: dimension `d = win_h * win_w` with
//! `win_h = (P - 1) * stride_h + K_h` (same for the width), the window of a full P x P output
//! patch. Position `(r, c)` of a hyperplane always pairs with pixel `(r, c)` of a window counted
//! from the window's top-left corner (which may lie in the padding). A window clipped by the
//! image border or padding, or the smaller window of an edge patch, simply has no pixel at some
//! positions: those hyperplane entries are skipped, i.e. the hashed vector is the restriction
//! of the hyperplane to the pixels that exist (equivalently, absent pixels count as 0 after
//! centering, exactly as padding zeros would).
//!
//! Ternary entries are stored as index lists (the `+1` positions, then the `-1` positions) so a
//! projection is additions and subtractions only; zeros are never touched.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::config::HyperplaneKind;

/// One nonzero ternary entry: its flat position `r * win_w + c` and its coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub pos: u32,
    pub r: u16,
    pub c: u16,
}

/// `L` hyperplanes over a `win_h x win_w` window.
#[derive(Clone, Debug, PartialEq)]
pub struct Hyperplanes {
    kind: HyperplaneKind,
    count: usize,
    win_h: usize,
    win_w: usize,
    /// `[L, d]` row-major: every entry (ternary 0/+1/-1 or Gaussian).
    dense: Vec<f32>,
    /// Ternary only: for hyperplane `l`, `entries[starts[2l]..starts[2l+1]]` are the `+1`s and
    /// `entries[starts[2l+1]..starts[2l+2]]` the `-1`s, each in increasing position.
    entries: Vec<Entry>,
    starts: Vec<usize>,
    /// The same entries by window position: `terms[term_starts[pos]..term_starts[pos + 1]]`
    /// are the nonzero `(hyperplane, weight)` pairs at `pos`, hyperplanes increasing. Hashing
    /// walks the window once, pixel by pixel, through these.
    terms: Vec<Term>,
    term_starts: Vec<u32>,
}

/// One nonzero entry seen from its window position: hyperplane `l` has weight `w` there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Term {
    pub l: u32,
    pub w: f32,
}

impl Hyperplanes {
    /// Draws `count` hyperplanes over a `win_h x win_w` window from `seed` (ChaCha8). Ternary
    /// entries: one uniform draw `u` per entry, 0 if `u < sparsity`, else +1 or -1 by halves.
    pub fn generate(
        kind: HyperplaneKind,
        count: usize,
        sparsity: f32,
        win_h: usize,
        win_w: usize,
        seed: u64,
    ) -> Hyperplanes {
        assert!(
            win_h <= u16::MAX as usize && win_w <= u16::MAX as usize,
            "window too large"
        );
        let d = win_h * win_w;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut dense = vec![0.0f32; count * d];
        match kind {
            HyperplaneKind::Ternary => {
                let half = sparsity + (1.0 - sparsity) / 2.0;
                for v in dense.iter_mut() {
                    let u: f32 = rng.random();
                    *v = if u < sparsity {
                        0.0
                    } else if u < half {
                        1.0
                    } else {
                        -1.0
                    };
                }
            }
            HyperplaneKind::Gaussian => {
                for v in dense.iter_mut() {
                    *v = rng.sample(StandardNormal);
                }
            }
        }
        let mut entries = Vec::new();
        let mut starts = vec![0];
        if kind == HyperplaneKind::Ternary {
            for l in 0..count {
                for sign in [1.0f32, -1.0] {
                    for pos in 0..d {
                        if dense[l * d + pos] == sign {
                            let (r, c) = (pos / win_w, pos % win_w);
                            entries.push(Entry {
                                pos: pos as u32,
                                r: r as u16,
                                c: c as u16,
                            });
                        }
                    }
                    starts.push(entries.len());
                }
            }
        }
        let mut terms = Vec::new();
        let mut term_starts = vec![0u32];
        for pos in 0..d {
            for l in 0..count {
                let w = dense[l * d + pos];
                if w != 0.0 {
                    terms.push(Term { l: l as u32, w });
                }
            }
            term_starts.push(terms.len() as u32);
        }
        Hyperplanes {
            kind,
            count,
            win_h,
            win_w,
            dense,
            entries,
            starts,
            terms,
            term_starts,
        }
    }

    pub fn kind(&self) -> HyperplaneKind {
        self.kind
    }

    /// Number of hyperplanes `L`.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Window height and width the hyperplanes are defined on.
    pub fn window(&self) -> (usize, usize) {
        (self.win_h, self.win_w)
    }

    /// Dimension `d = win_h * win_w`.
    pub fn dim(&self) -> usize {
        self.win_h * self.win_w
    }

    /// Hyperplane `l` as a dense vector of length `d` (position `r * win_w + c`).
    pub fn row(&self, l: usize) -> &[f32] {
        let d = self.dim();
        &self.dense[l * d..(l + 1) * d]
    }

    /// Ternary: the `+1` and `-1` entries of hyperplane `l` (empty for Gaussian).
    pub fn signed_entries(&self, l: usize) -> (&[Entry], &[Entry]) {
        if self.kind != HyperplaneKind::Ternary {
            return (&[], &[]);
        }
        let s = &self.starts[2 * l..2 * l + 3];
        (&self.entries[s[0]..s[1]], &self.entries[s[1]..s[2]])
    }

    /// The nonzero entries at window position `pos` (`r * win_w + c`), hyperplanes increasing.
    #[inline(always)]
    pub fn terms_at(&self, pos: usize) -> &[Term] {
        &self.terms[self.term_starts[pos] as usize..self.term_starts[pos + 1] as usize]
    }

    /// Nonzero entries over all hyperplanes (`L * d` for Gaussian).
    pub fn nnz(&self) -> usize {
        match self.kind {
            HyperplaneKind::Ternary => self.entries.len(),
            HyperplaneKind::Gaussian => self.dense.len(),
        }
    }

    /// Nonzero entries at positions inside rows `rows` and columns `cols` of the window.
    pub fn nnz_in(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> usize {
        match self.kind {
            HyperplaneKind::Ternary => self
                .entries
                .iter()
                .filter(|e| rows.contains(&(e.r as usize)) && cols.contains(&(e.c as usize)))
                .count(),
            HyperplaneKind::Gaussian => self.count * rows.len() * cols.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ternary_statistics_and_index_lists() {
        let h = Hyperplanes::generate(HyperplaneKind::Ternary, 64, 2.0 / 3.0, 10, 10, 42);
        let d = h.dim();
        let zeros = h.dense.iter().filter(|&&v| v == 0.0).count() as f64 / (64 * d) as f64;
        assert!((zeros - 2.0 / 3.0).abs() < 0.03, "zero fraction {zeros}");
        assert!(h.dense.iter().all(|&v| v == 0.0 || v == 1.0 || v == -1.0));
        for l in 0..64 {
            let (plus, minus) = h.signed_entries(l);
            let mut rebuilt = vec![0.0f32; d];
            for e in plus {
                rebuilt[e.pos as usize] += 1.0;
                assert_eq!(e.pos as usize, e.r as usize * 10 + e.c as usize);
            }
            for e in minus {
                rebuilt[e.pos as usize] -= 1.0;
            }
            assert_eq!(rebuilt, h.row(l));
        }
        assert_eq!(h.nnz(), h.dense.iter().filter(|&&v| v != 0.0).count());
        assert_eq!(h.nnz_in(0..10, 0..10), h.nnz());
    }

    #[test]
    fn seeded() {
        let a = Hyperplanes::generate(HyperplaneKind::Ternary, 8, 0.5, 6, 6, 1);
        let b = Hyperplanes::generate(HyperplaneKind::Ternary, 8, 0.5, 6, 6, 1);
        let c = Hyperplanes::generate(HyperplaneKind::Ternary, 8, 0.5, 6, 6, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let g = Hyperplanes::generate(HyperplaneKind::Gaussian, 8, 0.5, 6, 6, 1);
        assert_eq!(g.nnz(), 8 * 36);
        assert!(g.signed_entries(0).0.is_empty());
    }
}
