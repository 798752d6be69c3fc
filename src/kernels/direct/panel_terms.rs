//! What a block of `MR` outputs over every channel of a narrow layer's one panel (the pair
//! and half blocks) needs to walk its terms: each output's input row, the panel's weight
//! rows, the pass's term range, and the next block's inputs to prefetch.

use super::blocks::Pass;
use super::prefetch::next_block_inputs;
use super::{panel_of, Filters, PANEL};

pub(super) struct PanelTerms<const MR: usize> {
    /// Each output's tap-(0, 0) input, and the panel's first weight row.
    origin: [*const f32; MR],
    w_panel: *const f32,
    /// Floats per weight row (the panel's width) and terms per kernel row.
    pub(super) width: usize,
    terms: usize,
    win_row: usize,
    /// The pass's terms of each kernel row.
    pub(super) t0: usize,
    pub(super) t1: usize,
    /// A 1x1 layer's next block's inputs (see `next_block_inputs`); null: none.
    next_in: *const f32,
}

impl<const MR: usize> PanelTerms<MR> {
    /// The terms of the block of outputs from `j0` in pass `p`, on panel filters holding
    /// every channel.
    ///
    /// # Safety
    /// As the blocks': the window holds every input the block reads.
    #[inline(always)]
    pub(super) unsafe fn new(p: Pass, j0: usize) -> Self {
        let g = p.g;
        let Filters::Panels { weights, .. } = p.f else {
            unreachable!("pair and half blocks run panel filters")
        };
        let origin = g.in_offsets::<MR>(j0);
        let terms = g.kw * g.c_in;
        let (base, width, _) = panel_of(g, PANEL, 0);
        PanelTerms {
            // SAFETY: offsets inside the window and the weights (the caller's contract).
            origin: std::array::from_fn(|i| unsafe { p.win.as_ptr().add(origin[i]) }),
            w_panel: unsafe { weights.as_ptr().add(base) },
            width,
            terms,
            win_row: g.win_w * g.c_in,
            t0: p.terms.map_or(0, |t| t.0),
            t1: p.terms.map_or(terms, |t| t.1),
            next_in: next_block_inputs(p, j0, MR),
        }
    }

    /// Each output's input and the weight rows for kernel row `ky` (term `t` at `+ t` and
    /// `+ t * width`).
    #[inline(always)]
    pub(super) fn row(&self, ky: usize) -> ([*const f32; MR], *const f32) {
        let a = std::array::from_fn(|i| self.origin[i].wrapping_add(ky * self.win_row));
        (a, self.w_panel.wrapping_add(ky * self.terms * self.width))
    }

    /// Asks for the line of the next block's inputs that term `t` stands for.
    ///
    /// # Safety
    /// The CPU supports SSE (every x86-64 one does).
    #[inline(always)]
    pub(super) unsafe fn prefetch_next(&self, t: usize) {
        use std::arch::x86_64::*;
        if !self.next_in.is_null() {
            _mm_prefetch::<_MM_HINT_T0>(self.next_in.wrapping_add((t - self.t0) * 16).cast());
        }
    }
}
