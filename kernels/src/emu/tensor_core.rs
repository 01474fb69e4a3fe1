//! Tensor-core operations with the fragment layouts of the PTX ISA (section "Matrix fragments for
//! mma.m16n8k16"), computed from every lane's registers after a warp rendezvous.
//!
//! Notation: `g = lane / 4` (group), `t = lane % 4` (thread in group). A 32-bit register holds two
//! 16-bit elements, the lower-indexed one in the low half.

pub use crate::math::f16_to_f32;

fn half(reg: u32, hi: bool) -> u16 {
    if hi {
        (reg >> 16) as u16
    } else {
        reg as u16
    }
}

/// A[16x16] element (row, col) from all lanes' A registers (regs 0..4 of each lane).
/// Layout: a_i for i in 0..8 (two per register): row = g + 8*((i/2)%2), col = 2t + (i%2) + 8*(i/4).
fn a_elem(all: &[[u32; 6]; 32], row: usize, col: usize, cvt: fn(u16) -> f32) -> f32 {
    let g = row % 8;
    let t = (col % 8) / 2;
    let reg = (row / 8) + 2 * (col / 8);
    cvt(half(all[g * 4 + t][reg], col % 2 == 1))
}

/// B[16x8] element (k, n) from all lanes' B registers (regs 4..6): b_i for i in 0..4:
/// k = 2t + (i%2) + 8*(i/2), n = g.
fn b_elem(all: &[[u32; 6]; 32], k: usize, n: usize, cvt: fn(u16) -> f32) -> f32 {
    let t = (k % 8) / 2;
    cvt(half(all[n * 4 + t][4 + k / 8], k % 2 == 1))
}

/// D = A·B + C for this lane's C/D fragment: c_i at row g + 8*(i/2), col 2t + (i%2).
pub fn mma_m16n8k16(lane: u32, all: &[[u32; 6]; 32], c: [f32; 4], cvt: fn(u16) -> f32) -> [f32; 4] {
    let (g, t) = ((lane / 4) as usize, (lane % 4) as usize);
    let mut d = c;
    for (i, di) in d.iter_mut().enumerate() {
        let (row, col) = (g + 8 * (i / 2), 2 * t + i % 2);
        // The hardware accumulates the products in at least f32; f32 here is within its rounding.
        let mut acc = 0.0f32;
        for k in 0..16 {
            acc += a_elem(all, row, k, cvt) * b_elem(all, k, col, cvt);
        }
        *di += acc;
    }
    d
}

/// `ldmatrix .x4` (optionally `.trans`) from every lane's row address (as two u32 halves).
///
/// # Safety
/// Every address must point at 8 readable u16 values.
pub unsafe fn ldmatrix_x4(lane: u32, addrs: &[[u32; 2]; 32], trans: bool) -> [u32; 4] {
    let addr = |l: usize| (addrs[l][0] as usize | ((addrs[l][1] as usize) << 32)) as *const u16;
    let (g, t) = ((lane / 4) as usize, (lane % 4) as usize);
    let mut r = [0u32; 4];
    for (j, rj) in r.iter_mut().enumerate() {
        let (lo, hi) = if trans {
            // Element (row 2t+e, col g) of matrix j, transposed into this lane.
            (*addr(8 * j + 2 * t).add(g), *addr(8 * j + 2 * t + 1).add(g))
        } else {
            (*addr(8 * j + g).add(2 * t), *addr(8 * j + g).add(2 * t + 1))
        };
        *rj = lo as u32 | ((hi as u32) << 16);
    }
    r
}
