//! Index-remapping kernels: each output element is gathered from one input place (or a few), so all
//! are one grid-stride loop over the output with u32 index math (no 64-bit division).
//!
//! - [`window_partition`] / [`window_reverse`]: Swin's windows with the cyclic shift folded in
//!   (no rolled copy): `[B, H, W, C]` <-> `[B * nWh * nWw, ws * ws, C]`.
//! - [`patch_merge`]: `[B, H, W, C]` -> `[B, H/2, W/2, 4C]` in Swin's order (x0, x1, x2, x3) =
//!   ((0,0), (1,0), (0,1), (1,1)) offsets in (h, w).
//! - [`upsample_bilinear`]: NCHW, `align_corners=False` (PyTorch's source index rule).
//! - [`conv_transpose2x2`]: NCHW, kernel 2, stride 2, weight `[Cin, Cout, 2, 2]`, bias `[Cout]` f32
//!   (the backends run this operation as a tensor-core GEMM over the four taps; this direct
//!   kernel is its twin).
//!
//! Callers keep every element count below 2^31.

use crate::ctx::{grid_stride, Ctx};
use crate::fastdiv::FastDiv;
use crate::math::Elem;

/// Grid-stride over the output elements.
pub use crate::ctx::grid_stride_config as config;

/// Window partition of `[b, h, w, ch]` with windows `ws x ws` after rolling by `-shift` in h and w
/// (Swin's `torch.roll(x, (-s, -s))` then partition). `h`, `w` are multiples of `ws`.
///
/// # Safety
/// `x` and `out` hold `b * h * w * ch` elements.
#[inline(always)]
pub unsafe fn window_partition<C: Ctx, E: Elem>(
    c: &C,
    x: *const E,
    out: *mut E,
    b: u32,
    h: u32,
    w: u32,
    ch: u32,
    ws: u32,
    shift: u32,
) {
    let (nwh, nww) = (h / ws, w / ws);
    let [by_ch, by_win, by_ws, by_nww, by_nwh, by_h, by_w] = [ch, ws * ws, ws, nww, nwh, h, w].map(FastDiv::new);
    grid_stride(c, b * h * w * ch, |o| {
        let (t, k) = by_ch.divmod(o); // t: token index in the window list
        let (win, pos) = by_win.divmod(t);
        let (ih, iw) = by_ws.divmod(pos);
        let (rest, ww) = by_nww.divmod(win);
        let (bi, wh) = by_nwh.divmod(rest);
        let sh = by_h.divmod(wh * ws + ih + shift).1;
        let sw = by_w.divmod(ww * ws + iw + shift).1;
        *out.add(o as usize) = *x.add((((bi * h + sh) * w + sw) * ch + k) as usize);
    })
}

/// Inverse of [`window_partition`] (including the shift back): windows -> `[b, h, w, ch]`, plus
/// `residual` (null: none; laid out as `out`): Swin's `x + attention branch` in the same pass. A
/// gather and one add, so the sum is rounded once, as in the unfused pair.
///
/// # Safety
/// `win` and `out` (and `residual` unless null) hold `b * h * w * ch` elements.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn window_reverse<C: Ctx, E: Elem>(
    c: &C,
    win: *const E,
    residual: *const E,
    out: *mut E,
    b: u32,
    h: u32,
    w: u32,
    ch: u32,
    ws: u32,
    shift: u32,
) {
    let (nwh, nww) = (h / ws, w / ws);
    let [by_ch, by_w, by_h, by_ws] = [ch, w, h, ws].map(FastDiv::new);
    let (back_h, back_w) = (h - shift % h, w - shift % w);
    grid_stride(c, b * h * w * ch, |o| {
        let (p, k) = by_ch.divmod(o);
        let (rest, x_w) = by_w.divmod(p);
        let (bi, x_h) = by_h.divmod(rest);
        // Position in the shifted frame that was partitioned.
        let sh = by_h.divmod(x_h + back_h).1;
        let sw = by_w.divmod(x_w + back_w).1;
        let ((wi_h, pi_h), (wi_w, pi_w)) = (by_ws.divmod(sh), by_ws.divmod(sw));
        let win_idx = (bi * nwh + wi_h) * nww + wi_w;
        let pos = pi_h * ws + pi_w;
        let v = *win.add(((win_idx * ws * ws + pos) * ch + k) as usize);
        *out.add(o as usize) =
            if residual.is_null() { v } else { E::from_f32((*residual.add(o as usize)).to_f32() + v.to_f32()) };
    })
}

/// Patch merging gather `[b, h, w, ch]` -> `[b, h/2, w/2, 4 ch]` (h, w even).
///
/// # Safety
/// `x` holds `b * h * w * ch`, `out` the same number of elements.
#[inline(always)]
pub unsafe fn patch_merge<C: Ctx, E: Elem>(c: &C, x: *const E, out: *mut E, b: u32, h: u32, w: u32, ch: u32) {
    let (oh, ow) = (h / 2, w / 2);
    let [by_4ch, by_ow, by_oh, by_ch] = [4 * ch, ow, oh, ch].map(FastDiv::new);
    grid_stride(c, b * oh * ow * 4 * ch, |o| {
        let (p, k4) = by_4ch.divmod(o);
        let (rest, j) = by_ow.divmod(p);
        let (bi, i) = by_oh.divmod(rest);
        let (q, k) = by_ch.divmod(k4);
        // q = 0..4 -> (dh, dw) = (0,0), (1,0), (0,1), (1,1)
        let (dh, dw) = (q % 2, q / 2);
        *out.add(o as usize) = *x.add((((bi * h + 2 * i + dh) * w + 2 * j + dw) * ch + k) as usize);
    })
}

/// Source coordinate for `align_corners=False`: `(dst + 0.5) * in/out - 0.5`, clamped at 0.
#[inline(always)]
fn source_index(dst: u32, scale: f32, len: u32) -> (u32, u32, f32) {
    let real = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (real as u32).min(len - 1);
    let i1 = if i0 + 1 < len { i0 + 1 } else { i0 };
    (i0, i1, real - i0 as f32)
}

/// Bilinear upsampling (or downsampling) of NCHW `[nc, h, w]` to `[nc, oh, ow]`.
///
/// # Safety
/// `x` holds `nc * h * w`, `out` holds `nc * oh * ow`.
#[inline(always)]
pub unsafe fn upsample_bilinear<C: Ctx, E: Elem>(
    c: &C,
    x: *const E,
    out: *mut E,
    nc: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
) {
    let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
    grid_stride(c, nc * oh * ow, |o| {
        let (ox, rest) = (o % ow, o / ow);
        let (oy, plane) = (rest % oh, rest / oh);
        let (y0, y1, ly) = source_index(oy, sy, h);
        let (x0, x1, lx) = source_index(ox, sx, w);
        let base = x.add((plane * h * w) as usize);
        let at = |y: u32, xx: u32| (*base.add((y * w + xx) as usize)).to_f32();
        let top = at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx;
        let bot = at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx;
        *out.add(o as usize) = E::from_f32(top * (1.0 - ly) + bot * ly);
    })
}

/// Transposed convolution, kernel 2, stride 2: `[n, cin, h, w]` -> `[n, cout, 2h, 2w]`; each output
/// pixel has exactly one input pixel, so it is a per-pixel dot product over `cin`.
///
/// # Safety
/// `x` holds `n*cin*h*w`, `wt` holds `cin*cout*4`, `bias` is null or holds `cout` (f32), `out` holds
/// `n*cout*4*h*w`.
#[inline(always)]
pub unsafe fn conv_transpose2x2<C: Ctx, E: Elem>(
    c: &C,
    x: *const E,
    wt: *const E,
    bias: *const f32,
    out: *mut E,
    n: u32,
    cin: u32,
    cout: u32,
    h: u32,
    w: u32,
) {
    let (oh, ow) = (2 * h, 2 * w);
    grid_stride(c, n * cout * oh * ow, |o| {
        let (ox, rest) = (o % ow, o / ow);
        let (oy, rest) = (rest % oh, rest / oh);
        let (co, ni) = (rest % cout, rest / cout);
        let (i, di, j, dj) = (oy / 2, oy % 2, ox / 2, ox % 2);
        let mut acc = if bias.is_null() { 0.0 } else { *bias.add(co as usize) };
        for ci in 0..cin {
            let xv = (*x.add((((ni * cin + ci) * h + i) * w + j) as usize)).to_f32();
            let wv = (*wt.add((((ci * cout + co) * 2 + di) * 2 + dj) as usize)).to_f32();
            acc += xv * wv;
        }
        *out.add(o as usize) = E::from_f32(acc);
    })
}
