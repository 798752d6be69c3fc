//! The constants of HASTE's time model ([`CostModel`]): what each unit of HASTE's work
//! costs in multiply-adds of the dense kernel, per instruction-set tier and kind of
//! convolution, and where they come from. The terms they multiply are [`CostTerms`](super::cost::CostTerms).

use crate::kernels::isa::Isa;
use crate::ops::Conv2dParams;

/// The constants of HASTE's time model for one kind of convolution on one instruction-set
/// tier, in multiply-adds of the dense kernel (a constant says how many of the dense
/// convolution's multiply-adds a unit of HASTE's work takes as long as; the dense rate
/// itself cancels out).
///
/// HASTE's time over the dense kernel's on a layer (see [`CostTerms`](super::cost::CostTerms)) is a sum of terms,
/// each linear in one constant:
/// - the reduced convolution, per channel kept: 1 if it ran at the dense kernel's rate. It
///   does for spatial kernels; a 1x1 convolution's dense kernel is a matrix product HASTE's
///   per-patch calls do not reach;
/// - the fixed work of a patch per input channel and window pixel (copy and scan of the
///   window, projection, codes);
/// - the input merge, per merged input channel and window pixel;
/// - the per-channel work of a patch (norms, grouping, bucket bookkeeping), per input
///   channel: what makes small tiles dear on 1x1 layers, whose windows are small;
/// - what the reduced convolution loses against the dense kernel per patch and output
///   channel: a patch's few outputs make short register blocks and re-read its filter rows
///   once per block (what made narrow-input, wide-output layers such as Tiny Darknet's
///   16 -> 128 cost more than the fixed work alone said);
/// - the filter merge, per filter element summed, while the layer's filter bank fits in
///   about half the L2 cache ([`MERGE_BANK_CACHED_MB`](super::cost::MERGE_BANK_CACHED_MB)), and its growth per megabyte of
///   bank beyond that (the rows then come from further out);
/// - per bucket of two or more channels and patch: its row of the filter merge, its mean in
///   the input merge and its entries in the kernel's tables, each set up once per bucket
///   (on 1x1 layers, whose patches are few pixels, this made the time rise faster than the
///   channels merged at middling shares: 44 % of the 1x1 timings within 10 % without it);
/// - per output value, its finish in the patch kernel (bias, residual and activation
///   applied from memory, where the dense kernel finishes in registers), and more for an
///   activation that takes an exponential (SiLU, sigmoid, GELU): the dense time the
///   merging does not shrink (EfficientNet-B0's 1x1 layers measured 20 % slower than
///   predicted without it);
/// - per input value scaled first, where the layer folds a squeeze-excitation's channel
///   scale (`ConvOp::input_scale`): the dense kernel folds it into its weights, HASTE's
///   input is scaled by the plan in a pass of its own.
///
/// The vector width sets these ratios: the dense kernel's multiply-adds widen with it, the
/// projection and the scans too, the grouping and the bookkeeping do not. So each tier and
/// kind has its own set ([`CostModel::of`]), fitted by least squares
/// (`bench/fit_cost_model.py`) to per-layer times of `haste bench --layers --all-layers
/// --include-1x1` on every real shared model and the random-weight ResNet-18 (the 1x1
/// kinds also on the random-weight MobileNetV2 and EfficientNet-B0, which merge 85-97 % of
/// their channels), tiles 4, 8 and 16, L = 10 and 16, one thread, on an AMD Zen 4
/// (`HASTE_ISA` for the narrower tiers; BENCHMARKS.md). The AVX-512 spatial constants were
/// refitted again on 2026-12-07 (twenty-sixth session), after tile-4 patches took
/// 64-channel register blocks: the loss per patch and output channel fell from 580 to 446,
/// and 98 % of the 546 AVX-512 3x3 timings came within 10 % (95 % with the constants
/// before). The per-bucket, finish and scaled-input terms came on 2026-12-07 (twenty-seventh
/// session). Constants refitted on another machine replace them through `HASTE_COST_MODEL`
/// ([`super::cost_file`]); a file without the later terms leaves them at 0.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostModel {
    /// The reduced convolution per channel kept.
    pub kept: f64,
    /// Fixed work per input channel and window pixel.
    pub fixed: f64,
    /// The input merge per merged input channel and window pixel.
    pub input_merge: f64,
    /// Per-channel work per patch and input channel.
    pub per_input_channel: f64,
    /// The reduced convolution's loss per patch and output channel.
    pub per_output_channel: f64,
    /// The filter merge per filter element summed (bank in cache).
    pub merge: f64,
    /// The filter merge's growth per element and megabyte of bank beyond cache.
    pub merge_per_mb: f64,
    /// Per bucket of two or more channels and patch.
    #[serde(default)]
    pub multi: f64,
    /// Per output value finished.
    #[serde(default)]
    pub finish: f64,
    /// Per output value finished by an activation with an exponential, on top of `finish`.
    #[serde(default)]
    pub finish_exp: f64,
    /// Per input value scaled first (a folded channel scale).
    #[serde(default)]
    pub scaled_input: f64,
}

impl CostModel {
    /// Spatial (K x K, K > 1) convolutions on AVX-512 (16 lanes). No spatial layer of the
    /// shared models has an activation with an exponential or a folded input scale, so
    /// `finish_exp` and `scaled_input` are the 1x1 fit's: the same work per value.
    pub const AVX512: CostModel = CostModel {
        kept: 1.01,
        fixed: 12.5,
        input_merge: 29.1,
        per_input_channel: 1260.0,
        per_output_channel: 294.0,
        merge: 1.67,
        merge_per_mb: 0.426,
        multi: 3140.0,
        finish: 14.3,
        finish_exp: 7.59,
        scaled_input: 15.1,
    };
    /// 1x1 convolutions on AVX-512.
    pub const AVX512_POINTWISE: CostModel = CostModel {
        kept: 1.16,
        fixed: 22.1,
        input_merge: 2.9,
        per_input_channel: 225.0,
        per_output_channel: 111.0,
        merge: 2.98,
        merge_per_mb: 0.0,
        multi: 5490.0,
        finish: 5.5,
        finish_exp: 7.59,
        scaled_input: 15.1,
    };
    /// Spatial convolutions on AVX2 + FMA (8 lanes). NEON (4 lanes with fused multiply-adds
    /// and hand-written kernels like these) uses it too: it could not be timed on real
    /// hardware here. Refitted on 2026-12-07 (thirtieth session) on an AMD Zen 3 without
    /// AVX-512 (512 KB of L2 a core), the first fit on a machine whose best tier is AVX2
    /// (the ones before were a Zen 4 under `HASTE_ISA=avx2`), after AVX2's own projection:
    /// 84.6 % of the 546 3x3 timings within 10 % (71.4 % with the constants before), mean
    /// error 6.3 %. The pointwise set below from the same runs: 48.6 % of 558 (42.5 %).
    pub const AVX2: CostModel = CostModel {
        kept: 1.2,
        fixed: 5.25,
        input_merge: 48.2,
        per_input_channel: 1240.0,
        per_output_channel: 57.6,
        merge: 2.2,
        merge_per_mb: 0.529,
        multi: 5930.0,
        finish: 0.0,
        finish_exp: 11.1,
        scaled_input: 15.7,
    };
    /// 1x1 convolutions on AVX2 (and NEON).
    pub const AVX2_POINTWISE: CostModel = CostModel {
        kept: 1.29,
        fixed: 17.0,
        input_merge: 12.4,
        per_input_channel: 178.0,
        per_output_channel: 4.3,
        merge: 5.28,
        merge_per_mb: 0.957,
        multi: 5100.0,
        finish: 2.85,
        finish_exp: 11.1,
        scaled_input: 15.7,
    };
    /// Spatial convolutions on the plain-Rust tiers (SSE2 on x86-64; portable), loops the
    /// compiler vectorizes: the patch kernel's short calls run about 2x slower per channel
    /// than the dense kernel, and the fixed work dwarfs the rest (the least squares set most
    /// other terms to 0, where they no longer separate from it).
    pub const PLAIN: CostModel = CostModel {
        kept: 1.98,
        fixed: 88.6,
        input_merge: 0.0,
        per_input_channel: 21.4,
        per_output_channel: 0.0,
        merge: 0.0,
        merge_per_mb: 0.695,
        multi: 0.0,
        finish: 0.0,
        finish_exp: 0.0,
        scaled_input: 0.0,
    };
    /// 1x1 convolutions on the plain-Rust tiers.
    pub const PLAIN_POINTWISE: CostModel = CostModel {
        kept: 1.75,
        fixed: 0.0,
        input_merge: 9.07,
        per_input_channel: 0.0,
        per_output_channel: 0.0,
        merge: 5.52,
        merge_per_mb: 0.0,
        multi: 0.0,
        finish: 0.0,
        finish_exp: 0.0,
        scaled_input: 0.0,
    };

    /// The constants of the tier `isa` for a convolution with a 1x1 kernel (`pointwise`)
    /// or a larger one: the file `HASTE_COST_MODEL` names where it has them
    /// ([`super::cost_file`]), else [`CostModel::built_in`].
    pub fn of(isa: Isa, pointwise: bool) -> CostModel {
        super::cost_file::loaded()
            .and_then(|f| f.model(isa, pointwise))
            .unwrap_or_else(|| CostModel::built_in(isa, pointwise))
    }

    /// haste's own constants for the tier `isa` and the kind.
    pub fn built_in(isa: Isa, pointwise: bool) -> CostModel {
        match (isa, pointwise) {
            (Isa::Avx512, false) => CostModel::AVX512,
            (Isa::Avx512, true) => CostModel::AVX512_POINTWISE,
            (Isa::Avx2 | Isa::Neon, false) => CostModel::AVX2,
            (Isa::Avx2 | Isa::Neon, true) => CostModel::AVX2_POINTWISE,
            (Isa::Sse2 | Isa::Portable, false) => CostModel::PLAIN,
            (Isa::Sse2 | Isa::Portable, true) => CostModel::PLAIN_POINTWISE,
        }
    }

    /// The eleven constants, in [`CostTerms`](super::cost::CostTerms)' order.
    pub fn constants(&self) -> [f64; 11] {
        [
            self.kept,
            self.fixed,
            self.input_merge,
            self.per_input_channel,
            self.per_output_channel,
            self.merge,
            self.merge_per_mb,
            self.multi,
            self.finish,
            self.finish_exp,
            self.scaled_input,
        ]
    }

    /// The constants for `p` on the tier the kernels run ([`Isa::current`]).
    pub fn current(p: &Conv2dParams) -> CostModel {
        CostModel::of(Isa::current(), p.kh * p.kw == 1)
    }
}
