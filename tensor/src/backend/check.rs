//! Shape and dtype checks shared by every backend, so all three accept and refuse exactly the
//! same arguments with the same errors. Each returns the sizes the op needs.

use super::{Backend, DevTensor};
use crate::{bail, DType, Error, Result};

type T<B> = DevTensor<B>;

fn bad<B: Backend + ?Sized>(op: &'static str, t: &T<B>, expected: &str) -> Error {
    Error::BadShape { op, shape: t.shape().to_vec(), expected: expected.to_string() }
}

fn mismatch<B: Backend + ?Sized>(op: &'static str, a: &T<B>, b: &T<B>) -> Error {
    Error::ShapeMismatch { op, lhs: a.shape().to_vec(), rhs: b.shape().to_vec() }
}

/// The element type of an op: its first input's, which must be F32 or BF16.
pub fn elem<B: Backend + ?Sized>(op: &'static str, x: &T<B>) -> Result<DType> {
    super::expect_device_dtype(op, x.dtype())?;
    Ok(x.dtype())
}

fn same_dtype<B: Backend + ?Sized>(op: &'static str, want: DType, ts: &[&T<B>]) -> Result<()> {
    super::expect_dtype(op, want, ts)
}

/// Element counts are kept below 2^31: the kernels' index math is 32-bit.
fn small<B: Backend + ?Sized>(op: &'static str, t: &T<B>) -> Result<()> {
    if t.elem_count() >= 1 << 31 {
        return Err(bad(op, t, "fewer than 2^31 elements"));
    }
    Ok(())
}

pub fn permute<B: Backend + ?Sized>(x: &T<B>, perm: &[usize]) -> Result<Vec<usize>> {
    const OP: &str = "permute";
    elem(OP, x)?;
    small(OP, x)?;
    let r = x.shape().len();
    let mut seen = vec![false; r];
    if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) || r > 6 {
        bail!(OP, "{perm:?} is not a permutation of the {r} dims of {:?} (rank at most 6)", x.shape());
    }
    Ok(perm.iter().map(|&p| x.shape()[p]).collect())
}

/// Returns (rows, k, n).
pub fn linear<B: Backend + ?Sized>(x: &T<B>, w: &T<B>, bias: Option<&T<B>>) -> Result<(usize, usize, usize)> {
    const OP: &str = "linear";
    let dt = elem(OP, x)?;
    same_dtype(OP, dt, &[w])?;
    small(OP, x)?;
    let (xs, ws) = (x.shape(), w.shape());
    if xs.is_empty() || ws.len() != 2 || ws[1] != xs[xs.len() - 1] {
        return Err(mismatch(OP, x, w));
    }
    if let Some(b) = bias {
        same_dtype(OP, DType::F32, &[b])?;
        if b.shape() != [ws[0]] {
            return Err(mismatch(OP, w, b));
        }
    }
    // Rows from the leading dims: the element count is 0 when k is.
    Ok((xs[..xs.len() - 1].iter().product(), ws[1], ws[0]))
}

/// [`linear`] plus a residual of the output's shape and dtype.
pub fn linear_add<B: Backend + ?Sized>(
    x: &T<B>,
    w: &T<B>,
    bias: Option<&T<B>>,
    residual: &T<B>,
) -> Result<(usize, usize, usize)> {
    const OP: &str = "linear_add";
    let (rows, k, n) = linear(x, w, bias).map_err(|e| match e {
        Error::ShapeMismatch { lhs, rhs, .. } => Error::ShapeMismatch { op: OP, lhs, rhs },
        other => other,
    })?;
    same_dtype(OP, x.dtype(), &[residual])?;
    let mut out = x.shape().to_vec();
    *out.last_mut().expect("rank >= 1") = n;
    if residual.shape() != out.as_slice() {
        return Err(Error::ShapeMismatch { op: OP, lhs: out, rhs: residual.shape().to_vec() });
    }
    Ok((rows, k, n))
}

pub fn binary<B: Backend + ?Sized>(a: &T<B>, b: &T<B>) -> Result<()> {
    const OP: &str = "binary";
    let dt = elem(OP, a)?;
    same_dtype(OP, dt, &[b])?;
    small(OP, a)?;
    let (na, nb) = (a.elem_count(), b.elem_count());
    if nb == 0 || na % nb != 0 || !a.shape().ends_with(&b.shape()[b.shape().iter().take_while(|&&d| d == 1).count()..])
    {
        return Err(mismatch(OP, a, b));
    }
    Ok(())
}

/// Returns (rows, cols).
pub fn rows<B: Backend + ?Sized>(op: &'static str, x: &T<B>, params: &[&T<B>]) -> Result<(usize, usize)> {
    let dt = elem(op, x)?;
    same_dtype(op, dt, params)?;
    small(op, x)?;
    let cols = *x.shape().last().ok_or_else(|| bad(op, x, "rank >= 1"))?;
    for p in params {
        if p.shape() != [cols] {
            return Err(mismatch(op, x, p));
        }
    }
    Ok((x.elem_count() / cols.max(1), cols))
}

/// NCHW dims.
pub fn nchw<B: Backend + ?Sized>(op: &'static str, x: &T<B>) -> Result<[usize; 4]> {
    elem(op, x)?;
    small(op, x)?;
    match *x.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(bad(op, x, "[N, C, H, W]")),
    }
}

pub fn layer_norm2d<B: Backend + ?Sized>(x: &T<B>, w: &T<B>, b: &T<B>) -> Result<[usize; 4]> {
    const OP: &str = "layer_norm2d";
    let d = nchw(OP, x)?;
    same_dtype(OP, x.dtype(), &[w, b])?;
    for p in [w, b] {
        if p.shape() != [d[1]] {
            return Err(mismatch(OP, x, p));
        }
    }
    Ok(d)
}

/// The head dim of `width` split in `heads`: 1 to 128 (`kernels::attention::MAX_D`; the kernel
/// runs each dim in the smallest of its instances 8, 16, 32, 64, 128 that holds it).
fn head_dim<B: Backend + ?Sized>(op: &'static str, t: &T<B>, width: usize, heads: usize) -> Result<usize> {
    const MAX: usize = kernels::attention::MAX_D;
    match width.checked_div(heads) {
        Some(d) if d * heads == width && (1..=MAX).contains(&d) => Ok(d),
        Some(d) if d * heads == width && d > MAX => Err(bad(
            op,
            t,
            &format!("{heads} heads of dim {d} in a row of {width}: head dims above {MAX} are not supported"),
        )),
        _ => Err(bad(op, t, &format!("{heads} heads of dim 1 to {MAX} in a row of {width}"))),
    }
}

/// Bias `[heads, nq, nk]` and mask `[nm, nq, nk]` (nm dividing the batch), both f32.
fn bias_and_mask<B: Backend + ?Sized>(
    op: &'static str,
    (b, h, nq, nk): (usize, usize, usize, usize),
    bias: Option<&T<B>>,
    mask: Option<&T<B>>,
) -> Result<()> {
    if let Some(bias) = bias {
        same_dtype(op, DType::F32, &[bias])?;
        if bias.shape() != [h, nq, nk] {
            return Err(bad(op, bias, &format!("bias [{h}, {nq}, {nk}]")));
        }
    }
    if let Some(m) = mask {
        same_dtype(op, DType::F32, &[m])?;
        match *m.shape() {
            [nm, mq, mk] if nm > 0 && b % nm == 0 && (mq, mk) == (nq, nk) => {}
            _ => return Err(bad(op, m, &format!("mask [n, {nq}, {nk}] with n dividing the batch {b}"))),
        }
    }
    Ok(())
}

/// Token-major q `[B, nq, H·d]`, k and v `[B, nk, H·d]`; returns (batch, heads, nq, nk, d).
pub fn attention<B: Backend + ?Sized>(
    q: &T<B>,
    k: &T<B>,
    v: &T<B>,
    heads: usize,
    bias: Option<&T<B>>,
    mask: Option<&T<B>>,
) -> Result<(usize, usize, usize, usize, usize)> {
    const OP: &str = "attention";
    let dt = elem(OP, q)?;
    same_dtype(OP, dt, &[k, v])?;
    let [b, nq, width] = match *q.shape() {
        [b, nq, w] => [b, nq, w],
        _ => return Err(bad(OP, q, "q [B, nq, heads·d]")),
    };
    let d = head_dim(OP, q, width, heads)?;
    let nk = match *k.shape() {
        [kb, nk, kw] if (kb, kw) == (b, width) => nk,
        _ => return Err(mismatch(OP, q, k)),
    };
    if v.shape() != k.shape() {
        return Err(mismatch(OP, k, v));
    }
    if nk == 0 {
        return Err(bad(OP, k, "at least one key"));
    }
    bias_and_mask(OP, (b, heads, nq, nk), bias, mask)?;
    for t in [q, k] {
        small(OP, t)?;
    }
    Ok((b, heads, nq, nk, d))
}

/// Packed qkv `[B, n, 3·H·d]`; returns (batch, heads, n, d).
pub fn attention_packed<B: Backend + ?Sized>(
    qkv: &T<B>,
    heads: usize,
    bias: Option<&T<B>>,
    mask: Option<&T<B>>,
) -> Result<(usize, usize, usize, usize)> {
    const OP: &str = "attention_packed";
    elem(OP, qkv)?;
    small(OP, qkv)?;
    let [b, n, width] = match *qkv.shape() {
        [b, n, w] if w % 3 == 0 && n > 0 => [b, n, w],
        _ => return Err(bad(OP, qkv, "qkv [B, n >= 1, 3·heads·d]")),
    };
    let d = head_dim(OP, qkv, width / 3, heads)?;
    bias_and_mask(OP, (b, heads, n, n), bias, mask)?;
    Ok((b, heads, n, d))
}

/// `[B, H, W, C]` with H and W multiples of the window; returns the dims.
pub fn windows<B: Backend + ?Sized>(x: &T<B>, window: usize, shift: usize) -> Result<[usize; 4]> {
    const OP: &str = "window_partition";
    elem(OP, x)?;
    small(OP, x)?;
    match *x.shape() {
        [b, h, w, c] if window > 0 && h % window == 0 && w % window == 0 && shift < window => Ok([b, h, w, c]),
        _ => Err(bad(OP, x, &format!("[B, H, W, C] with H, W multiples of window {window} > shift {shift}"))),
    }
}

/// [`window_reverse`] plus a residual of the output's shape and dtype.
pub fn window_reverse_add<B: Backend + ?Sized>(
    x: &T<B>,
    hw: (usize, usize),
    window: usize,
    shift: usize,
    residual: &T<B>,
) -> Result<[usize; 4]> {
    const OP: &str = "window_reverse_add";
    let out = window_reverse(x, hw, window, shift)?;
    same_dtype(OP, x.dtype(), &[residual])?;
    if residual.shape() != out {
        return Err(Error::ShapeMismatch { op: OP, lhs: out.to_vec(), rhs: residual.shape().to_vec() });
    }
    Ok(out)
}

pub fn window_reverse<B: Backend + ?Sized>(
    x: &T<B>,
    (h, w): (usize, usize),
    window: usize,
    shift: usize,
) -> Result<[usize; 4]> {
    const OP: &str = "window_reverse";
    elem(OP, x)?;
    small(OP, x)?;
    let ok = window > 0 && h % window == 0 && w % window == 0 && shift < window;
    match *x.shape() {
        [bw, n, c] if ok && n == window * window && bw % ((h / window) * (w / window)).max(1) == 0 => {
            Ok([bw / ((h / window) * (w / window)).max(1), h, w, c])
        }
        _ => Err(bad(OP, x, &format!("[B·nW, {window}², C] for a {h}x{w} map, window {window} > shift {shift}"))),
    }
}

pub fn patch_merge<B: Backend + ?Sized>(x: &T<B>) -> Result<[usize; 4]> {
    const OP: &str = "patch_merge";
    elem(OP, x)?;
    small(OP, x)?;
    match *x.shape() {
        [b, h, w, c] if h % 2 == 0 && w % 2 == 0 => Ok([b, h, w, c]),
        _ => Err(bad(OP, x, "[B, H, W, C] with even H and W")),
    }
}

pub fn resize_size(op: &'static str, size: (usize, usize)) -> Result<()> {
    if size.0 == 0 || size.1 == 0 {
        bail!(op, "output size {size:?} must be positive");
    }
    Ok(())
}

/// NCHW `x` resized to `size`: both planes nonempty, the output below 2^31 elements.
pub fn upsample_bilinear<B: Backend + ?Sized>(x: &T<B>, size: (usize, usize)) -> Result<[usize; 4]> {
    const OP: &str = "upsample_bilinear";
    let [n, c, h, w] = nchw(OP, x)?;
    resize_size(OP, size)?;
    if h == 0 || w == 0 {
        return Err(bad(OP, x, "[N, C, H, W] with H, W > 0"));
    }
    if n * c * size.0 * size.1 >= 1 << 31 {
        return Err(bad(OP, x, &format!("an output [N, C, {}, {}] of fewer than 2^31 elements", size.0, size.1)));
    }
    Ok([n, c, h, w])
}

/// Returns (batch, channels); every map is `[B, h, w, C]` with positive h and w.
pub fn upsample_sum<B: Backend + ?Sized>(maps: &[&T<B>], size: (usize, usize)) -> Result<(usize, usize)> {
    const OP: &str = "upsample_sum_nhwc";
    resize_size(OP, size)?;
    let first = maps.first().ok_or_else(|| Error::InvalidArgument { op: OP, msg: "no maps".into() })?;
    // The kernel takes up to four maps (FaceXFormer fuses four stages).
    if maps.len() > 4 {
        bail!(OP, "{} maps: at most 4", maps.len());
    }
    let dt = elem(OP, first)?;
    let (b, c) = match *first.shape() {
        [b, _, _, c] => (b, c),
        _ => return Err(bad(OP, first, "[B, h, w, C]")),
    };
    for m in maps {
        same_dtype(OP, dt, &[m])?;
        small(OP, m)?;
        match *m.shape() {
            [mb, h, w, mc] if (mb, mc) == (b, c) && h > 0 && w > 0 => {}
            _ => return Err(mismatch(OP, first, m)),
        }
    }
    if b * size.0 * size.1 * c >= 1 << 31 {
        return Err(bad(OP, first, &format!("an output [B, {}, {}, C] of fewer than 2^31 elements", size.0, size.1)));
    }
    Ok((b, c))
}

/// Returns ([N, Cin, H, W], Cout).
pub fn conv_transpose2x2<B: Backend + ?Sized>(x: &T<B>, w: &T<B>, bias: &T<B>) -> Result<([usize; 4], usize)> {
    const OP: &str = "conv_transpose2x2";
    let d = nchw(OP, x)?;
    same_dtype(OP, x.dtype(), &[w])?;
    same_dtype(OP, DType::F32, &[bias])?;
    let cout = match *w.shape() {
        [ci, co, 2, 2] if ci == d[1] => co,
        _ => return Err(mismatch(OP, x, w)),
    };
    if bias.shape() != [cout] {
        return Err(mismatch(OP, w, bias));
    }
    if d[0] * cout * d[2] * d[3] * 4 >= 1 << 31 {
        return Err(bad(OP, x, "an output of fewer than 2^31 elements"));
    }
    Ok((d, cout))
}

/// Returns (B, M, C, P).
pub fn hyper_product<B: Backend + ?Sized>(h: &T<B>, u: &T<B>) -> Result<(usize, usize, usize, usize)> {
    const OP: &str = "hyper_product";
    let dt = elem(OP, h)?;
    same_dtype(OP, dt, &[u])?;
    small(OP, u)?;
    match (h.shape(), u.shape()) {
        (&[b, m, c], &[ub, uc, p]) if (ub, uc) == (b, c) && m <= 32 && c <= 64 => Ok((b, m, c, p)),
        _ => Err(Error::BadShape {
            op: OP,
            shape: u.shape().to_vec(),
            expected: format!("h {:?} = [B, M <= 32, C <= 64] and u [B, C, P]", h.shape()),
        }),
    }
}
