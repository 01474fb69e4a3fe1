//! Division by a run-time constant with a multiply and a shift.
//!
//! The index kernels (permutes, window gathers, broadcasts) split every output index into
//! coordinates by a handful of u32 divisions. A u32 `div` is a ~20-instruction software sequence
//! on NVIDIA GPUs, so these memory-bound kernels were bound by integer arithmetic instead (the
//! permute moved 0.74 TB/s of the H200's 4.1). [`FastDiv`] is computed once per thread and
//! reused for every element the thread's grid-stride loop visits.
//!
//! The method is Granlund and Montgomery's ("Division by invariant integers using
//! multiplication", 1994) in the form for numerators below 2^31: with `l = ceil(log2 d)` and
//! `m = floor(2^32 (2^l - d) / d) + 1`, `n / d = (mulhi(m, n) + n) >> l`.

/// `d` (>= 1) and its multiplier and shift. Numerators must be below 2^31 (callers keep element
/// counts below 2^31).
#[derive(Clone, Copy, Debug)]
pub struct FastDiv {
    d: u32,
    m: u32,
    l: u32,
}

impl FastDiv {
    #[inline(always)]
    pub fn new(d: u32) -> FastDiv {
        // d = 0 would be a broken caller; treat it as 1 rather than divide by zero on the device.
        let d = d.max(1);
        let l = 32 - (d - 1).leading_zeros();
        let m = (((1u64 << 32) * ((1u64 << l) - d as u64)) / d as u64) as u32 + 1;
        FastDiv { d, m, l }
    }

    /// `n / d`.
    #[inline(always)]
    pub fn div(&self, n: u32) -> u32 {
        let t = ((self.m as u64 * n as u64) >> 32) as u32;
        ((t as u64 + n as u64) >> self.l) as u32
    }

    /// `(n / d, n % d)`.
    #[inline(always)]
    pub fn divmod(&self, n: u32) -> (u32, u32) {
        let q = self.div(n);
        (q, n - q * self.d)
    }
}
