//! Which instruction-set tier the kernels run on: one switch for the whole crate.
//!
//! Every fast kernel exists per tier (AVX-512, AVX2 + FMA, NEON, and plain Rust: SSE2 on
//! x86-64, portable); each asks [`Isa::current`] which one to run. By default that is the
//! best tier the CPU supports; the environment variable
//! `HASTE_ISA=portable|sse2|neon|avx2|avx512` forces one (for tests and for
//! comparing tiers on one machine). A forced tier the CPU lacks, or an unknown name, is an
//! error when a plan is built or the command starts ([`Isa::check_environment`]); the kernels
//! themselves then never see it and run the best supported tier.

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// An instruction-set tier, from the most portable to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, vectorized by the compiler for the crate's baseline target, with fused
    /// multiply-adds (`f32::mul_add`): the reference every tier's bits are tested against.
    /// On x86-64 each fused multiply-add is a library call, so [`Isa::Sse2`] runs instead.
    Portable,
    /// x86-64 without AVX2 or FMA: the portable loops with the multiply and the add rounded
    /// apart ([`Unfused`]), which the compiler vectorizes for SSE2, the x86-64 baseline.
    /// The one tier whose bits differ from the others' (see [`Isa::fused`]).
    Sse2,
    /// aarch64 with NEON (Advanced SIMD, 4 lanes, fused multiply-add).
    Neon,
    /// x86-64 with AVX2 and FMA (8 lanes).
    Avx2,
    /// x86-64 with AVX-512F and FMA (16 lanes).
    Avx512,
}

/// The environment variable that forces a tier.
pub const ISA_VARIABLE: &str = "HASTE_ISA";

impl Isa {
    /// Every tier, most portable first.
    pub const ALL: [Isa; 5] = [Isa::Portable, Isa::Sse2, Isa::Neon, Isa::Avx2, Isa::Avx512];

    /// The name `HASTE_ISA` and `bench --json` use.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Sse2 => "sse2",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The tier called `name`, if any.
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether this CPU can run the tier.
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Sse2 => true,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Whether the tier's multiply-adds round once, as [`Isa::Portable`]'s do: then it gives
    /// the portable tier's bits. Only [`Isa::Sse2`] rounds the product and the sum apart;
    /// its results differ from the others' by a few units in the last place of each term
    /// (the kernel tests bound it).
    pub fn fused(self) -> bool {
        self != Isa::Sse2
    }

    /// The tiers this CPU supports, most portable first (what the kernel tests run over).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported()).collect()
    }

    /// The widest tier this CPU supports.
    pub fn best() -> Isa {
        Isa::available().into_iter().last().unwrap_or(Isa::Portable)
    }

    /// The tier `HASTE_ISA` asks for (`None` when unset or empty), checked against the CPU.
    pub fn from_environment() -> Result<Option<Isa>> {
        let Ok(value) = std::env::var(ISA_VARIABLE) else {
            return Ok(None);
        };
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
        let isa = Isa::from_name(value).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{ISA_VARIABLE}={value}: unknown tier (one of {})",
                names.join(", ")
            ))
        })?;
        if !isa.supported() {
            let have: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
            return Err(Error::InvalidArgument(format!(
                "{ISA_VARIABLE}={value}: this CPU does not support it (it supports {})",
                have.join(", ")
            )));
        }
        Ok(Some(isa))
    }

    /// Fails with a one-line message when `HASTE_ISA` names a tier that cannot run here.
    pub fn check_environment() -> Result<()> {
        Isa::from_environment().map(|_| ())
    }

    /// The tier every kernel runs: `HASTE_ISA`'s when it is valid, else [`Isa::best`]. Read
    /// once per process.
    pub fn current() -> Isa {
        static CURRENT: OnceLock<Isa> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            Isa::from_environment()
                .ok()
                .flatten()
                .unwrap_or_else(Isa::best)
        })
    }
}

/// How a tier's plain-Rust loops compute `a * b + c`: the portable kernels are generic over
/// it, so the tiers with FMA hardware and the reference keep one rounding and [`Isa::Sse2`]
/// gets loops the compiler can vectorize without it.
pub trait MulAdd {
    fn madd(a: f32, b: f32, c: f32) -> f32;
}

/// `f32::mul_add`: one rounding; one instruction where the CPU has FMA, a library call where
/// it has not.
pub struct Fused;

/// `a * b + c`: two roundings, two vector instructions on any CPU.
pub struct Unfused;

impl MulAdd for Fused {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Unfused {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// How far [`Isa::Sse2`]'s results may lie from the fused tiers' in the kernel tests,
/// relative to the larger of 1 and the value: each term of a sum is rounded once more (at
/// most half a unit in its last place), a few thousand terms of at most unit size.
#[cfg(test)]
pub(crate) const UNFUSED_TOLERANCE: f32 = 1e-4;

/// For the kernel tests: `got`, computed on tier `isa`, has the bits of `want` (the portable
/// tier's, the running tier's, or one fused chain per output) where both tiers fuse their
/// multiply-adds, and lies within [`UNFUSED_TOLERANCE`] of it where either is [`Isa::Sse2`]
/// (NaN where `want` has NaN, of any payload).
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_tier_result(
    isa: Isa,
    got: &[f32],
    want: &[f32],
    what: &dyn std::fmt::Display,
) {
    assert_eq!(got.len(), want.len(), "{isa} {what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = g.to_bits() == w.to_bits()
            || (g.is_nan() && w.is_nan())
            || (!(isa.fused() && Isa::current().fused())
                && (g - w).abs() <= UNFUSED_TOLERANCE * w.abs().max(1.0));
        assert!(ok, "{isa} {what}: value {i} is {g}, want {w}");
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_portable_is_always_there() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse9"), None);
        assert!(Isa::available().contains(&Isa::Portable));
        assert!(Isa::best().supported());
        assert!(Isa::current().supported());
    }

    #[test]
    fn each_architecture_has_its_own_tiers() {
        assert!(!(Isa::Neon.supported() && Isa::Avx2.supported()));
        #[cfg(target_arch = "aarch64")]
        assert_eq!(Isa::best(), Isa::Neon, "every aarch64 Linux CPU has NEON");
    }

    #[test]
    fn wider_tiers_imply_the_narrower_ones_on_x86() {
        // Every AVX-512 CPU haste runs on also has AVX2 + FMA; the tests rely on reaching
        // each tier below the best one.
        if Isa::Avx512.supported() {
            assert!(Isa::Avx2.supported());
        }
    }
}
