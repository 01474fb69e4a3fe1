//! Single-precision GEMM: packed panels, cache blocking and register-tiled microkernels, with
//! the instruction set picked at run time (AVX-512F, AVX2+FMA, or portable Rust), rayon
//! threads for large products, and an optional fused bias + activation output pass.
//!
//! With [`set_matmul_precision`]`(Bf16)` (torch's `set_float32_matmul_precision("medium")`)
//! every product rounds its operands to bf16 and accumulates in f32 on AVX512-BF16 (`bf16`),
//! where the CPU has it; elsewhere the f32 kernels stay.
//!
//! Where the CPU has AMX (Intel Xeon from Sapphire Rapids on), those products run on its tiles
//! (`amx`) instead. On Intel cores without AMX, whose `vdpbf16ps` runs at less than half the f32
//! FMA rate, the bf16-rounded operands are multiplied on the f32 kernel (`bf16_fma`).
//!
//! Layout: `driver` holds the loop nest and the thread split, `pack` the panel packing,
//! `kernels` the microkernels, `small` the unpacked path of small products (the same
//! bits as the loop nest), `bf16` the bf16 packing, kernel and loop, `amx` the tile loop,
//! `bf16_fma` the rounding of bf16 operands for the f32 kernel.

#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
pub mod bf16;
#[cfg(target_arch = "x86_64")]
mod bf16_fma;
mod driver;
pub mod kernels;
pub mod pack;
mod prepacked;
#[cfg(target_arch = "x86_64")]
mod small;
#[cfg(test)]
mod tests;
/// f64 references shared with the matmul tests.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::tests::act_ref;
}

pub use crate::ops::Activation;
use driver::Problem;
pub use prepacked::PackedF32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Below this many multiply-adds a product runs on the calling thread: waking workers would
/// cost more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 19;

/// The instruction sets with a microkernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2Fma,
    Generic,
    /// Operands rounded to bf16, f32 accumulation (`vdpbf16ps`): chosen by the matmul
    /// precision, never by [`Isa::detect`], since it changes the numbers.
    Avx512Bf16,
    /// The same rounding on AMX tiles (`tdpbf16ps`), for depths that are a multiple of 32 (the
    /// others take [`Isa::Avx512Bf16`]); preferred to it by the bf16 precision where present.
    Amx,
    /// The same rounding, the products on the f32 AVX-512 kernel: a product of two bf16 values
    /// is exact in f32, so this is the same arithmetic as [`Isa::Avx512Bf16`] summed in another
    /// order. Preferred to it by the bf16 precision on Intel cores without AMX, which run
    /// `vdpbf16ps` at less than half their f32 FMA rate (see [`bf16_dot_is_slow`]).
    Bf16OnFma,
}

/// Whether this CPU's `vdpbf16ps` (32 multiply-adds an instruction) does fewer multiply-adds a
/// cycle than its f32 FMA (16 an instruction): Intel cores issue it on one port, the FMA on two.
/// Measured with `profile::peak`: a 2-core Xeon (family 6, model 207, no AMX) 164 against 348
/// GFLOP/s, the AMX Xeon of issue #12 108 against 213 a core; AMD Zen 4 467 against 234. Decided
/// by the vendor, not by timing, so a process's bits never depend on the machine's load.
pub fn bf16_dot_is_slow() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static INTEL: OnceLock<bool> = OnceLock::new();
        *INTEL.get_or_init(|| {
            let id = std::arch::x86_64::__cpuid(0);
            let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
            vendor == b"GenuineIntel"
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The precision of every f32 product: [`MatmulPrecision::F32`] (the default) or bf16 operands
/// with f32 accumulation, where the CPU has AVX512-BF16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulPrecision {
    F32,
    Bf16,
}

static BF16_PRODUCTS: AtomicBool = AtomicBool::new(false);

/// Sets the precision of every later product in this process (all threads).
pub fn set_matmul_precision(p: MatmulPrecision) {
    BF16_PRODUCTS.store(p == MatmulPrecision::Bf16, Ordering::Relaxed);
}

/// The precision set by [`set_matmul_precision`].
pub fn matmul_precision() -> MatmulPrecision {
    if BF16_PRODUCTS.load(Ordering::Relaxed) {
        MatmulPrecision::Bf16
    } else {
        MatmulPrecision::F32
    }
}

impl Isa {
    /// The best instruction set this CPU supports (detected once).
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| [Isa::Avx512, Isa::Avx2Fma].into_iter().find(|i| i.available()).unwrap_or(Isa::Generic))
    }

    /// The kernel products run on at `precision`: bf16 falls back to the f32 kernels on CPUs
    /// without AVX512-BF16.
    pub fn for_precision(precision: MatmulPrecision) -> Isa {
        match precision {
            MatmulPrecision::Bf16 if Isa::Amx.available() => Isa::Amx,
            MatmulPrecision::Bf16 if Isa::Avx512Bf16.available() && bf16_dot_is_slow() => Isa::Bf16OnFma,
            MatmulPrecision::Bf16 if Isa::Avx512Bf16.available() => Isa::Avx512Bf16,
            _ => Isa::detect(),
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 | Isa::Bf16OnFma => {
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => amx::available(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            Isa::Generic => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Whether products on this kernel round their operands to bf16.
    pub fn is_bf16(self) -> bool {
        matches!(self, Isa::Avx512Bf16 | Isa::Amx | Isa::Bf16OnFma)
    }

    /// Whether its multiply-adds run on bf16 pairs (`vdpbf16ps`, `tdpbf16ps`; their own peak),
    /// not on the f32 FMA.
    pub fn multiplies_bf16_pairs(self) -> bool {
        matches!(self, Isa::Avx512Bf16 | Isa::Amx)
    }

    /// Microkernel tile (MR rows, NR columns).
    pub fn tile(self) -> (usize, usize) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Bf16OnFma => (kernels::avx512::MR, kernels::avx512::NR),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => (kernels::avx2::MR, kernels::avx2::NR),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => (bf16::MR, bf16::NR),
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => (amx::MR, bf16::NR),
            _ => (kernels::generic::MR, kernels::generic::NR),
        }
    }
}

/// Options of [`sgemm_with`] beyond the operands.
#[derive(Debug, Clone, Copy)]
pub struct GemmOpts<'a> {
    /// Add the product to C instead of overwriting it.
    pub accumulate: bool,
    /// Per-column bias (length n), added in the output pass.
    pub bias: Option<&'a [f32]>,
    /// Activation applied in the output pass, after the bias.
    pub act: Activation,
    /// The backward of that activation instead: with `Some(g)` the output pass writes
    /// `g ⊙ act'(z)`, z = A·B (+ C) + bias, never storing z. `g` is laid out as C (`ldc`).
    pub act_grad: Option<&'a [f32]>,
    /// Multiply the result elementwise by these values (laid out as C, `ldc`) at the end of the
    /// output pass: `(A·B) ⊙ s` without storing A·B (a backward's `(g w) ⊙ f'(z)`).
    pub scale: Option<&'a [f32]>,
    /// Add these values (laid out as C, `ldc`) last in the output pass: `r + (A·B + bias)`, a
    /// residual connection after a linear layer without a separate pass (and the same bits).
    pub residual: Option<&'a [f32]>,
    /// May use rayon threads (large products only). Off inside an outer parallel loop.
    pub parallel: bool,
    /// Force an instruction set (tests, benchmarks); `None` picks the best available at the
    /// process's [`matmul_precision`].
    pub isa: Option<Isa>,
    /// B already packed for the bf16 kernel (used when that kernel runs and the sizes match;
    /// `b` must still be the same operand, for the other kernels).
    #[cfg(target_arch = "x86_64")]
    pub packed_b: Option<&'a bf16::PackedB>,
    /// B already packed for an f32 kernel (used when that kernel runs and the sizes match; `b`
    /// must still be the same operand, for the others).
    pub packed_f32: Option<&'a PackedF32>,
}

impl Default for GemmOpts<'_> {
    fn default() -> Self {
        GemmOpts {
            accumulate: false,
            bias: None,
            act: Activation::None,
            act_grad: None,
            scale: None,
            residual: None,
            parallel: true,
            isa: None,
            #[cfg(target_arch = "x86_64")]
            packed_b: None,
            packed_f32: None,
        }
    }
}

/// C[m,n] (+)= A[m,k] · B[k,n].
/// A element (i,p) is at `a[i*a_rs + p*a_cs]`, B element (p,j) at `b[p*b_rs + j*b_cs]`
/// (so transposed operands are just swapped strides); C is row-major with leading dim `ldc`.
/// With `accumulate` false C is overwritten, else added to.
#[allow(clippy::too_many_arguments)]
#[rustfmt::skip]
pub fn sgemm(
    m: usize, n: usize, k: usize,
    a: &[f32], a_rs: usize, a_cs: usize,
    b: &[f32], b_rs: usize, b_cs: usize,
    c: &mut [f32], ldc: usize,
    accumulate: bool,
) {
    sgemm_with(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, ldc, &GemmOpts { accumulate, ..GemmOpts::default() });
}

/// [`sgemm`] with a fused output pass: C = act(A·B (+ C) + bias), bias broadcast over rows.
/// The bias and activation are applied to each output tile right after its last depth block,
/// while it is still in L1.
///
/// Panics if an operand is too short for the given sizes and strides (a caller bug).
#[allow(clippy::too_many_arguments)]
#[rustfmt::skip]
pub fn sgemm_with(
    m: usize, n: usize, k: usize,
    a: &[f32], a_rs: usize, a_cs: usize,
    b: &[f32], b_rs: usize, b_cs: usize,
    c: &mut [f32], ldc: usize,
    opts: &GemmOpts,
) {
    // SAFETY: C is an initialised slice of c.len() values.
    unsafe { sgemm_raw(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c.as_mut_ptr(), c.len(), ldc, opts) }
}

/// [`sgemm_with`] into a new row-major `[m, n]` buffer that is never zero-filled: the product
/// writes every element, so the allocator's zeroing (a whole extra pass over C, the larger
/// part of the time of a product with k = 128) is skipped. `opts.accumulate` must be false.
#[allow(clippy::too_many_arguments)]
#[rustfmt::skip]
pub fn sgemm_new(
    m: usize, n: usize, k: usize,
    a: &[f32], a_rs: usize, a_cs: usize,
    b: &[f32], b_rs: usize, b_cs: usize,
    opts: &GemmOpts,
) -> Vec<f32> {
    assert!(!opts.accumulate, "sgemm_new: a new C has nothing to accumulate into");
    if k == 0 {
        // The output pass alone (bias, activation) on zeros: the plain path does it.
        let mut c = vec![0.0; m * n];
        sgemm_with(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, &mut c, n, opts);
        return c;
    }
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: with k > 0 and no accumulation every element of C is written (each depth block
    // after the first and the output pass only read what the first block wrote), and nothing
    // forms a reference to C before that; then all m * n values are initialised.
    unsafe {
        sgemm_raw(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c.as_mut_ptr(), m * n, n, opts);
        c.set_len(m * n);
    }
    c
}

/// The product into C at `c` (`c_len` values, which need not be initialised unless
/// `opts.accumulate`).
///
/// # Safety
/// `c` must be valid for writes (and, with accumulate, reads) of `c_len` values.
#[allow(clippy::too_many_arguments)]
#[rustfmt::skip]
pub(crate) unsafe fn sgemm_raw(
    m: usize, n: usize, k: usize,
    a: &[f32], a_rs: usize, a_cs: usize,
    b: &[f32], b_rs: usize, b_cs: usize,
    c: *mut f32, c_len: usize, ldc: usize,
    opts: &GemmOpts,
) {
    if m == 0 || n == 0 {
        return;
    }
    let extent = |rows: usize, rs: usize, cols: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(m == 1 || ldc >= n, "sgemm: ldc {ldc} < n {n}");
    assert!(c_len >= extent(m, ldc, n, 1), "sgemm: C too short");
    if k > 0 {
        assert!(a.len() >= extent(m, a_rs, k, a_cs), "sgemm: A too short");
        assert!(b.len() >= extent(k, b_rs, n, b_cs), "sgemm: B too short");
    }
    if let Some(bias) = opts.bias {
        assert!(bias.len() >= n, "sgemm: bias shorter than n");
    }
    if let Some(g) = opts.act_grad {
        assert!(g.len() >= extent(m, ldc, n, 1), "sgemm: act_grad shorter than C");
    }
    if let Some(s) = opts.scale {
        assert!(s.len() >= extent(m, ldc, n, 1), "sgemm: scale shorter than C");
    }
    if let Some(r) = opts.residual {
        assert!(r.len() >= extent(m, ldc, n, 1), "sgemm: residual shorter than C");
    }
    let isa = opts.isa.unwrap_or_else(|| Isa::for_precision(matmul_precision()));
    assert!(isa.available(), "sgemm: {isa:?} is not supported by this CPU");
    let threads = if opts.parallel && m * n * k >= PARALLEL_MIN_WORK { rayon::current_num_threads() } else { 1 };
    // The operands' layouts as the caller gave them (for the profile).
    let given_strides = [(a_rs, a_cs), (b_rs, b_cs)];
    // bf16 operands on the f32 kernel: the product reads a rounded copy of A, and of B unless
    // B's panels were packed rounded (a linear layer's weight at inference).
    #[cfg(target_arch = "x86_64")]
    let rounded_a = if isa == Isa::Bf16OnFma && k > 0 { bf16_fma::rounded(m, k, a, a_rs, a_cs) } else { Vec::new() };
    #[cfg(target_arch = "x86_64")]
    let (a, a_rs, a_cs) = if rounded_a.is_empty() { (a, a_rs, a_cs) } else { (rounded_a.as_slice(), k, 1) };
    #[cfg(target_arch = "x86_64")]
    let rounded_b: Vec<f32>;
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut p = Problem {
        m, n, k,
        a: a.as_ptr(), a_rs, a_cs,
        b: b.as_ptr(), b_rs, b_cs,
        c, ldc,
        accumulate: opts.accumulate,
        bias: opts.bias.map(|b| b.as_ptr()),
        act: opts.act,
        act_grad: opts.act_grad.map(|g| g.as_ptr()),
        scale: opts.scale.map(|s| s.as_ptr()),
        residual: opts.residual.map(|r| r.as_ptr()),
        #[cfg(target_arch = "x86_64")]
        packed_b: opts.packed_b.filter(|pb| pb.dims() == (k, n)).map(|pb| pb as *const bf16::PackedB),
        packed_f32: opts
            .packed_f32
            .filter(|pb| pb.dims() == (k, n) && pb.bf16_rounded() == (isa == Isa::Bf16OnFma))
            .map(|pb| pb as *const PackedF32),
        col0: 0,
    };
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Bf16OnFma && k > 0 && (p.packed_f32.is_none() || small::applies(&p)) {
        rounded_b = bf16_fma::rounded(k, n, b, b_rs, b_cs);
        (p.b, p.b_rs, p.b_cs, p.packed_f32) = (rounded_b.as_ptr(), n, 1, None);
    }
    let fast_pack = Isa::Avx512.available();
    let timer = crate::profile::enabled().then(std::time::Instant::now);
    // SAFETY: the asserts above keep every index in bounds; the kernel's ISA is available.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Amx if k > 0 && k.is_multiple_of(32) => {
                driver::split::<{ amx::MR }, { bf16::NR }>(&p, threads, |sub| amx::serial(sub))
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 | Isa::Amx if k > 0 => {
                use bf16::{serial, MR, NR};
                driver::split::<MR, NR>(&p, threads, |sub| serial(sub))
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Bf16OnFma if small::applies(&p) => small::avx512::run(&p),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx | Isa::Bf16OnFma => {
                use kernels::avx512::{KERNELS, MR, NR};
                driver::run::<MR, NR>(KERNELS, &p, threads, fast_pack)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma if small::applies(&p) => small::avx2::run(&p),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                use kernels::avx2::{KERNELS, MR, NR};
                driver::run::<MR, NR>(KERNELS, &p, threads, fast_pack)
            }
            _ => {
                use kernels::generic::{KERNELS, MR, NR};
                driver::run::<MR, NR>(KERNELS, &p, threads, fast_pack)
            }
        }
    }
    if let Some(start) = timer {
        let tag = |(row_stride, col_stride): (usize, usize)| match (row_stride, col_stride) {
            (_, 1) => 'N',
            (1, _) => 'T',
            _ => 'S',
        };
        crate::profile::gemm_call(m, n, k, given_strides.map(tag), start.elapsed().as_secs_f64());
    }
}

/// Applies `act` in place to a tile of `rows` rows of `cols` values, `ld` apart (the fused
/// output pass): the same bits as [`activate`] on each row.
///
/// # Safety
/// Each row must be valid for reads and writes, and nothing else may access them meanwhile.
pub unsafe fn activate_tile(act: Activation, c: *mut f32, ld: usize, rows: usize, cols: usize) {
    match act {
        Activation::None => {}
        Activation::Gelu => crate::ops::gelu::gelu_tile_in_place(c, ld, rows, cols),
        Activation::Relu => (0..rows).for_each(|i| activate(act, std::slice::from_raw_parts_mut(c.add(i * ld), cols))),
    }
}

/// `z = g ⊙ act'(z)` in place on a tile (g laid out as z): the same bits as [`activate_grad`]
/// on each row.
///
/// # Safety
/// As for [`activate_tile`], and each row of g must be valid for reads.
pub unsafe fn activate_grad_tile(act: Activation, z: *mut f32, g: *const f32, ld: usize, rows: usize, cols: usize) {
    match act {
        Activation::Gelu => crate::ops::gelu::gelu_backward_tile_in_place(z, g, ld, rows, cols),
        _ => (0..rows).for_each(|i| {
            let zs = std::slice::from_raw_parts_mut(z.add(i * ld), cols);
            activate_grad(act, zs, std::slice::from_raw_parts(g.add(i * ld), cols))
        }),
    }
}

/// Applies `act` in place (the last step of the fused output pass).
pub fn activate(act: Activation, xs: &mut [f32]) {
    match act {
        Activation::None => {}
        Activation::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Gelu => crate::ops::gelu::gelu_in_place(xs),
    }
}

/// `zs[i] = gs[i] * act'(zs[i])` in place (the fused output pass of an activation's backward):
/// the same bits as the activation's backward op on a stored z.
pub fn activate_grad(act: Activation, zs: &mut [f32], gs: &[f32]) {
    match act {
        Activation::None => zs.copy_from_slice(gs),
        Activation::Relu => zs.iter_mut().zip(gs).for_each(|(z, &g)| *z = g * if *z > 0.0 { 1.0 } else { 0.0 }),
        Activation::Gelu => crate::ops::gelu::gelu_backward_in_place(zs, gs),
    }
}
