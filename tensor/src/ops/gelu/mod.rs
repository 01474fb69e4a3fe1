//! GELU, the exact (erf) form x Phi(x), and its derivative Phi(x) + x phi(x), side by side: the
//! scalar functions (the definition, and the tests' reference), the slice and tile loops (the
//! latter the fused GEMM output pass's activation), and the tensor ops `gelu` and
//! `gelu_backward` (the autograd rule is a call to the latter).
//!
//! Two forms, both in f32 and both within a few ulp of the f64 reference:
//! - `table` (CPUs with FMA, that is AVX2 + FMA or AVX-512): piecewise polynomials of Phi and
//!   of gelu' picked per element by a table lookup, explicit vector loops on both ISAs with the
//!   same bits; elements at or below -6 (tiny results) take the pieces form.
//! - `pieces` (every other CPU): erf, exp and erfcx polynomials, branch-free, so that its loops
//!   vectorise on any target; also the reference the table form was measured against.
//!
//! Large tensors run on rayon chunks.
use crate::cpu::parallel::{new_vecs_written, PAR_CHUNK, PAR_MIN};
use crate::profile;
use crate::{CpuStorage, DType, Error, Result, Tensor};

mod coeffs;
mod pieces;
mod table;

/// Exact GELU x Phi(x) in f32: the table form when `FMA` (what the vector loops of CPUs with
/// FMA compute, the same bits), else the pieces form unfused; gelu(-inf) = -0, gelu(inf) = inf,
/// NaN stays NaN.
#[inline(always)]
pub fn gelu_f32<const FMA: bool>(x: f32) -> f32 {
    if FMA && !table::needs_pieces(x) {
        table::gelu(x)
    } else {
        pieces::gelu::<FMA>(x)
    }
}

/// d gelu / dx = Phi(x) + x phi(x) in f32, in the form [`gelu_f32`] picks; 1 at +inf, 0 at
/// -inf, NaN stays NaN.
#[inline(always)]
pub fn gelu_grad_f32<const FMA: bool>(x: f32) -> f32 {
    if FMA && !table::needs_pieces(x) {
        table::gelu_grad(x)
    } else {
        pieces::gelu_grad::<FMA>(x)
    }
}

/// Which loops this CPU runs.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Path {
    Avx512,
    Avx2,
    /// The pieces form unfused, in loops the compiler vectorises for the build's target.
    Portable,
}

fn path() -> Path {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Path::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Path::Avx2;
        }
    }
    Path::Portable
}

/// `y = gelu(x)` on `rows` rows of `cols` values, `ld` apart in both (y possibly x): one
/// dispatch, and one load of the tables, per tile (the GEMM output pass calls it per 14 x 32).
///
/// # Safety
/// Each row of x readable and of y writable; nothing else writes them meanwhile.
unsafe fn forward_tile(x: *const f32, y: *mut f32, ld: usize, rows: usize, cols: usize) {
    match path() {
        // SAFETY: the CPU has the ISA (checked by path()); the caller's contract.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { table::avx512::forward(x, y, ld, rows, cols) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { table::avx2::forward(x, y, ld, rows, cols) },
        // SAFETY: the caller's contract.
        _ => unsafe { portable_forward(x, y, ld, rows, cols) },
    }
}

/// `out = g gelu'(x)` on `rows` rows of `cols` values, `ld` apart in all three (out possibly x).
///
/// # Safety
/// Each row of x and g readable and of out writable; nothing else writes them meanwhile.
unsafe fn backward_tile(x: *const f32, g: *const f32, out: *mut f32, ld: usize, rows: usize, cols: usize) {
    match path() {
        // SAFETY: the CPU has the ISA (checked by path()); the caller's contract.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { table::avx512::backward(x, g, out, ld, rows, cols) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { table::avx2::backward(x, g, out, ld, rows, cols) },
        // SAFETY: the caller's contract.
        _ => unsafe { portable_backward(x, g, out, ld, rows, cols) },
    }
}

/// [`forward_tile`] on CPUs without FMA: the pieces form unfused, in plain loops per row that the
/// compiler vectorises for the build's target (with a check for y == x).
///
/// # Safety
/// As for [`forward_tile`].
unsafe fn portable_forward(x: *const f32, y: *mut f32, ld: usize, rows: usize, cols: usize) {
    for r in 0..rows {
        for c in r * ld..r * ld + cols {
            // SAFETY: the caller's contract.
            unsafe { *y.add(c) = pieces::gelu::<false>(*x.add(c)) };
        }
    }
}

/// [`backward_tile`] on CPUs without FMA.
///
/// # Safety
/// As for [`backward_tile`].
unsafe fn portable_backward(x: *const f32, g: *const f32, out: *mut f32, ld: usize, rows: usize, cols: usize) {
    for r in 0..rows {
        for c in r * ld..r * ld + cols {
            // SAFETY: the caller's contract.
            unsafe { *out.add(c) = *g.add(c) * pieces::gelu_grad::<false>(*x.add(c)) };
        }
    }
}

/// `y[i] = gelu(x[i])` and `d[i] = gelu'(x[i])` for n values.
///
/// # Safety
/// x readable and y, d writable for n values, none overlapping; nothing else writes them.
unsafe fn both_row(x: *const f32, y: *mut f32, d: *mut f32, n: usize) {
    match path() {
        // SAFETY: the CPU has the ISA (checked by path()); the caller's contract.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { table::avx512::both(x, y, d, n) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { table::avx2::both(x, y, d, n) },
        // SAFETY: the caller's contract.
        _ => unsafe { portable_both(x, y, d, n) },
    }
}

/// [`both_row`] on CPUs without FMA.
///
/// # Safety
/// As for [`both_row`].
unsafe fn portable_both(x: *const f32, y: *mut f32, d: *mut f32, n: usize) {
    for i in 0..n {
        // SAFETY: the caller's contract. Both from one evaluation of Phi's pieces (the compiler
        // merges the two calls').
        unsafe {
            *y.add(i) = pieces::gelu::<false>(*x.add(i));
            *d.add(i) = pieces::gelu_grad::<false>(*x.add(i));
        }
    }
}

/// `ys[i] = gelu(xs[i])` and `ds[i] = gelu'(xs[i])` on this thread, the same bits as
/// [`gelu_slice`] and [`gelu_backward_slice`] with unit gradients, for less than the cost of two.
pub fn gelu_and_derivative_slice(xs: &[f32], ys: &mut [f32], ds: &mut [f32]) {
    assert!(xs.len() == ys.len() && xs.len() == ds.len(), "gelu_and_derivative_slice: lengths");
    // SAFETY: three slices of one length, ys and ds borrowed mutably (so apart).
    unsafe { both_row(xs.as_ptr(), ys.as_mut_ptr(), ds.as_mut_ptr(), xs.len()) }
}

/// `out[i] = gelu(xs[i])` on this thread.
pub fn gelu_slice(xs: &[f32], out: &mut [f32]) {
    assert_eq!(xs.len(), out.len(), "gelu_slice: lengths");
    // SAFETY: two slices of one length, out borrowed mutably.
    unsafe { forward_tile(xs.as_ptr(), out.as_mut_ptr(), xs.len(), 1, xs.len()) }
}

/// GELU in place: the same loops and bits as [`gelu_slice`].
pub fn gelu_in_place(xs: &mut [f32]) {
    let (n, p) = (xs.len(), xs.as_mut_ptr());
    // SAFETY: one slice, read and written in place, borrowed mutably for the call.
    unsafe { forward_tile(p, p, n, 1, n) }
}

/// GELU in place on a tile of `rows` rows of `cols` values, `ld` apart (the GEMM output pass's
/// activation): [`gelu_slice`]'s loop on each row. Called rather than inlined into the output
/// pass, whose code is compiled for baseline x86-64.
///
/// # Safety
/// Each row must be valid for reads and writes, and nothing else may access them meanwhile.
pub unsafe fn gelu_tile_in_place(c: *mut f32, ld: usize, rows: usize, cols: usize) {
    // SAFETY: the caller's contract.
    unsafe { forward_tile(c, c, ld, rows, cols) }
}

/// `z = g * gelu'(z)` in place on a tile (`rows` rows of `cols` values, `ld` apart, g laid out
/// alike): the fused output pass of a linear layer's GELU backward (the GEMM recomputes z tile
/// by tile). [`gelu_backward_slice`]'s loop on each row.
///
/// # Safety
/// Each row of z must be valid for reads and writes and each row of g for reads; nothing else
/// may write them meanwhile.
pub unsafe fn gelu_backward_tile_in_place(z: *mut f32, g: *const f32, ld: usize, rows: usize, cols: usize) {
    // SAFETY: the caller's contract.
    unsafe { backward_tile(z, g, z, ld, rows, cols) }
}

/// `out[i] = gs[i] * gelu'(xs[i])` on this thread.
pub fn gelu_backward_slice(xs: &[f32], gs: &[f32], out: &mut [f32]) {
    assert!(xs.len() == out.len() && gs.len() == out.len(), "gelu_backward_slice: lengths");
    // SAFETY: three slices of one length, out borrowed mutably.
    unsafe { backward_tile(xs.as_ptr(), gs.as_ptr(), out.as_mut_ptr(), xs.len(), 1, xs.len()) }
}

/// `zs[i] = gs[i] * gelu'(zs[i])` in place: the same loops and bits as [`gelu_backward_slice`].
pub fn gelu_backward_in_place(zs: &mut [f32], gs: &[f32]) {
    assert_eq!(zs.len(), gs.len(), "gelu_backward_in_place: lengths");
    let (n, p) = (zs.len(), zs.as_mut_ptr());
    // SAFETY: zs read and written in place (borrowed mutably), gs as long and shared.
    unsafe { backward_tile(p, gs.as_ptr(), p, n, 1, n) }
}

/// The loops over rayon chunks when large, straight into the new outputs (no zeroing first).
fn forward_par(xs: &[f32]) -> Vec<f32> {
    // SAFETY: forward_tile writes every value of each chunk and reads only xs.
    let ([ys], _) = unsafe {
        new_vecs_written(xs.len(), PAR_CHUNK, xs.len() >= PAR_MIN, |s, [y]| {
            let n = y.len();
            forward_tile(xs[s..s + n].as_ptr(), y.as_mut_ptr().cast(), n, 1, n)
        })
    };
    ys
}

fn backward_par(xs: &[f32], gs: &[f32]) -> Vec<f32> {
    // SAFETY: backward_tile writes every value of each chunk and reads only xs and gs.
    let ([out], _) = unsafe {
        new_vecs_written(xs.len(), PAR_CHUNK, xs.len() >= PAR_MIN, |s, [o]| {
            let n = o.len();
            backward_tile(xs[s..s + n].as_ptr(), gs[s..s + n].as_ptr(), o.as_mut_ptr().cast(), n, 1, n)
        })
    };
    out
}

fn both_par(xs: &[f32]) -> (Vec<f32>, Vec<f32>) {
    // SAFETY: both_row writes every value of both chunks and reads only xs.
    let ([ys, ds], _) = unsafe {
        new_vecs_written(xs.len(), PAR_CHUNK, xs.len() >= PAR_MIN, |s, [y, d]| {
            let n = y.len();
            both_row(xs[s..s + n].as_ptr(), y.as_mut_ptr().cast(), d.as_mut_ptr().cast(), n)
        })
    };
    (ys, ds)
}

/// The contiguous f32 data of `t`, borrowed when it already is that, else converted.
fn f32_data(t: &Tensor) -> Result<std::borrow::Cow<'_, [f32]>> {
    if let (CpuStorage::F32(v), Some(r)) = (t.cpu_storage()?, t.layout().contiguous_range()) {
        return Ok(std::borrow::Cow::Borrowed(&v[r]));
    }
    Ok(std::borrow::Cow::Owned(t.to_f32_vec()?))
}

fn expect_gelu_float(op: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        dtype => Err(Error::UnsupportedDType { op, dtype }),
    }
}

impl Tensor {
    /// Exact (erf) GELU, in f32 (f16/bf16 widened and rounded back).
    pub fn gelu(&self) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Gelu, 0.0, profile::f32_traffic(self.elem_count(), 1));
        expect_gelu_float("gelu", self)?;
        let y = Tensor::from_vec(forward_par(&f32_data(self)?), self.shape())?;
        Ok(if self.dtype() == DType::F32 { y } else { y.to_dtype(self.dtype()) })
    }

    /// `(gelu(self), gelu'(self))` in one pass, each the same bits as [`Tensor::gelu`] and
    /// [`Tensor::gelu_backward`] of a unit gradient: for a backward that needs the GELU's output
    /// again (recomputed, not stored) as well as its derivative.
    pub fn gelu_and_derivative(&self) -> Result<(Tensor, Tensor)> {
        let _prof = profile::op(profile::Kind::Gelu, 0.0, profile::f32_traffic(self.elem_count(), 2));
        expect_gelu_float("gelu_and_derivative", self)?;
        let (y, d) = both_par(&f32_data(self)?);
        let (y, d) = (Tensor::from_vec(y, self.shape())?, Tensor::from_vec(d, self.shape())?);
        Ok(if self.dtype() == DType::F32 { (y, d) } else { (y.to_dtype(self.dtype()), d.to_dtype(self.dtype())) })
    }

    /// The GELU backward: `grad * gelu'(self)` with `self` the forward's input, in f32, in the
    /// input's dtype. `grad` must have the input's shape and dtype.
    pub fn gelu_backward(&self, grad: &Tensor) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Gelu, 0.0, profile::f32_traffic(self.elem_count(), 2));
        const OP: &str = "gelu_backward";
        expect_gelu_float(OP, self)?;
        if grad.shape() != self.shape() {
            return Err(Error::ShapeMismatch { op: OP, lhs: self.shape().to_vec(), rhs: grad.shape().to_vec() });
        }
        if grad.dtype() != self.dtype() {
            return Err(Error::DTypeMismatch { op: OP, lhs: self.dtype(), rhs: grad.dtype() });
        }
        let dx = Tensor::from_vec(backward_par(&f32_data(self)?, &f32_data(grad)?), self.shape())?;
        Ok(if self.dtype() == DType::F32 { dx } else { dx.to_dtype(self.dtype()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gelu_f64, gelu_grad_f64};

    /// Every 1e-3 in [-20, 20], a stride through all finite f32, and the edges.
    fn sweep() -> Vec<f32> {
        let mut xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 1e-3).collect();
        xs.extend((0..0x7f80_0000u32).step_by(4099).flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)]));
        xs.extend([1.06066, -1.06066, f32::MAX, f32::MIN, 1e-30, -1e-40]);
        xs
    }

    /// Both variants, unfused (the portable path) and fused (the vector paths).
    #[test]
    fn gelu_f32_against_f64_reference() {
        for (fma, gelu) in [(false, gelu_f32::<false> as fn(f32) -> f32), (true, gelu_f32::<true>)] {
            let (mut worst_rel, mut worst_abs) = (0.0f64, 0.0f64);
            for x in sweep() {
                let (got, want) = (gelu(x) as f64, gelu_f64(x as f64));
                // Below the normal range (x < -13.2) the error is counted in absolute terms.
                if want.abs() >= f32::MIN_POSITIVE as f64 {
                    worst_rel = worst_rel.max(((got - want) / want).abs());
                } else {
                    worst_abs = worst_abs.max((got - want).abs());
                }
            }
            assert!(worst_rel <= 6e-7, "gelu (fma {fma}) max rel error {worst_rel:e}");
            assert!(worst_abs <= 1e-44, "gelu (fma {fma}) max abs error below the normal range {worst_abs:e}");
            println!("gelu_f32 (fma {fma}): max rel error {worst_rel:e}, below the normal range {worst_abs:e}");
        }
    }

    #[test]
    fn gelu_grad_f32_against_f64_reference() {
        for (fma, grad) in [(false, gelu_grad_f32::<false> as fn(f32) -> f32), (true, gelu_grad_f32::<true>)] {
            let mut worst = 0.0f64;
            for x in sweep() {
                let (got, want) = (grad(x) as f64, gelu_grad_f64(x as f64));
                worst = worst.max((got - want).abs() / want.abs().max(1.0));
            }
            assert!(worst <= 2.5e-7, "gelu' (fma {fma}) max error {worst:e}");
            println!("gelu_grad_f32 (fma {fma}): max error (abs, relative above 1) {worst:e}");
        }
    }

    #[test]
    fn special_values() {
        fn check<const FMA: bool>() {
            let inf = f32::INFINITY;
            assert_eq!(gelu_f32::<FMA>(inf), inf);
            assert!(gelu_f32::<FMA>(-inf) == 0.0 && gelu_f32::<FMA>(-inf).is_sign_negative());
            assert!(gelu_f32::<FMA>(f32::NAN).is_nan() && gelu_grad_f32::<FMA>(f32::NAN).is_nan());
            assert_eq!((gelu_grad_f32::<FMA>(inf), gelu_grad_f32::<FMA>(-inf)), (1.0, 0.0));
            assert_eq!((gelu_f32::<FMA>(0.0), gelu_grad_f32::<FMA>(0.0)), (0.0, 0.5));
        }
        check::<false>();
        check::<true>();
    }

    #[test]
    fn slices_match_the_scalar_functions_bit_for_bit() {
        let xs: Vec<f32> = (0..1003).map(|i| (i as f32 - 501.0) * 0.013).collect();
        let gs: Vec<f32> = xs.iter().map(|x| 1.0 - 0.5 * x).collect();
        let (mut y, mut dx) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
        gelu_slice(&xs, &mut y);
        gelu_backward_slice(&xs, &gs, &mut dx);
        let mut in_place = xs.clone();
        gelu_in_place(&mut in_place);
        let mut grad_in_place = xs.clone();
        gelu_backward_in_place(&mut grad_in_place, &gs);
        assert_eq!(grad_in_place, dx, "gelu_backward_in_place");
        // The scalar variant this CPU's vector path runs (scalar mul_add rounds once, as FMA does).
        let fma = path() != Path::Portable;
        let (gelu, grad) = if fma {
            (gelu_f32::<true> as fn(f32) -> f32, gelu_grad_f32::<true> as fn(f32) -> f32)
        } else {
            (gelu_f32::<false> as fn(f32) -> f32, gelu_grad_f32::<false> as fn(f32) -> f32)
        };
        for i in 0..xs.len() {
            assert_eq!(y[i].to_bits(), gelu(xs[i]).to_bits(), "gelu({}), fma {fma}", xs[i]);
            assert_eq!(in_place[i].to_bits(), y[i].to_bits(), "gelu in place ({})", xs[i]);
            assert_eq!(dx[i].to_bits(), (gs[i] * grad(xs[i])).to_bits(), "gelu'({}), fma {fma}", xs[i]);
        }
    }

    /// Each vector form this CPU can run (AVX-512 and AVX2 alike, whichever the dispatch picks)
    /// gives the scalar table form's bits: interval edges, the table's ends, the elements that
    /// go to the pieces form mixed among others in one vector, specials, and every tail length.
    /// The portable loops give the unfused scalar form's.
    #[test]
    fn every_loop_gives_its_scalar_forms_bits() {
        let mut xs: Vec<f32> = (-30..=30).map(|k| k as f32 * 0.25).collect();
        xs.extend(xs.clone().iter().flat_map(|&e| [e.next_up(), e.next_down()]));
        // Beyond i32 once scaled (the AVX2 lookup must still read inside its table), and the rest.
        xs.extend([f32::MAX, f32::MIN, 3e9, -3e9, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        xs.extend([-0.0, 1e-40, -1e-40, -13.5, -16.5, -100.0]);
        xs.extend((0..997).map(|i| (i as f32 * 0.7548).sin() * 9.0));
        let gs: Vec<f32> = (0..xs.len()).map(|i| 1.0 - i as f32 * 0.003).collect();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let want_y: Vec<f32> = xs.iter().map(|&x| gelu_f32::<true>(x)).collect();
        let want_d: Vec<f32> = xs.iter().map(|&x| gelu_grad_f32::<true>(x)).collect();
        let want_g: Vec<f32> = xs.iter().zip(&gs).map(|(&x, &g)| g * gelu_grad_f32::<true>(x)).collect();
        type Forms = (
            unsafe fn(*const f32, *mut f32, usize, usize, usize),
            unsafe fn(*const f32, *const f32, *mut f32, usize, usize, usize),
        );
        type Both = unsafe fn(*const f32, *mut f32, *mut f32, usize);
        let mut forms: Vec<(&str, Forms, Both)> = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                forms.push(("avx512", (table::avx512::forward, table::avx512::backward), table::avx512::both));
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                forms.push(("avx2", (table::avx2::forward, table::avx2::backward), table::avx2::both));
            }
        }
        for (name, (forward, backward), both) in forms {
            // Every tail length of both vector widths, and the whole input.
            for n in (0..40).chain([xs.len()]) {
                let (mut y, mut d, mut g, mut y2) = (vec![7.0; n], vec![7.0; n], vec![7.0; n], vec![7.0; n]);
                // SAFETY: the CPU has the ISA (checked above); every slice holds n values.
                unsafe {
                    forward(xs.as_ptr(), y.as_mut_ptr(), n, 1, n);
                    backward(xs.as_ptr(), gs.as_ptr(), g.as_mut_ptr(), n, 1, n);
                    both(xs.as_ptr(), y2.as_mut_ptr(), d.as_mut_ptr(), n);
                }
                assert_eq!(bits(&y), bits(&want_y[..n]), "{name} gelu, n = {n}");
                assert_eq!(bits(&y2), bits(&want_y[..n]), "{name} gelu of both, n = {n}");
                assert_eq!(bits(&d), bits(&want_d[..n]), "{name} gelu' of both, n = {n}");
                assert_eq!(bits(&g), bits(&want_g[..n]), "{name} gelu backward, n = {n}");
            }
            // In place, from an offset that leaves the last vector partial.
            let mut z = xs.clone();
            // SAFETY: as above; x and y are the same n values.
            unsafe { forward(z.as_ptr().add(3), z.as_mut_ptr().add(3), xs.len() - 3, 1, xs.len() - 3) };
            assert_eq!(bits(&z[3..]), bits(&want_y[3..]), "{name} gelu in place");
            assert_eq!(bits(&z[..3]), bits(&xs[..3]), "{name} wrote outside its range");
        }
        // The portable loops (CPUs without FMA; not dispatched to on this one) on a tile, in place.
        let (rows, cols, ld) = (7, 151, 160);
        let x: Vec<f32> = (0..rows * ld).map(|i| xs[i % xs.len()]).collect();
        let g: Vec<f32> = (0..rows * ld).map(|i| gs[i % gs.len()]).collect();
        let (mut y, mut dx, mut y2, mut d2) = (x.clone(), x.clone(), x.clone(), x.clone());
        // SAFETY: rows * ld values each; y and dx written in place, y2 and d2 apart from x.
        unsafe {
            portable_forward(y.as_ptr(), y.as_mut_ptr(), ld, rows, cols);
            portable_backward(dx.as_ptr(), g.as_ptr(), dx.as_mut_ptr(), ld, rows, cols);
            portable_both(x.as_ptr(), y2.as_mut_ptr(), d2.as_mut_ptr(), rows * ld);
        }
        for i in 0..rows * ld {
            let inside = i % ld < cols;
            let (wy, wd) =
                if inside { (gelu_f32::<false>(x[i]), g[i] * gelu_grad_f32::<false>(x[i])) } else { (x[i], x[i]) };
            // A NaN's sign may differ with the compiler's operand order: NaN is all it must be.
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            assert!(same(y[i], wy), "portable gelu({}): {} vs {wy}", x[i], y[i]);
            assert!(same(dx[i], wd), "portable gelu backward({}): {} vs {wd}", x[i], dx[i]);
            assert!(same(y2[i], gelu_f32::<false>(x[i])), "portable gelu of both({})", x[i]);
            assert!(same(d2[i], gelu_grad_f32::<false>(x[i])), "portable gelu' of both({})", x[i]);
        }
        // The pieces form is taken exactly where the table ends.
        assert_eq!(gelu_f32::<true>(-6.0).to_bits(), pieces::gelu::<true>(-6.0).to_bits());
        assert_eq!(gelu_f32::<true>((-6.0f32).next_up()).to_bits(), table::gelu((-6.0f32).next_up()).to_bits());
    }

    /// Both at once: the same bits as each alone, on the slice and on a tensor large enough for
    /// the parallel path, specials included.
    #[test]
    fn gelu_and_derivative_match_each_alone_bit_for_bit() {
        let mut xs: Vec<f32> = (0..1003).map(|i| (i as f32 - 501.0) * 0.037).collect();
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 16.5, -16.5, 0.0, -0.0, 1e-40]);
        let (mut y, mut d, mut want_y, mut want_d) =
            (vec![0.0; xs.len()], vec![0.0; xs.len()], vec![0.0; xs.len()], vec![0.0; xs.len()]);
        gelu_and_derivative_slice(&xs, &mut y, &mut d);
        gelu_slice(&xs, &mut want_y);
        gelu_backward_slice(&xs, &vec![1.0; xs.len()], &mut want_d);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&want_y), "gelu");
        assert_eq!(bits(&d), bits(&want_d), "gelu'");
        let x = Tensor::rand_uniform(&[300_007], -9.0, 9.0, 3, DType::F32);
        let (y, d) = x.gelu_and_derivative().unwrap();
        let ones = Tensor::full(1.0, &[300_007], DType::F32);
        assert_eq!(y.to_f32_vec().unwrap(), x.gelu().unwrap().to_f32_vec().unwrap());
        assert_eq!(d.to_f32_vec().unwrap(), x.gelu_backward(&ones).unwrap().to_f32_vec().unwrap());
    }

    /// The tile forms (the GEMM output pass) give the bits of the out-of-place slice forms (their
    /// own loops) on each row and leave the values between rows (another tile's columns) alone.
    #[test]
    fn tile_forms_equal_the_slice_forms_row_by_row() {
        let (rows, cols, ld) = (5, 13, 20);
        let mut xs: Vec<f32> = (0..rows * ld).map(|i| (i as f32 - 50.0) * 0.21).collect();
        xs[3] = f32::NAN;
        xs[ld + 1] = -16.5;
        let gs: Vec<f32> = (0..rows * ld).map(|i| 1.0 - i as f32 * 0.017).collect();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let (mut want, mut want_grad) = (xs.clone(), xs.clone());
        for i in 0..rows {
            let (x, g) = (&xs[i * ld..][..cols], &gs[i * ld..][..cols]);
            gelu_slice(x, &mut want[i * ld..][..cols]);
            gelu_backward_slice(x, g, &mut want_grad[i * ld..][..cols]);
        }
        let (mut got, mut got_grad) = (xs.clone(), xs.clone());
        // SAFETY: rows * ld values, each row of cols values in bounds; nothing else accesses them.
        unsafe {
            gelu_tile_in_place(got.as_mut_ptr(), ld, rows, cols);
            gelu_backward_tile_in_place(got_grad.as_mut_ptr(), gs.as_ptr(), ld, rows, cols);
        }
        assert_eq!(bits(&got), bits(&want), "gelu");
        assert_eq!(bits(&got_grad), bits(&want_grad), "gelu backward");
        assert_eq!(bits(&got[cols..ld]), bits(&xs[cols..ld]), "a value outside the tile changed");
    }

    #[test]
    fn large_tensors_run_parallel_and_match() {
        // Big enough for the rayon path.
        let n = 200_003;
        let x = Tensor::rand_uniform(&[n], -9.0, 9.0, 7, DType::F32);
        let g = Tensor::rand_uniform(&[n], -1.0, 1.0, 8, DType::F32);
        let (xs, gs) = (x.to_f64_vec().unwrap(), g.to_f64_vec().unwrap());
        let y = x.gelu().unwrap().to_f64_vec().unwrap();
        let dx = x.gelu_backward(&g).unwrap().to_f64_vec().unwrap();
        let want: Vec<f64> = xs.iter().map(|&v| gelu_f64(v)).collect();
        assert_close(&y, &want, 6e-7, 1e-37, "gelu");
        let want: Vec<f64> = xs.iter().zip(&gs).map(|(&v, &g)| g * gelu_grad_f64(v)).collect();
        assert_close(&dx, &want, 4e-7, 2e-7, "gelu_backward");
    }

    #[test]
    fn backward_of_views_and_half_precision() {
        let x = Tensor::rand_uniform(&[6, 5], -4.0, 4.0, 1, DType::F32).t().unwrap();
        let g = Tensor::rand_uniform(&[5, 6], -1.0, 1.0, 2, DType::F32);
        let dx = x.gelu_backward(&g).unwrap();
        let (xs, gs) = (x.to_f64_vec().unwrap(), g.to_f64_vec().unwrap());
        let want: Vec<f64> = xs.iter().zip(&gs).map(|(&v, &g)| g * gelu_grad_f64(v)).collect();
        assert_close(&dx.to_f64_vec().unwrap(), &want, 4e-7, 2e-7, "gelu_backward of a transposed view");
        let (xh, gh) = (x.to_dtype(DType::BF16), g.to_dtype(DType::BF16));
        let dxh = xh.gelu_backward(&gh).unwrap();
        assert_eq!(dxh.dtype(), DType::BF16);
        let (xs, gs) = (xh.to_f64_vec().unwrap(), gh.to_f64_vec().unwrap());
        let want: Vec<f64> = xs.iter().zip(&gs).map(|(&v, &g)| g * gelu_grad_f64(v)).collect();
        assert_close(&dxh.to_f64_vec().unwrap(), &want, 8e-3, 1e-6, "gelu_backward bf16");
    }

    #[test]
    fn backward_errors_name_op_shapes_and_dtypes() {
        let x = Tensor::zeros(&[2, 3], DType::F32);
        let e = x.gelu_backward(&Tensor::zeros(&[3, 2], DType::F32)).unwrap_err().to_string();
        assert!(e.contains("gelu_backward") && e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
        let e = x.gelu_backward(&Tensor::zeros(&[2, 3], DType::F16)).unwrap_err().to_string();
        assert!(e.contains("gelu_backward") && e.contains("F16"), "{e}");
        let i = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
        assert!(i.gelu_backward(&i).unwrap_err().to_string().contains("gelu_backward"));
    }
}
