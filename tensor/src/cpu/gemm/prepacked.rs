//! A right operand packed once for the f32 kernels. At inference a linear layer's weight is the
//! same B in every call, and `driver::blocked` would pack it again each time: a transpose of the
//! whole weight, 8% of a batch-1 forward on Zen 3. Packed here once, in the panels `blocked`
//! packs (for each depth block of KC, n.div_ceil(NR) panels of kc x NR, zero-padded), the
//! product reads them in place. Same values, same kernel, same order: the same bits.

use super::driver::{line_ptr, Line, KC};
use super::pack::pack;
use super::{kernels, Isa};

/// B (k x n) in the f32 panels of one kernel's width.
pub struct PackedF32 {
    k: usize,
    n: usize,
    /// The panel width (the kernel's NR) these panels are for.
    nr: usize,
    /// Start of each depth block in `data`, in floats.
    blocks: Vec<usize>,
    data: Vec<Line>,
    /// Its values were rounded to bf16 ([`PackedF32::new_bf16_rounded`]): only products of the
    /// bf16 precision on the f32 kernel ([`Isa::Bf16OnFma`]) read them, and only they.
    bf16_rounded: bool,
}

impl std::fmt::Debug for PackedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (k, n, nr, rounded) = (self.k, self.n, self.nr, self.bf16_rounded);
        write!(f, "PackedF32 {{ k: {k}, n: {n}, nr: {nr}, bf16_rounded: {rounded} }}")
    }
}

impl PackedF32 {
    /// Packs B (element (p, j) at `b[p * b_rs + j * b_cs]`) for `isa`'s f32 kernel; None for the
    /// bf16 kernels (they have their own, `bf16::PackedB`), an ISA this CPU lacks, or k = 0.
    ///
    /// Panics if `b` is too short for the sizes and strides (a caller bug).
    pub fn new(isa: Isa, k: usize, n: usize, b: &[f32], b_rs: usize, b_cs: usize) -> Option<PackedF32> {
        if isa.is_bf16() || !isa.available() || k == 0 || n == 0 {
            return None;
        }
        assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs, "PackedF32: B too short");
        let nr = isa.tile().1;
        let mut blocks = Vec::new();
        let mut total = 0;
        for pc in (0..k).step_by(KC) {
            blocks.push(total);
            total += n.div_ceil(nr) * nr * KC.min(k - pc);
        }
        let mut data = Vec::new();
        let dst = line_ptr(&mut data, total);
        let fast = Isa::Avx512.available();
        for (i, pc) in (0..k).step_by(KC).enumerate() {
            let (kc, src) = (KC.min(k - pc), b[pc * b_rs..].as_ptr());
            // SAFETY: the assert keeps every element of B read in bounds, and each depth block
            // has room for its panels; `fast` only where the CPU has AVX-512.
            unsafe {
                let d = dst.add(blocks[i]);
                match nr {
                    #[cfg(target_arch = "x86_64")]
                    kernels::avx512::NR => pack::<{ kernels::avx512::NR }>(n, kc, src, b_cs, b_rs, d, fast),
                    #[cfg(target_arch = "x86_64")]
                    kernels::avx2::NR => pack::<{ kernels::avx2::NR }>(n, kc, src, b_cs, b_rs, d, fast),
                    kernels::generic::NR => pack::<{ kernels::generic::NR }>(n, kc, src, b_cs, b_rs, d, fast),
                    _ => unreachable!("no f32 kernel is {nr} wide"),
                }
            }
        }
        Some(PackedF32 { k, n, nr, blocks, data, bf16_rounded: false })
    }

    /// B rounded to bf16 and packed for the f32 AVX-512 kernel, the weight of a linear layer for
    /// [`Isa::Bf16OnFma`] (rounded once, not in every product); None without that ISA or for
    /// k = 0.
    pub fn new_bf16_rounded(k: usize, n: usize, b: &[f32], b_rs: usize, b_cs: usize) -> Option<PackedF32> {
        #[cfg(target_arch = "x86_64")]
        if Isa::Bf16OnFma.available() && k > 0 && n > 0 {
            let rounded = super::bf16_fma::rounded(k, n, b, b_rs, b_cs);
            let packed = PackedF32::new(Isa::Avx512, k, n, &rounded, n, 1)?;
            return Some(PackedF32 { bf16_rounded: true, ..packed });
        }
        let _ = (k, n, b, b_rs, b_cs);
        None
    }

    /// (k, n) of the packed operand.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// Whether the values were rounded to bf16 ([`PackedF32::new_bf16_rounded`]).
    pub fn bf16_rounded(&self) -> bool {
        self.bf16_rounded
    }

    /// The panel width: the kernel these panels are for is the one whose NR this is.
    pub fn nr(&self) -> usize {
        self.nr
    }

    /// The panel holding column `col` (a multiple of NR) of depth block `pc / KC`.
    pub(super) fn panel(&self, pc: usize, col: usize) -> *const f32 {
        debug_assert!(pc < self.k && col < self.n && col.is_multiple_of(self.nr));
        let kc = KC.min(self.k - pc);
        // SAFETY: in bounds for pc < k and col < n (the panels of a block are contiguous).
        unsafe { (self.data.as_ptr() as *const f32).add(self.blocks[pc / KC] + col / self.nr * self.nr * kc) }
    }
}
