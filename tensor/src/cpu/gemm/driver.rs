//! The blocked GEMM loop nest (BLIS order: NC columns, KC depth, MC rows, then NR x MR tiles;
//! with a B packed once beforehand, MC rows outside KC depth),
//! the fused output pass, and the split of one product over rayon threads.

use super::kernels::{prefetch_lines_l2, prefetch_rows_l1, Column, Fused, Kernels};
use super::pack::pack;
use crate::cpu::simd::dispatch;
use crate::ops::Activation;
use rayon::prelude::*;
use std::cell::RefCell;

/// Depth of one packed block: a B micro-panel (KC x NR) stays in L1 while A panels stream.
pub(super) const KC: usize = 256;
/// Rows of A packed at once (rounded to MR): the A block (MC x KC) lives in L2.
const MC: usize = 336;
/// Columns of B packed at once: the B block (KC x NC) lives in L3.
const NC: usize = 4096;
/// Largest MR * NR of any kernel (the scratch tile for edges).
const MAX_TILE: usize = 14 * 32;
/// Whole tiles a column kernel runs before the output pass's activation, which reads them
/// back: 4 AVX2 tiles are 1.5 KiB, still in L1.
const COLUMN_CHUNK: usize = 4;

/// One product with raw operands. The caller checked every index stays in bounds.
#[derive(Clone, Copy)]
pub struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b: *const f32,
    pub b_rs: usize,
    pub b_cs: usize,
    pub c: *mut f32,
    pub ldc: usize,
    pub accumulate: bool,
    /// Per-column bias (n values) and activation, applied once each output tile is final.
    pub bias: Option<*const f32>,
    pub act: Activation,
    /// When set, the output pass writes `g ⊙ act'(z)` instead of `act(z)`: g is laid out as C
    /// (rows `ldc` apart), starts at the same element, and is only read.
    pub act_grad: Option<*const f32>,
    /// When set, the output pass ends by multiplying C elementwise by these values, laid out
    /// as C (rows `ldc` apart, starting at the same element); only read.
    pub scale: Option<*const f32>,
    /// When set, added to C last in the output pass; laid out as C, only read.
    pub residual: Option<*const f32>,
    /// B packed once for the bf16 kernel (that kernel only), and this product's first column
    /// in it (a sub-product of a thread split starts further in).
    #[cfg(target_arch = "x86_64")]
    pub packed_b: Option<*const super::bf16::PackedB>,
    /// B packed once for the f32 kernels (used when its panels are this kernel's width).
    pub packed_f32: Option<*const super::prepacked::PackedF32>,
    pub col0: usize,
}

// Threads work on disjoint parts of C; A, B and bias are only read.
unsafe impl Send for Problem {}
unsafe impl Sync for Problem {}

impl Problem {
    pub(super) fn has_epilogue(&self) -> bool {
        self.bias.is_some()
            || self.act != Activation::None
            || self.act_grad.is_some()
            || self.scale.is_some()
            || self.residual.is_some()
    }

    /// The output pass's steps a kernel can apply before storing the whole tile at `c` (first
    /// column `col`): the bias, and the scale and residual when no activation comes between
    /// (they follow it).
    unsafe fn fused_steps(&self, c: *mut f32, col: usize) -> Fused {
        let no_act = self.act == Activation::None && self.act_grad.is_none();
        let at = c.offset_from(self.c) as usize;
        let at_tile = |v: Option<*const f32>| v.filter(|_| no_act).map_or(std::ptr::null(), |v| v.add(at));
        Fused {
            bias: self.bias.map_or(std::ptr::null(), |b| b.add(col)),
            scale: at_tile(self.scale),
            residual: at_tile(self.residual),
        }
    }

    /// The sub-product of rows [r0, r0 + m) and columns [c0, c0 + n).
    unsafe fn sub(&self, r0: usize, m: usize, c0: usize, n: usize) -> Problem {
        Problem {
            m,
            n,
            a: self.a.add(r0 * self.a_rs),
            b: self.b.add(c0 * self.b_cs),
            c: self.c.add(r0 * self.ldc + c0),
            bias: self.bias.map(|b| b.add(c0)),
            act_grad: self.act_grad.map(|g| g.add(r0 * self.ldc + c0)),
            scale: self.scale.map(|s| s.add(r0 * self.ldc + c0)),
            residual: self.residual.map(|r| r.add(r0 * self.ldc + c0)),
            col0: self.col0 + c0,
            ..*self
        }
    }
}

/// One cache line (one zmm) of floats: pack buffers built from these are 64-byte aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(super) struct Line([f32; 16]);

#[derive(Default)]
struct PackBufs {
    a: Vec<Line>,
    b: Vec<Line>,
}

pub(super) fn line_ptr(v: &mut Vec<Line>, len: usize) -> *mut f32 {
    if v.len() * 16 < len {
        v.resize(len.div_ceil(16), Line([0.0; 16]));
    }
    v.as_mut_ptr() as *mut f32
}

thread_local! {
    static BUFS: RefCell<PackBufs> = RefCell::new(PackBufs::default());
}

/// Runs the product on `threads` rayon workers (1: on the calling thread).
///
/// # Safety
/// `p` must describe valid, in-bounds operands; `kernels` must be runnable on this CPU.
pub unsafe fn run<const MR: usize, const NR: usize>(kernels: Kernels, p: &Problem, threads: usize, fast_pack: bool) {
    split::<MR, NR>(p, threads, |sub| serial::<MR, NR>(kernels, sub, fast_pack))
}

/// Splits the product over `threads` rayon workers (MR x NR tiles never straddle two parts) and
/// runs `serial` on each part.
///
/// # Safety
/// `p` must describe valid, in-bounds operands; `serial` must be safe to run on any sub-product.
pub unsafe fn split<const MR: usize, const NR: usize>(p: &Problem, threads: usize, serial: impl Fn(&Problem) + Sync) {
    let (m_panels, n_panels) = (p.m.div_ceil(MR), p.n.div_ceil(NR));
    if threads <= 1 || (m_panels < 2 && n_panels < 2) {
        return serial(p);
    }
    // Splitting rows makes every thread pack all of B; splitting columns, all of A. Weigh the
    // duplicated packing (a transposing pack costs about twice a copying one); a B packed once
    // costs nothing to share.
    let a_cost = p.m * if p.a_rs == 1 { 1 } else { 2 };
    let b_packed = p.packed_f32.is_some_and(|pb| (*pb).nr() == NR);
    let b_cost = if b_packed { 0 } else { p.n * if p.b_cs == 1 { 1 } else { 2 } };
    // A B packed once is shared for free, but with the rows split each thread streams all of it
    // from memory, once per block of MC rows. When the rows fit one block (a weight against a
    // batch-1 image), splitting the columns halves each thread's stream and keeps every row
    // against each panel: a stage-3-like run of 72 products with 49 rows took 15% less time,
    // with 196 rows 2% less; split so with 392 rows (two blocks either way), 4% more (2-core
    // Xeon, family 6 model 207, both with the prefetch of `next_panel`). Each C element is the
    // same kernel's sum in the same order: the same bits.
    let one_row_block = p.m <= mc_rows::<MR>();
    let split_rows = m_panels >= threads
        && (b_cost <= a_cost || n_panels < threads)
        && !(b_packed && one_row_block && n_panels >= threads);
    let (panels, unit, total) = if split_rows { (m_panels, MR, p.m) } else { (n_panels, NR, p.n) };
    let parts = threads.min(panels);
    (0..parts).into_par_iter().for_each(|t| {
        let start = (t * panels / parts) * unit;
        let end = (((t + 1) * panels / parts) * unit).min(total);
        // SAFETY: the parts cover disjoint rows (or columns) of C.
        unsafe {
            let sub = if split_rows { p.sub(start, end - start, 0, p.n) } else { p.sub(0, p.m, start, end - start) };
            serial(&sub);
        }
    });
}

/// The single-threaded blocked product.
///
/// # Safety
/// As for [`run`].
pub unsafe fn serial<const MR: usize, const NR: usize>(kernels: Kernels, p: &Problem, fast_pack: bool) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    if p.k == 0 {
        if !p.accumulate {
            for i in 0..p.m {
                std::slice::from_raw_parts_mut(p.c.add(i * p.ldc), p.n).fill(0.0);
            }
        }
        finish_tile(p, p.c, p.m, p.n, 0);
        return;
    }
    BUFS.with(|bufs| match bufs.try_borrow_mut() {
        Ok(mut bufs) => blocked::<MR, NR>(kernels, p, fast_pack, &mut bufs),
        // Only reachable if a caller re-enters from inside a product; use fresh buffers.
        Err(_) => blocked::<MR, NR>(kernels, p, fast_pack, &mut PackBufs::default()),
    })
}

unsafe fn blocked<const MR: usize, const NR: usize>(
    kernels: Kernels,
    p: &Problem,
    fast_pack: bool,
    bufs: &mut PackBufs,
) {
    let Kernels { tile: kern, edge, rows, column } = kernels;
    let mc_max = mc_rows::<MR>();
    let kc_max = KC.min(p.k);
    let nc_max = NC.min(p.n.div_ceil(NR) * NR);
    let abuf = line_ptr(&mut bufs.a, mc_max.min(p.m.div_ceil(MR) * MR) * kc_max);
    // SAFETY (packed): a product with a packed B covers columns col0.. of it (checked by
    // sgemm_raw), and sub-products start on panel boundaries.
    let packed = p.packed_f32.map(|pb| &*pb).filter(|pb| pb.nr() == NR);
    let bbuf = if packed.is_some() { std::ptr::null_mut() } else { line_ptr(&mut bufs.b, nc_max * kc_max) };
    // Very few rows (a few tiles): packing B would cost about as much as using it, so full
    // panels are read in place when B rows are contiguous. Not for more rows: a panel read in
    // place has rows b_rs apart, and when b_rs is a multiple of 1 KiB (a 2048-wide weight) its
    // kc rows fall into a few L1 sets (4 KiB apart: one) and evict each other between the A tiles that
    // reuse them (196 x 2048 x 512 on Zen 3: 50 GFLOP/s in place, 83 packed). A small B (at
    // most 64 KiB, a batched window product's 32 x 49) whose rows avoid that stride is read in
    // place too: its copy was a fifth of such a product's time.
    let direct_b =
        packed.is_none() && p.b_cs == 1 && (p.m <= 4 * MR || (p.k * p.n <= 16384 && !b_rows_share_l1_sets(p.b_rs)));
    // The rows kernel, where this A is read in place.
    let rows = rows.filter(|_| p.a_cs == 1 && blocked_reads_a_in_place::<NR>(p.a_rs));
    let mut tmp = [0.0f32; MAX_TILE];
    let tmp = tmp.as_mut_ptr();

    // One MC x KC block of A against the B block of depth pc (packed already).
    let a_block_times_b = |jc: usize, nc: usize, pc: usize, ic: usize| {
        let kc = KC.min(p.k - pc);
        let load_c = p.accumulate || pc > 0;
        let last = pc + kc == p.k;
        let bsrc = p.b.add(pc * p.b_rs + jc * p.b_cs);
        let mc = mc_max.min(p.m - ic);
        let a_block = p.a.add(ic * p.a_rs + pc * p.a_cs);
        // Whole row panels read in place (with a rows kernel); the rest packed.
        let full_m = if rows.is_some() { mc / MR * MR } else { 0 };
        if full_m < mc {
            pack::<MR>(mc - full_m, kc, a_block.add(full_m * p.a_rs), p.a_rs, p.a_cs, abuf, fast_pack);
        }
        for jr in (0..nc).step_by(NR) {
            let nr = NR.min(nc - jr);
            let (bp, b_rs) = match (packed, direct_b, nr == NR) {
                (Some(pb), _, _) => (pb.panel(pc, p.col0 + jc + jr), NR),
                (None, true, true) => (bsrc.add(jr), p.b_rs),
                (None, true, false) => (bbuf as *const f32, NR),
                (None, false, _) => (bbuf.add(jr * kc) as *const f32, NR),
            };
            let mut next = packed.and_then(|pb| next_panel::<NR>(pb, p, jc, jr, nc, pc));
            // The whole tiles in one call, where the ISA has a column kernel: with a rows
            // kernel they are the rows read in place (full_m), else packed.
            let column_tiles = if column.is_some() && nr == NR { mc / MR } else { 0 };
            if let (Some(column), true) = (column, column_tiles > 0) {
                // An activation (or its backward) reads the tiles back: run the output pass
                // every few tiles, while they are in L1, not after the whole column.
                let activates = p.act != Activation::None || p.act_grad.is_some();
                let chunk = if last && activates { COLUMN_CHUNK } else { column_tiles };
                let (next_panel, next_lines) = next.take().unwrap_or((std::ptr::null(), 0));
                let share = next_lines.div_ceil(column_tiles);
                for t0 in (0..column_tiles).step_by(chunk) {
                    let tiles = chunk.min(column_tiles - t0);
                    let c = p.c.add((ic + t0 * MR) * p.ldc + jc + jr);
                    let col = jc + jr;
                    let at = c.offset_from(p.c) as usize;
                    let input = |v: Option<*const f32>| v.filter(|_| last).map_or(std::ptr::null(), |v| v.add(at));
                    let lines = (t0 * share).min(next_lines)..((t0 + tiles) * share).min(next_lines);
                    let fused = if last { p.fused_steps(c, col) } else { Fused::NONE };
                    column(&Column {
                        tiles,
                        kc,
                        a: if rows.is_some() { a_block.add(t0 * MR * p.a_rs) } else { abuf.add(t0 * MR * kc) },
                        a_rs: p.a_rs,
                        in_place: rows.is_some(),
                        b: bp,
                        b_rs,
                        c,
                        ldc: p.ldc,
                        load_c,
                        fused,
                        inputs: [input(p.act_grad), input(p.scale), input(p.residual)],
                        next: if next_panel.is_null() { next_panel } else { next_panel.add(lines.start * 16) },
                        next_lines: lines.len(),
                    });
                    if last {
                        finish_tile_after(p, c, tiles * MR, NR, col, fused);
                    }
                }
            }
            let tiles = mc.div_ceil(MR);
            for ir in (column_tiles * MR..mc).step_by(MR) {
                if let Some((next, lines)) = next {
                    // This tile's share of the next panel's lines.
                    let per = lines.div_ceil(tiles);
                    let from = ir / MR * per;
                    prefetch_lines_l2(next, from, (from + per).min(lines));
                }
                let in_place = ir < full_m;
                let ap = if in_place { a_block.add(ir * p.a_rs) } else { abuf.add((ir - full_m) * kc) };
                let cp = p.c.add((ic + ir) * p.ldc + jc + jr);
                let mr = MR.min(mc - ir);
                let tile = Tile { c: cp, mr, nr, col: jc + jr, load_c, last };
                let kernel = |c, ldc, load, fused| match (rows, edge) {
                    (Some(rows), _) if in_place => rows(nr, kc, ap, p.a_rs, bp, b_rs, c, ldc, load, fused),
                    (_, Some(edge)) if mr < MR || nr < NR => edge(mr, nr, kc, ap, bp, b_rs, c, ldc, load),
                    _ => kern(kc, ap, bp, b_rs, c, ldc, load, fused),
                };
                micro_tile::<MR, NR>(p, tile, tmp, true, kernel);
            }
        }
    };

    for jc in (0..p.n).step_by(NC) {
        let nc = NC.min(p.n - jc);
        if packed.is_some() {
            // B was packed once, outside this product: each row block runs through all depths
            // while its C rows stay in cache (in the other order, a depth block's output would
            // go out to memory and come back for the next one: C of 25088 x 128 at batch 8).
            // The same multiply-adds in the same order per element, so the same bits.
            for ic in (0..p.m).step_by(mc_max) {
                for pc in (0..p.k).step_by(KC) {
                    a_block_times_b(jc, nc, pc, ic);
                }
            }
            continue;
        }
        for pc in (0..p.k).step_by(KC) {
            let kc = KC.min(p.k - pc);
            let bsrc = p.b.add(pc * p.b_rs + jc * p.b_cs);
            let full_n = nc / NR * NR;
            if direct_b {
                if full_n < nc {
                    pack::<NR>(nc - full_n, kc, bsrc.add(full_n), 1, p.b_rs, bbuf, fast_pack);
                }
            } else {
                pack::<NR>(nc, kc, bsrc, p.b_cs, p.b_rs, bbuf, fast_pack);
            }
            for ic in (0..p.m).step_by(mc_max) {
                a_block_times_b(jc, nc, pc, ic);
            }
        }
    }
}

/// Rows of A in one packed block: MC rounded down to whole MR tiles.
fn mc_rows<const MR: usize>() -> usize {
    (MC / MR).max(1) * MR
}

/// The panel of a B packed once that follows panel `jr` (of the column block at `jc`, `nc`
/// wide) of depth block `pc`: the next panel of this depth block, or the first of the next
/// block; with its length in cache lines. None after the last.
///
/// Why: panels come from memory (a weight is read once a forward), and the first MR rows to
/// use each one waited for it: the hardware prefetchers do not run that far ahead. Asked for
/// one panel ahead, spread over the current panel's tiles, a stage-3-like run of 72 products
/// took 8% less time with 196 rows, 6% with 49, 5% with 392, none with 1568 (2-core Xeon,
/// family 6 model 207: interleaved passes of the same process). Asking for only the first lines
/// of each 4 KiB page (where those prefetchers stop) gained less: 90.4-91.9 ms a pass at 196
/// rows against 85.6 for every line.
fn next_panel<const NR: usize>(
    pb: &super::PackedF32,
    p: &Problem,
    jc: usize,
    jr: usize,
    nc: usize,
    pc: usize,
) -> Option<(*const f32, usize)> {
    let (depth, col) = if jr + NR < nc {
        (pc, jc + jr + NR)
    } else if pc + KC < p.k {
        (pc + KC, jc)
    } else {
        return None;
    };
    let kc = KC.min(p.k - depth);
    Some((pb.panel(depth, p.col0 + col), NR * kc / 16))
}

/// Whether whole row panels of a row-major A (rows `a_rs` apart) are read in place by the
/// ISA's rows kernel instead of packed. Packing transposes A for every product, about 5% of a
/// batch-8 forward; reading it in place costs the kernel MR broadcasts from MR rows. That is
/// cheaper except when the rows are a multiple of 4 KiB apart (a_rs a multiple of 1024 floats):
/// then all MR rows fall into one L1 set (8 ways) and evict each other every step. Measured on
/// Zen 4 (batch-8 forward, prepacked weights): depth 2048 in place 71-73% of peak against 84-90%
/// packed; depths 128-512 gained 2-10 points. The small-product path uses this rule as it is;
/// the blocked loop adds one for AVX2 ([`blocked_reads_a_in_place`]).
pub(super) fn read_a_in_place(a_rs: usize) -> bool {
    !a_rs.is_multiple_of(1024)
}

/// Whether the blocked loop reads A in place: as [`read_a_in_place`], and not when the rows are
/// a multiple of 2 KiB apart (512 floats, Swin's stage 3) for a kernel whose B panel (KC x NR)
/// is meant to stay in L1: AVX2's 16 KiB, 4 of a 32 KiB L1's 8 ways in every set. A tile's MR
/// rows 2 KiB apart fall into half of the sets, three AVX2 rows to a set, and with the next
/// tile's rows they evict the panel. Zen 3 (EPYC family 25 model 1), one thread, B packed once,
/// medians of 8 interleaved runs each way, GFLOP/s in place -> packed: 1568 x 1536 x 512
/// 69-75 -> 77-81, 1568 x 2048 x 512 66-69 -> 74-76, 1568 x 512 x 512 72-74 -> 75-77 (a
/// 2048-deep product, packed either way, within 1%); two threads 134-137 -> 149-150, 132-134 ->
/// 144, 134-136 -> 146-147 (the A packing included). AVX-512's panel (32 KiB) does not stay in
/// L1, and on a Zen 4 its depths of 128 to 512 ran faster in place.
pub(super) fn blocked_reads_a_in_place<const NR: usize>(a_rs: usize) -> bool {
    let panel_in_l1 = KC * NR * 4 <= 16 * 1024;
    read_a_in_place(a_rs) && !(panel_in_l1 && a_rs.is_multiple_of(512))
}

/// Whether B's rows, `b_rs` floats apart, are a multiple of 1 KiB apart: read in place, the
/// rows of a panel then fall into a few L1 sets and evict each other (see `direct_b` above).
pub(super) fn b_rows_share_l1_sets(b_rs: usize) -> bool {
    b_rs.is_multiple_of(256)
}

/// Where one micro-tile of C goes: mr x nr values at `c` (at most MR x NR), whose first column is
/// column `col` of the product; `load_c` adds to C's values, `last` is the last depth block.
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub c: *mut f32,
    pub mr: usize,
    pub nr: usize,
    pub col: usize,
    pub load_c: bool,
    pub last: bool,
}

/// One micro-tile, the step every blocked loop (f32, bf16, AMX) ends in: `kernel(dst, ld, load,
/// fused)` computes a whole MR x NR tile into `dst` (rows `ld` apart, added to its values with
/// `load`); an edge tile is computed into `tmp` (MR x NR, rows NR apart) and copied in; after
/// the last depth block the fused output pass runs. A kernel that applies [`Fused`] steps
/// (`kernel_fuses`) is given them on the last depth block of a whole tile, and the pass skips
/// them.
///
/// # Safety
/// `tile.c` covers mr rows of nr values, `p.ldc` apart; `tmp` holds MR x NR values; `kernel`
/// must be safe to run on either destination.
#[inline(always)]
pub(super) unsafe fn micro_tile<const MR: usize, const NR: usize>(
    p: &Problem,
    tile: Tile,
    tmp: *mut f32,
    kernel_fuses: bool,
    kernel: impl FnOnce(*mut f32, usize, bool, Fused),
) {
    let Tile { c, mr, nr, col, load_c, last } = tile;
    if last {
        prefetch_epilogue_inputs(p, c, mr, nr);
    }
    let mut fused = Fused::NONE;
    if mr == MR && nr == NR {
        if last && kernel_fuses {
            fused = p.fused_steps(c, col);
        }
        kernel(c, p.ldc, load_c, fused);
    } else {
        kernel(tmp, NR, false, Fused::NONE);
        store_edge(tmp, NR, c, p.ldc, mr, nr, load_c);
    }
    if last {
        finish_tile_after(p, c, mr, nr, col, fused);
    }
}

/// Asks for the output pass's gradient, scale or residual rows (read from memory, usually not in cache)
/// before the kernel runs, so that their loads overlap its arithmetic.
#[inline(always)]
unsafe fn prefetch_epilogue_inputs(p: &Problem, c: *mut f32, mr: usize, nr: usize) {
    let at = c.offset_from(p.c) as usize;
    for g in [p.act_grad, p.scale, p.residual].into_iter().flatten() {
        prefetch_rows_l1(g.add(at), p.ldc, mr, nr);
    }
}

/// Copies an mr x nr edge tile computed into `tmp` (rows `tmp_ld` apart) into C, adding it to
/// C's values with `load_c`.
///
/// # Safety
/// `tmp` holds the tile; `c` covers mr rows of nr values, `ldc` apart.
unsafe fn store_edge(tmp: *const f32, tmp_ld: usize, c: *mut f32, ldc: usize, mr: usize, nr: usize, load_c: bool) {
    for i in 0..mr {
        let (crow, trow) = (c.add(i * ldc), tmp.add(i * tmp_ld));
        for j in 0..nr {
            let v = *trow.add(j);
            *crow.add(j) = if load_c { *crow.add(j) + v } else { v };
        }
    }
}

/// The fused output pass (if any) on a finished mr x nr tile of C at `c`, whose first column is
/// column `col` of the product: bias, activation (or its backward), scale, residual, in that
/// order for every element. The activation runs on the whole tile in one call (one dispatch
/// instead of one per row), bias, scale and residual in loops compiled for the widest vectors.
///
/// # Safety
/// `c` covers mr rows of nr values, `p.ldc` apart.
#[inline]
pub(super) unsafe fn finish_tile(p: &Problem, c: *mut f32, mr: usize, nr: usize, col: usize) {
    finish_tile_after(p, c, mr, nr, col, Fused::NONE)
}

/// [`finish_tile`] without the steps the kernel already applied (`done`).
#[inline]
unsafe fn finish_tile_after(p: &Problem, c: *mut f32, mr: usize, nr: usize, col: usize, done: Fused) {
    if !p.has_epilogue() {
        return;
    }
    // The tile's place in C, which is also its place in act_grad, scale and residual.
    let at = c.offset_from(p.c) as usize;
    if let (Some(bias), true) = (p.bias, done.bias.is_null()) {
        add_bias(c, p.ldc, mr, nr, bias.add(col));
    }
    match p.act_grad {
        Some(g) => super::activate_grad_tile(p.act, c, g.add(at), p.ldc, mr, nr),
        None => super::activate_tile(p.act, c, p.ldc, mr, nr),
    }
    let scale = p.scale.filter(|_| done.scale.is_null());
    let residual = p.residual.filter(|_| done.residual.is_null());
    if scale.is_some() || residual.is_some() {
        scale_add(c, p.ldc, mr, nr, scale.map(|s| s.add(at)), residual.map(|r| r.add(at)));
    }
}

/// `c[i, j] += bias[j]` on an mr x nr tile (rows `ldc` apart), on the CPU's widest vectors: this
/// module is compiled for baseline x86-64, where the loop ran 4 floats wide (the output pass was
/// 4.8% of a bf16 batch-8 forward on Zen 4).
///
/// # Safety
/// `c` covers the tile; `bias` holds nr values.
unsafe fn add_bias(c: *mut f32, ldc: usize, mr: usize, nr: usize, bias: *const f32) {
    #[inline(always)]
    unsafe fn body(c: *mut f32, ldc: usize, mr: usize, nr: usize, bias: *const f32) {
        let bias = std::slice::from_raw_parts(bias, nr);
        for i in 0..mr {
            let row = std::slice::from_raw_parts_mut(c.add(i * ldc), nr);
            row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
        }
    }
    dispatch!(body(c: *mut f32, ldc: usize, mr: usize, nr: usize, bias: *const f32))
}

/// `c = c * scale + residual` on an mr x nr tile, each of the three laid out alike (rows `ldc`
/// apart); a missing `scale` or `residual` is skipped. Each element is multiplied, then added to,
/// as two roundings: the same bits as the two passes it replaces.
///
/// # Safety
/// `c` covers the tile; `scale` and `residual`, when given, cover a tile of the same layout.
unsafe fn scale_add(
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    scale: Option<*const f32>,
    residual: Option<*const f32>,
) {
    #[inline(always)]
    unsafe fn body(
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        scale: Option<*const f32>,
        residual: Option<*const f32>,
    ) {
        for i in 0..mr {
            let row = std::slice::from_raw_parts_mut(c.add(i * ldc), nr);
            if let Some(scale) = scale {
                let s = std::slice::from_raw_parts(scale.add(i * ldc), nr);
                row.iter_mut().zip(s).for_each(|(x, s)| *x *= s);
            }
            if let Some(residual) = residual {
                let r = std::slice::from_raw_parts(residual.add(i * ldc), nr);
                row.iter_mut().zip(r).for_each(|(x, r)| *x += r);
            }
        }
    }
    dispatch!(
        body(c: *mut f32, ldc: usize, mr: usize, nr: usize, scale: Option<*const f32>, residual: Option<*const f32>)
    )
}
