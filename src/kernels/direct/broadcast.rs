//! One output row of the AVX-512 kernel's 64-channel blocks of row filters (HASTE's
//! patches), written out in assembly.

/// `$acc[v] += x * $w[v]` for the four vectors of one output, `x` broadcast from the
/// pointer `$a`: one output row of a 64-channel block of row filters, fused multiply-adds
/// with the bits of `_mm512_fmadd_ps`. Written out so that the broadcast stays next to its
/// multiply-adds: with intrinsics the compiler hoisted a block's six broadcasts ahead of
/// them (each one's address waits on the bucket's slot, loaded in the same iteration), and
/// six broadcast registers, four filter vectors and 24 sums are more than the 32
/// registers: it spilled sums and shuffled the others between registers every term. A
/// macro, not a function: the registers need the caller's AVX-512 feature, and a call
/// would pass the sums through memory.
macro_rules! broadcast_fma4 {
    ($acc:expr, $a:expr, $w:expr) => {
        std::arch::asm!(
            "vbroadcastss {x}, dword ptr [{a}]",
            "vfmadd231ps {s0}, {x}, {w0}",
            "vfmadd231ps {s1}, {x}, {w1}",
            "vfmadd231ps {s2}, {x}, {w2}",
            "vfmadd231ps {s3}, {x}, {w3}",
            a = in(reg) $a,
            x = out(zmm_reg) _,
            s0 = inout(zmm_reg) $acc[0],
            s1 = inout(zmm_reg) $acc[1],
            s2 = inout(zmm_reg) $acc[2],
            s3 = inout(zmm_reg) $acc[3],
            w0 = in(zmm_reg) $w[0],
            w1 = in(zmm_reg) $w[1],
            w2 = in(zmm_reg) $w[2],
            w3 = in(zmm_reg) $w[3],
            options(nostack, preserves_flags, readonly),
        )
    };
}

pub(super) use broadcast_fma4;
