//! The register blocks of the tiers whose output-channel groups are 16 wide (AVX2: 2 vectors
//! of 8 lanes; NEON: 4 of 4), written once (`narrow_tier!`) over a handful of vector
//! operations each tier defines, as the depthwise kernel's tiers are. A tier's module
//! defines `V` (a vector), `LANES`, `Tail` (what a partial last vector needs) and
//! `tail(lanes)`, `zero()`, `splat(p)` (broadcast `*p`), `fma(x, w, acc)` (`acc + x * w`,
//! fused), `load(p)`, `load_tail(p, t)`, `store(p, v)`, `store_tail(p, t, v)`,
//! `prefetch(p)` (a hint to bring `p`'s cache line into cache), and for the epilogue
//! `set1(x)`, `add(a, b)`, `relu(x)`, `leaky_relu(x, alpha)`, `clip(x, lo, hi)` and
//! `activate(a, x)` (the smooth activations), each with the bits of
//! [`crate::ops::Activation::apply`]; the macro adds `conv_at`, its entry point
//! ([`super::conv_at`] on that tier).
//!
//! A call sums its terms in the passes of [`super::passes::narrow_group_passes`]; each pass
//! covers every output channel in groups of `LANES * NV` and every output in blocks of `MR`,
//! group outer, so a group's filters stay in cache while every block of outputs reads them.
//! Each output is summed with fused multiply-adds in the order (tap, channel), as in every
//! tier, so the bits are those of [`super::conv_generic`].

macro_rules! narrow_tier {
    (mr: $mr:literal, nv: $nv:literal, $(#[$feat:meta])*) => {
        use super::passes::narrow_group_passes;
        use super::{panel_of, Epilogue, Filters, Geom};

        /// One pass of the kernel: a contiguous range of the sum's terms, in the order (tap,
        /// channel), for every output and output channel.
        #[derive(Clone, Copy)]
        struct Pass<'a> {
            g: &'a Geom,
            win: &'a [f32],
            f: Filters<'a>,
            /// Kernel rows summed.
            kys: (usize, usize),
            /// Panel filters: the terms `t0..t1` of the kernel row `kys.0` (`kys` is one
            /// row), of the `kw * c_in` that run as one loop; `None`: every term of the rows.
            terms: Option<(usize, usize)>,
            /// Whether this pass starts the sums (else it adds to the stored partial sums)
            /// and whether it ends them (then the epilogue runs).
            first: bool,
            last: bool,
            e: Epilogue<'a>,
        }

        /// [`super::conv_at`] on this tier.
        ///
        /// # Safety
        /// As [`super::conv_at`], and the CPU must support this tier.
        $(#[$feat])*
        pub(super) unsafe fn conv_at(g: &Geom, win: &[f32], f: Filters, e: Epilogue, out: *mut f32) {
            let passes = narrow_group_passes(g, f);
            let count = passes.len();
            for (k, (kys, terms)) in passes.into_iter().enumerate() {
                let (first, last) = (k == 0 && g.sums.start, k + 1 == count && g.sums.finish);
                let p = Pass { g, win, f, kys, terms, first, last, e };
                // SAFETY: forwarded from the caller.
                unsafe { channel_groups::<$mr, $nv>(p, out) }
            }
        }

        /// Every output channel in groups of `LANES * NV` (the last one narrower), each group
        /// over every output in blocks of `MR` (the last one smaller).
        $(#[$feat])*
        unsafe fn channel_groups<const MR: usize, const NV: usize>(p: Pass, out: *mut f32) {
            let (n, c_out) = (p.g.ph * p.g.pw, p.g.c_out);
            let mut co0 = 0;
            while co0 < c_out {
                let width = (c_out - co0).min(LANES * NV);
                // SAFETY (every block): forwarded from the caller; each block stays inside
                // `n` outputs and `width` channels from `co0`.
                unsafe {
                    if width == LANES * NV {
                        output_blocks::<MR, NV, false>(p, out, co0, width, n);
                    } else {
                        // The last, narrower group: as many vectors as it needs, the last one
                        // partial.
                        match width.div_ceil(LANES) {
                            1 => output_blocks::<MR, 1, true>(p, out, co0, width, n),
                            2 => output_blocks::<MR, 2, true>(p, out, co0, width, n),
                            3 => output_blocks::<MR, 3, true>(p, out, co0, width, n),
                            _ => output_blocks::<MR, 4, true>(p, out, co0, width, n),
                        }
                    }
                }
                co0 += width;
            }
        }

        /// Outputs `0..n` of channels `co0..co0 + width` in blocks of `MR` outputs (`TAIL`:
        /// the last vector holds fewer than `LANES` channels).
        $(#[$feat])*
        #[inline]
        unsafe fn output_blocks<const MR: usize, const NV: usize, const TAIL: bool>(
            p: Pass,
            out: *mut f32,
            co0: usize,
            width: usize,
            mut n: usize,
        ) {
            let t = tail(width - LANES * (NV - 1));
            let mut full = n - n % MR;
            // SAFETY (every block): forwarded from the caller.
            if MR == 6 && (1..=2).contains(&(n - full)) && full >= MR {
                // One or two outputs left over (7 x 7 = 8 x 6 + 1): a block of one output
                // loads its filters for 2 multiply-adds each, so the last full block and
                // them run as blocks of 4 + 3 or 4 + 4 instead.
                full -= MR;
                unsafe { block::<4, NV, TAIL>(p, out, full, co0, t, NO_NEXT) };
                let rest = n - full - 4;
                unsafe {
                    if rest == 3 {
                        block::<3, NV, TAIL>(p, out, full + 4, co0, t, NO_NEXT)
                    } else {
                        block::<4, NV, TAIL>(p, out, full + 4, co0, t, NO_NEXT)
                    }
                };
                n = full;
            }
            let next = next_filters(p, co0);
            for j0 in (0..full).step_by(MR) {
                let next = match p.f {
                    Filters::Panels { .. } if j0 == 0 => next,
                    Filters::Rows { ahead, .. } => ahead_part(p, ahead, co0 / (LANES * NV), j0 / MR, n.div_ceil(MR)),
                    _ => NO_NEXT,
                };
                unsafe { block::<MR, NV, TAIL>(p, out, j0, co0, t, next) };
            }
            unsafe {
                match n - full {
                    0 => {}
                    1 => block::<1, NV, TAIL>(p, out, full, co0, t, NO_NEXT),
                    2 => block::<2, NV, TAIL>(p, out, full, co0, t, NO_NEXT),
                    3 => block::<3, NV, TAIL>(p, out, full, co0, t, NO_NEXT),
                    4 => block::<4, NV, TAIL>(p, out, full, co0, t, NO_NEXT),
                    _ => block::<5, NV, TAIL>(p, out, full, co0, t, NO_NEXT),
                }
            }
        }

        /// What a block prefetches while it sums, a step per term: where the next group's
        /// panel filters start (at this group's column) and their row stride, for the first
        /// block of a group (a wide layer's filters do not stay in cache from one image to
        /// the next: ResNet-18's 512-channel stage holds 31 MB, and each term of a
        /// 16-channel group is one cache line); or with row filters its part of the next
        /// call's filters and the floats per term. Null: nothing to prefetch.
        type NextFilters = (*const f32, usize);
        const NO_NEXT: NextFilters = (std::ptr::null(), 0);

        /// [`NextFilters`] of the group after the one at `co0`, in this pass.
        #[inline]
        fn next_filters(p: Pass, co0: usize) -> NextFilters {
            let next = co0 + LANES * $nv;
            match p.f {
                Filters::Panels { weights, width: panel } if next < p.g.c_out => {
                    let (base, width, col) = panel_of(p.g, panel, next);
                    (weights.as_ptr().wrapping_add(base + col), width)
                }
                _ => NO_NEXT,
            }
        }

        /// The part of `ahead` (the next filter panel, or the next kernel row of this one)
        /// that full block `k` of the `blocks` in channel group `group` prefetches (see
        /// [`super::ahead::ahead_part`]; every group's blocks in turn), or `NO_NEXT`.
        #[inline]
        fn ahead_part(p: Pass, ahead: &[f32], group: usize, k: usize, blocks: usize) -> NextFilters {
            if ahead.is_empty() {
                return NO_NEXT;
            }
            let (g, groups) = (p.g, p.g.c_out.div_ceil(LANES * $nv));
            let row_terms = g.kw * p.f.terms(g);
            let at = (group * blocks + k, groups * blocks);
            match super::ahead::ahead_part(g, (p.kys, p.terms), row_terms, at, ahead) {
                (pf, _) if pf.is_null() => NO_NEXT,
                next => next,
            }
        }

        /// The `NV` vectors of a block's filters for one term, from `w`. A loop, not
        /// `std::array::from_fn`: its closure would carry the tier's target features and
        /// `from_fn` not, so it could not be inlined there (a call per vector).
        $(#[$feat])*
        #[inline]
        unsafe fn load_w<const NV: usize, const TAIL: bool>(w: *const f32, t: Tail) -> [V; NV] {
            let mut wv = [zero(); NV];
            for (v, x) in wv.iter_mut().enumerate() {
                // SAFETY: the caller's: the block's filters for this term.
                *x = unsafe { load_v::<NV, TAIL>(w.add(LANES * v), v, t) };
            }
            wv
        }

        /// Loads vector `v` of a block's channels from `at` (partial when it is the tail).
        $(#[$feat])*
        #[inline]
        unsafe fn load_v<const NV: usize, const TAIL: bool>(at: *const f32, v: usize, t: Tail) -> V {
            // SAFETY: the caller gives the lanes in use.
            unsafe {
                if TAIL && v == NV - 1 {
                    load_tail(at, t)
                } else {
                    load(at)
                }
            }
        }

        /// Stores vector `v` of a block's channels to `at` (partial when it is the tail).
        $(#[$feat])*
        #[inline]
        unsafe fn store_v<const NV: usize, const TAIL: bool>(at: *mut f32, v: usize, t: Tail, x: V) {
            // SAFETY: the caller gives the lanes in use.
            unsafe {
                if TAIL && v == NV - 1 {
                    store_tail(at, t, x)
                } else {
                    store(at, x)
                }
            }
        }

        /// `MR` outputs from `j0` x `LANES * NV` channels from `co0`, summed over the pass's
        /// kernel rows: from zero on the first pass, from the stored partial sums on later
        /// ones; the epilogue after the last.
        // Never inlined: inlined into its callers, whose other blocks compete for the same
        // 16 registers, the 6 x 2 block's loop was once allocated with spills to the stack
        // (one change to the caller took 64 -> 64 layers from 73 to 55 GFLOP/s on AVX2).
        $(#[$feat])*
        #[inline(never)]
        unsafe fn block<const MR: usize, const NV: usize, const TAIL: bool>(
            p: Pass,
            out: *mut f32,
            j0: usize,
            co0: usize,
            t: Tail,
            next: NextFilters,
        ) {
            let g = p.g;
            let at = g.out_offsets::<MR>(j0);
            let mut acc = [[zero(); NV]; MR];
            // SAFETY (all of the block): the caller gives the outputs, the window and the
            // filters.
            unsafe {
                if !p.first {
                    for (row, &o) in acc.iter_mut().zip(&at) {
                        for (v, x) in row.iter_mut().enumerate() {
                            *x = load_v::<NV, TAIL>(out.add(o + co0 + LANES * v), v, t);
                        }
                    }
                }
                let wp = p.win.as_ptr();
                // Each output's tap-(0, 0) input pixel, stepping along the output rows.
                let origin: [usize; MR] = g.in_offsets::<MR>(j0);
                match p.f {
                    Filters::Panels { weights, width: panel } => {
                        // A kernel row's `kw * c_in` terms sit next to each other in the
                        // window and in the panel: one loop.
                        let terms = g.kw * g.c_in;
                        let (base, width, col) = panel_of(g, panel, co0);
                        let w_panel = weights.as_ptr().add(base + col);
                        let (t0, t1) = p.terms.unwrap_or((0, terms));
                        for ky in p.kys.0..p.kys.1 {
                            let row_in = ky * g.win_w * g.c_in;
                            let a = origin.map(|o| wp.add(o + row_in));
                            // Pointers stepped by the row length: an index multiplied
                            // by it in the loop took an integer multiply per term, on a
                            // port the FMAs use (8 % slower).
                            let mut w = w_panel.add((ky * terms + t0) * width);
                            let mut pf = next.0.wrapping_add((ky * terms + t0) * next.1);
                            for term in t0..t1 {
                                if !next.0.is_null() {
                                    prefetch(pf);
                                    pf = pf.wrapping_add(next.1);
                                }
                                let wv = load_w::<NV, TAIL>(w, t);
                                w = w.wrapping_add(width);
                                for i in 0..MR {
                                    let x = splat(a[i].add(term));
                                    for v in 0..NV {
                                        acc[i][v] = fma(x, wv[v], acc[i][v]);
                                    }
                                }
                            }
                        }
                    }
                    Filters::Rows {
                        first,
                        rows,
                        tap_stride,
                        ..
                    } => {
                        let nb = first.len();
                        let (fp, rp) = (first.as_ptr(), rows.as_ptr());
                        let mut pf = next.0;
                        for ky in p.kys.0..p.kys.1 {
                            for kx in 0..g.kw {
                                let kk = ky * g.kw + kx;
                                let tap_in = (ky * g.win_w + kx) * g.c_in;
                                let a = origin.map(|o| wp.add(o + tap_in));
                                let tap_w = kk * tap_stride + co0;
                                for b in 0..nb {
                                    if !next.0.is_null() {
                                        prefetch(pf);
                                        if next.1 > 16 {
                                            prefetch(pf.wrapping_add(16));
                                            prefetch(pf.wrapping_add(32));
                                            prefetch(pf.wrapping_add(48));
                                        }
                                        pf = pf.wrapping_add(next.1);
                                    }
                                    let f = *fp.add(b) as usize;
                                    let wv = load_w::<NV, TAIL>((*rp.add(b)).add(tap_w), t);
                                    for i in 0..MR {
                                        let x = splat(a[i].add(f));
                                        for v in 0..NV {
                                            acc[i][v] = fma(x, wv[v], acc[i][v]);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                for (row, &o) in acc.iter().zip(&at) {
                    for (v, &x) in row.iter().enumerate() {
                        store_v::<NV, TAIL>(out.add(o + co0 + LANES * v), v, t, x);
                    }
                }
                if p.last && !p.e.is_none() {
                    finish::<MR, NV, TAIL>(p.e, out, &at, co0, t);
                }
            }
        }

        /// The epilogue on a block just stored (still in L1): the bias, the residual and the
        /// activation, a vector at a time, with the scalar code's bits (the comparisons are
        /// ordered, so NaN passes through; -0.0 stays; the smooth activations by the
        /// activation module's lanes). Through the activation module's slice functions one
        /// output at a time, layers of few input channels spent most of their time here on
        /// AVX2 (EfficientNet-B0's 16 -> 96 1x1 layer with its SiLU ran at a fifth of the
        /// AVX-512 tier's speed). Not inlined, and not applied to the sums in registers:
        /// beside a smooth activation's constants the block's loop was allocated with its
        /// sums on the stack.
        $(#[$feat])*
        #[inline(never)]
        unsafe fn finish<const MR: usize, const NV: usize, const TAIL: bool>(
            e: Epilogue,
            out: *mut f32,
            at: &[usize; MR],
            co0: usize,
            t: Tail,
        ) {
            use crate::ops::Activation;
            // SAFETY (all): the block's own outputs, just stored; the bias holds `c_out`
            // values and the residual the call's outputs.
            unsafe {
                for &o in at {
                    let mut x = [zero(); NV];
                    for (v, x) in x.iter_mut().enumerate() {
                        *x = load_v::<NV, TAIL>(out.add(o + co0 + LANES * v), v, t);
                    }
                    if let Some(b) = e.bias {
                        for (v, x) in x.iter_mut().enumerate() {
                            *x = add(*x, load_v::<NV, TAIL>(b.as_ptr().add(co0 + LANES * v), v, t));
                        }
                    }
                    if let Some(r) = e.residual {
                        for (v, x) in x.iter_mut().enumerate() {
                            let rv = load_v::<NV, TAIL>(r.as_ptr().add(o + co0 + LANES * v), v, t);
                            *x = add(*x, rv);
                        }
                    }
                    // Plain loops, not closures: a closure carries the tier's target
                    // features, so the generic code that would call it could not inline it.
                    match e.activation {
                        Activation::None => {}
                        Activation::Relu => {
                            for x in x.iter_mut() {
                                *x = relu(*x);
                            }
                        }
                        Activation::LeakyRelu(a) => {
                            for x in x.iter_mut() {
                                *x = leaky_relu(*x, set1(a));
                            }
                        }
                        Activation::Clip(lo, hi) => {
                            for x in x.iter_mut() {
                                *x = clip(*x, set1(lo), set1(hi));
                            }
                        }
                        smooth => {
                            for x in x.iter_mut() {
                                *x = activate(smooth, *x);
                            }
                        }
                    }
                    for (v, &x) in x.iter().enumerate() {
                        store_v::<NV, TAIL>(out.add(o + co0 + LANES * v), v, t, x);
                    }
                }
            }
        }
    };
}

pub(super) use narrow_tier;
