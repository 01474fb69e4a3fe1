//! Single-precision GEMM.

/// C[m,n] (+)= A[m,k] · B[k,n].
/// A element (i,p) is at `a[i*a_rs + p*a_cs]`, B element (p,j) at `b[p*b_rs + j*b_cs]`
/// (so transposed operands are just swapped strides); C is row-major with leading dim `ldc`.
/// With `accumulate` false C is overwritten, else added to.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize, n: usize, k: usize,
    a: &[f32], a_rs: usize, a_cs: usize,
    b: &[f32], b_rs: usize, b_cs: usize,
    c: &mut [f32], ldc: usize,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a[i * a_rs + p * a_cs] * b[p * b_rs + j * b_cs];
            }
            let cij = &mut c[i * ldc + j];
            *cij = if accumulate { *cij + acc } else { acc };
        }
    }
}
