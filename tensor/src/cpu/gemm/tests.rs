use super::*;
use crate::SplitMix64;
use proptest::prelude::*;

pub(crate) fn act_ref(act: Activation, x: f64) -> f64 {
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::Gelu => crate::testing::gelu_f64(x),
    }
}

/// Every kernel this CPU runs, the bf16 ones included (checked on their rounded operands).
fn isas() -> Vec<Isa> {
    [Isa::Avx512, Isa::Avx2Fma, Isa::Generic, Isa::Avx512Bf16, Isa::Amx, Isa::Bf16OnFma]
        .into_iter()
        .filter(|i| i.available())
        .collect()
}

/// What the bf16 kernel multiplies: `x` rounded to bf16 (nearest even).
fn bf16_rounded(x: f32) -> f64 {
    half::bf16::from_f32(x).to_f64()
}

/// One test case: operands with arbitrary strides (transposed or padded), C with padding.
#[derive(Clone)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    a_rs: usize,
    a_cs: usize,
    b: Vec<f32>,
    b_rs: usize,
    b_cs: usize,
    c: Vec<f32>,
    ldc: usize,
    bias: Option<Vec<f32>>,
}

fn strides(rows: usize, cols: usize, transposed: bool, pad: usize) -> (usize, usize, usize) {
    // (row stride, col stride, buffer length) with `pad` extra elements per leading dim.
    if transposed {
        (1, rows + pad, (rows + pad) * cols.max(1))
    } else {
        (cols + pad, 1, rows.max(1) * (cols + pad))
    }
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(m: usize, n: usize, k: usize, ta: bool, tb: bool, pad: usize, bias: bool, seed: u64) -> Case {
        let mut rng = SplitMix64(seed);
        let mut rand = |len: usize| (0..len).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect::<Vec<f32>>();
        let (a_rs, a_cs, alen) = strides(m, k, ta, pad);
        let (b_rs, b_cs, blen) = strides(k, n, tb, pad);
        let ldc = n + pad;
        Case {
            m,
            n,
            k,
            a: rand(alen),
            a_rs,
            a_cs,
            b: rand(blen),
            b_rs,
            b_cs,
            c: rand(m * ldc),
            ldc,
            bias: bias.then(|| rand(n)),
        }
    }

    /// The f64 product; with `bf16`, of the operands rounded to bf16 (what that kernel multiplies).
    fn expected(&self, accumulate: bool, act: Activation, bf16: bool) -> Vec<f64> {
        let op = |x: f32| if bf16 { bf16_rounded(x) } else { x as f64 };
        let mut out = self.c.iter().map(|&x| x as f64).collect::<Vec<_>>();
        for i in 0..self.m {
            for j in 0..self.n {
                let mut acc = 0.0f64;
                for p in 0..self.k {
                    acc += op(self.a[i * self.a_rs + p * self.a_cs]) * op(self.b[p * self.b_rs + j * self.b_cs]);
                }
                let o = &mut out[i * self.ldc + j];
                acc += if accumulate { *o } else { 0.0 };
                acc += self.bias.as_ref().map_or(0.0, |b| b[j] as f64);
                *o = act_ref(act, acc);
            }
        }
        out
    }

    fn run(&self, accumulate: bool, act: Activation, isa: Isa, parallel: bool) -> Vec<f32> {
        self.run_with(&GemmOpts {
            accumulate,
            bias: self.bias.as_deref(),
            act,
            parallel,
            isa: Some(isa),
            ..GemmOpts::default()
        })
    }

    /// The product into a copy of C with any options.
    fn run_with(&self, opts: &GemmOpts) -> Vec<f32> {
        let mut c = self.c.clone();
        #[rustfmt::skip]
        sgemm_with(self.m, self.n, self.k, &self.a, self.a_rs, self.a_cs, &self.b, self.b_rs, self.b_cs,
            &mut c, self.ldc, opts);
        c
    }

    /// The same case with A's rows (row-major, contiguous) `apart` floats apart, NaN between
    /// rows: 1024 (4 KiB), which no rows kernel reads in place, so the driver packs A; 512 (2
    /// KiB), packed for AVX2 and read in place by AVX-512.
    fn with_a_rows_apart(&self, apart: usize) -> Case {
        assert!(self.a_cs == 1 && self.k <= apart, "with_a_rows_apart: A must be row-major, k <= {apart}");
        let mut a = vec![f32::NAN; self.m * apart];
        for i in 0..self.m {
            a[i * apart..][..self.k].copy_from_slice(&self.a[i * self.a_rs..][..self.k]);
        }
        Case { a, a_rs: apart, ..self.clone() }
    }

    /// Values laid out as C (an epilogue's gradient or scale), uniform in [-2, 2).
    fn like_c(&self, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64(seed);
        (0..self.c.len()).map(|_| rng.uniform() as f32 * 4.0 - 2.0).collect()
    }

    fn check(&self, accumulate: bool, act: Activation, isa: Isa, parallel: bool) {
        let got = self.run(accumulate, act, isa, parallel);
        let want = self.expected(accumulate, act, isa.is_bf16());
        let tol = 1e-5 * (self.k as f64 + 4.0);
        for (idx, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                "{isa:?} m={} n={} k={} acc={accumulate} act={act:?}: C[{idx}] = {g}, want {w}",
                self.m,
                self.n,
                self.k
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sgemm_matches_f64_reference(
        m in 1usize..70, n in 1usize..70, k in 1usize..70,
        ta: bool, tb: bool, pad in 0usize..3, accumulate: bool, isa_pick in 0usize..5, seed: u64,
    ) {
        let all = isas();
        let isa = all[isa_pick % all.len()];
        Case::new(m, n, k, ta, tb, pad, false, seed).check(accumulate, Activation::None, isa, true);
    }

    #[test]
    fn fused_epilogue_matches_reference(
        m in 1usize..40, n in 1usize..40, k in 1usize..40, tb: bool, bias: bool,
        act_pick in 0usize..3, accumulate: bool, seed: u64,
    ) {
        let act = [Activation::None, Activation::Relu, Activation::Gelu][act_pick];
        Case::new(m, n, k, false, tb, 0, bias, seed).check(accumulate, act, Isa::detect(), true);
    }
}

/// Every kernel on shapes that cross the blocking boundaries (several depth blocks, several
/// row blocks, edge tiles on both sides), single- and multi-threaded.
#[test]
fn each_isa_on_blocked_shapes() {
    let shapes = [(1, 1, 1), (14, 32, 256), (15, 33, 257), (350, 45, 300), (37, 100, 520), (64, 64, 0)];
    for isa in isas() {
        for (idx, &(m, n, k)) in shapes.iter().enumerate() {
            for (ta, tb) in [(false, false), (true, true), (false, true)] {
                let case = Case::new(m, n, k, ta, tb, 1, idx % 2 == 0, idx as u64);
                case.check(false, Activation::Gelu, isa, true);
                case.check(true, Activation::None, isa, false);
            }
        }
    }
}

/// The AMX tile loop on depths it takes (multiples of 32): one tile, edge tiles on both sides,
/// several depth blocks (KC = 512), row blocks (MC = 256) and strided operands; against the f64
/// product of the rounded operands, and against the AVX512-BF16 kernel (same rounding, other
/// summation order).
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_tiles_on_whole_depth_steps() {
    if !Isa::Amx.available() {
        eprintln!("skipped: this CPU (or OS) has no AMX");
        return;
    }
    let shapes = [(32, 32, 32), (1, 1, 32), (33, 31, 64), (300, 70, 544), (64, 40, 1056), (17, 600, 96)];
    for (idx, &(m, n, k)) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, true), (false, true)] {
            let case = Case::new(m, n, k, ta, tb, idx % 3, idx % 2 == 0, 40 + idx as u64);
            case.check(false, Activation::Gelu, Isa::Amx, true);
            case.check(true, Activation::None, Isa::Amx, false);
            let (amx, avx) = (
                case.run(true, Activation::None, Isa::Amx, true),
                case.run(true, Activation::None, Isa::Avx512Bf16, true),
            );
            let worst = amx.iter().zip(&avx).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4 * k as f32, "AMX vs AVX512-BF16 m={m} n={n} k={k}: {worst}");
        }
    }
}

/// Large enough to be split over threads, in both split directions.
#[test]
fn threaded_split_over_rows_and_columns() {
    for (m, n, k) in [(300, 40, 90), (20, 700, 60), (129, 129, 129)] {
        Case::new(m, n, k, false, false, 0, true, 7).check(false, Activation::Relu, Isa::detect(), true);
        Case::new(m, n, k, true, true, 0, false, 8).check(true, Activation::None, Isa::detect(), true);
    }
}

/// The AVX-512 transposing pack equals the scalar one, edges and zero padding included.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_pack_matches_scalar() {
    if !Isa::Avx512.available() {
        return;
    }
    for kc in [1, 15, 16, 17, 40] {
        for rows in [1, 7, 14] {
            transposed_pack_matches_scalar::<14>(pack::avx512::pack_transposed::<14>, rows, kc);
        }
        for rows in [1, 16, 17, 32] {
            transposed_pack_matches_scalar::<32>(pack::avx512::pack_transposed::<32>, rows, kc);
        }
    }
}

/// A transposing pack (`fast`, runnable on this CPU) of `rows` x `kc` (source rows kc + 3 apart)
/// equals the scalar one, zero padding included.
#[cfg(target_arch = "x86_64")]
fn transposed_pack_matches_scalar<const R: usize>(
    fast: unsafe fn(usize, usize, *const f32, usize, *mut f32),
    rows: usize,
    kc: usize,
) {
    let s_row = kc + 3;
    let src: Vec<f32> = (0..rows * s_row).map(|i| i as f32).collect();
    let (mut got, mut want) = (vec![f32::NAN; R * kc], vec![f32::NAN; R * kc]);
    // SAFETY: the caller checked the CPU runs `fast`; both write R x kc values from rows in bounds.
    unsafe {
        fast(rows, kc, src.as_ptr(), s_row, got.as_mut_ptr());
        pack::pack_panel_scalar::<R>(rows, kc, src.as_ptr(), s_row, 1, want.as_mut_ptr());
    }
    assert_eq!(got, want, "R={R} rows={rows} kc={kc}");
}

/// The AVX2 transposing pack equals the scalar one, edges and zero padding included.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_pack_matches_scalar() {
    if !pack::avx2::available() {
        eprintln!("skipped: this CPU has no AVX2");
        return;
    }
    for kc in [1, 7, 8, 9, 16, 40] {
        for rows in [1, 7, 8, 9, 15, 16] {
            transposed_pack_matches_scalar::<16>(pack::avx2::pack_transposed::<16>, rows, kc);
        }
        for rows in [1, 8] {
            transposed_pack_matches_scalar::<8>(pack::avx2::pack_transposed::<8>, rows, kc);
        }
        // Panels that are not a multiple of 8: the AVX2 kernel's 6-row A, and 14 and 3 (every
        // partial-group store width).
        for rows in [1, 5, 6] {
            transposed_pack_matches_scalar::<6>(pack::avx2::pack_transposed::<6>, rows, kc);
        }
        for rows in [1, 9, 14] {
            transposed_pack_matches_scalar::<14>(pack::avx2::pack_transposed::<14>, rows, kc);
        }
        for rows in [1, 3] {
            transposed_pack_matches_scalar::<3>(pack::avx2::pack_transposed::<3>, rows, kc);
        }
    }
}

/// A full panel with its panel dimension contiguous, copied with a compile-time size, equals
/// the scalar pack (both A's transposed panels, R = 6, and B's, R = 16).
#[test]
fn full_panel_copy_matches_scalar() {
    fn check<const R: usize>(kc: usize) {
        let s_k = R + 5;
        let src: Vec<f32> = (0..kc * s_k).map(|i| i as f32).collect();
        let (mut got, mut want) = (vec![f32::NAN; R * kc], vec![f32::NAN; R * kc]);
        // SAFETY: both read R values at each of kc depths s_k apart and write R x kc values.
        unsafe {
            pack::copy_full_panel::<R>(kc, src.as_ptr(), s_k, got.as_mut_ptr());
            pack::pack_panel_scalar::<R>(R, kc, src.as_ptr(), 1, s_k, want.as_mut_ptr());
        }
        assert_eq!(got, want, "R={R} kc={kc}");
    }
    for kc in [1, 2, 33] {
        check::<6>(kc);
        check::<16>(kc);
        check::<14>(kc);
    }
}

/// The bf16 packs (depth-contiguous rows, panel-contiguous rows) equal the scalar one, odd
/// depths, partial panels and zero padding included.
#[cfg(target_arch = "x86_64")]
#[test]
fn bf16_packs_match_scalar() {
    if !Isa::Avx512Bf16.available() {
        return;
    }
    fn both<const R: usize>(rows: usize, kc: usize, depth_contiguous: bool) {
        let (s_panel, s_k) = if depth_contiguous { (kc + 3, 1) } else { (1, R + 5) };
        let len = rows.max(1) * s_panel.max(1) + kc * s_k + R;
        let src: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let kp = kc.div_ceil(2);
        let (mut fast, mut slow) = (vec![u32::MAX; R * kp], vec![u32::MAX; R * kp]);
        unsafe {
            bf16::pack_pairs::<R>(rows, kc, src.as_ptr(), s_panel, s_k, fast.as_mut_ptr());
            bf16::pack_scalar::<R>(rows, kc, src.as_ptr(), s_panel, s_k, slow.as_mut_ptr());
        }
        assert_eq!(fast, slow, "R={R} rows={rows} kc={kc} depth_contiguous={depth_contiguous}");
    }
    for depth_contiguous in [true, false] {
        for kc in [1, 2, 15, 16, 17, 31, 32, 33, 63, 80] {
            for rows in [1, 7, 14] {
                both::<14>(rows, kc, depth_contiguous);
            }
            for rows in [1, 16, 17, 32] {
                both::<32>(rows, kc, depth_contiguous);
            }
        }
    }
}

/// A B packed once gives the bits of the product that packs it per call: depth blocks, edge
/// panels, both thread splits (column sub-products start inside the packed B).
#[cfg(target_arch = "x86_64")]
#[test]
fn prepacked_b_equals_packing_per_call() {
    if !Isa::Avx512Bf16.available() {
        return;
    }
    let cases =
        [(30, 45, 20, false), (350, 100, 600, true), (20, 700, 1030, true), (3, 33, 1, false), (40, 100, 1024, true)];
    let bf16_isas = [Isa::Avx512Bf16, Isa::Amx].into_iter().filter(|i| i.available());
    for (isa, (m, n, k, tb)) in bf16_isas.flat_map(|isa| cases.map(|c| (isa, c))) {
        let case = Case::new(m, n, k, false, tb, 0, true, 5);
        let packed = bf16::PackedB::new(k, n, &case.b, case.b_rs, case.b_cs).unwrap();
        for parallel in [false, true] {
            let c = case.run_with(&GemmOpts {
                bias: case.bias.as_deref(),
                act: Activation::Gelu,
                parallel,
                isa: Some(isa),
                packed_b: Some(&packed),
                ..GemmOpts::default()
            });
            assert_eq!(c, case.run(false, Activation::Gelu, isa, parallel), "{isa:?} m={m} n={n} k={k}");
        }
    }
}

/// bf16 products on the f32 kernel are the f32 kernel's product of the operands rounded to bf16
/// (by `half`, not by the vector rounding they use), bit for bit: strided and padded operands,
/// edge tiles, several depth blocks, a small product (its B read in place), accumulation, the
/// fused output pass, both thread splits; with B packed rounded once, the same bits again.
/// Panels packed rounded are not read by an f32 product, nor plain f32 panels by this one.
#[cfg(target_arch = "x86_64")]
#[test]
fn bf16_on_the_f32_kernel_is_the_f32_product_of_rounded_operands() {
    if !Isa::Bf16OnFma.available() {
        return;
    }
    let round = |v: &[f32]| v.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect::<Vec<f32>>();
    let cases = [
        (30, 45, 20, true, false, 0),
        (350, 100, 600, false, true, 3),
        (20, 700, 1030, false, true, 0),
        (3, 33, 1, false, false, 0),
        (47, 64, 256, true, true, 1),
        (8, 16, 64, false, false, 0),
    ];
    for (m, n, k, ta, tb, pad) in cases {
        let case = Case::new(m, n, k, ta, tb, pad, true, 11);
        let rounded = Case { a: round(&case.a), b: round(&case.b), ..case.clone() };
        let packed = PackedF32::new_bf16_rounded(k, n, &case.b, case.b_rs, case.b_cs).unwrap();
        let plain = PackedF32::new(Isa::Avx512, k, n, &case.b, case.b_rs, case.b_cs).unwrap();
        assert!(packed.bf16_rounded() && !plain.bf16_rounded());
        for (accumulate, parallel) in [(false, false), (true, true), (false, true)] {
            let want = rounded.run(accumulate, Activation::Gelu, Isa::Avx512, parallel);
            let with = |isa: Isa, packed: Option<&PackedF32>| {
                case.run_with(&GemmOpts {
                    accumulate,
                    bias: case.bias.as_deref(),
                    act: Activation::Gelu,
                    parallel,
                    isa: Some(isa),
                    packed_f32: packed,
                    ..GemmOpts::default()
                })
            };
            let what = format!("m={m} n={n} k={k} acc={accumulate} parallel={parallel}");
            assert_eq!(with(Isa::Bf16OnFma, None), want, "{what}");
            assert_eq!(with(Isa::Bf16OnFma, Some(&packed)), want, "packed rounded, {what}");
            assert_eq!(with(Isa::Bf16OnFma, Some(&plain)), want, "plain panels ignored, {what}");
            let f32 = case.run(accumulate, Activation::Gelu, Isa::Avx512, parallel);
            assert_eq!(with(Isa::Avx512, Some(&packed)), f32, "rounded panels ignored by f32, {what}");
            assert_ne!(with(Isa::Bf16OnFma, None), f32, "nothing was rounded, {what}");
        }
    }
}

/// The bf16 kernel reading a depth-contiguous A as rows of pairs gives the bits of its
/// transposing pack (the same values with A column-major): whole and partial row panels, odd
/// depths, several depth blocks, accumulation, both thread splits.
#[cfg(target_arch = "x86_64")]
#[test]
fn bf16_rows_of_a_equal_the_packed_panels() {
    if !Isa::Avx512Bf16.available() {
        return;
    }
    for (m, n, k) in [(14, 32, 2), (30, 45, 21), (350, 100, 600), (29, 64, 1030), (3, 33, 1), (700, 40, 257)] {
        let rows = Case::new(m, n, k, false, true, 0, true, 11);
        let mut cols = Case::new(m, n, k, true, true, 0, true, 12);
        for i in 0..m {
            for p in 0..k {
                cols.a[i * cols.a_rs + p * cols.a_cs] = rows.a[i * rows.a_rs + p * rows.a_cs];
            }
        }
        (cols.b, cols.c, cols.bias) = (rows.b.clone(), rows.c.clone(), rows.bias.clone());
        for (parallel, accumulate) in [(false, false), (true, false), (false, true)] {
            let got = rows.run(accumulate, Activation::Gelu, Isa::Avx512Bf16, parallel);
            let want = cols.run(accumulate, Activation::Gelu, Isa::Avx512Bf16, parallel);
            assert_eq!(got, want, "m={m} n={n} k={k} parallel={parallel} accumulate={accumulate}");
        }
        rows.check(false, Activation::None, Isa::Avx512Bf16, true);
    }
}

/// The f32 kernels on a B packed once: the bits of packing it per call, for every f32 kernel
/// this CPU has, over depth blocks (k past KC, a partial last one), edge panels (n not a
/// multiple of NR), both thread splits (a column sub-product starts inside the packed B), and
/// few rows with B untransposed (where the driver would otherwise read B in place). Panels of
/// another kernel's width are ignored, not misread.
#[test]
fn prepacked_f32_b_equals_packing_per_call() {
    let cases = [
        (30, 45, 20, false),
        (350, 100, 600, true),
        (20, 700, 1030, true),
        (3, 33, 1, false),
        (40, 100, 1024, true),
        (12, 50, 300, false),
        (300, 250, 257, false),
    ];
    let f32_isas: Vec<Isa> = [Isa::Avx512, Isa::Avx2Fma, Isa::Generic].into_iter().filter(|i| i.available()).collect();
    for (&isa, (m, n, k, tb)) in f32_isas.iter().flat_map(|isa| cases.map(|c| (isa, c))) {
        let case = Case::new(m, n, k, false, tb, 0, true, 7);
        let packed = PackedF32::new(isa, k, n, &case.b, case.b_rs, case.b_cs).unwrap();
        assert_eq!((packed.dims(), packed.nr()), ((k, n), isa.tile().1));
        for parallel in [false, true] {
            let want = case.run(false, Activation::Gelu, isa, parallel);
            for &run_isa in &f32_isas {
                let c = case.run_with(&GemmOpts {
                    bias: case.bias.as_deref(),
                    act: Activation::Gelu,
                    parallel,
                    isa: Some(run_isa),
                    packed_f32: Some(&packed),
                    ..GemmOpts::default()
                });
                let want = if run_isa == isa { &want } else { &case.run(false, Activation::Gelu, run_isa, parallel) };
                assert_eq!(&c, want, "packed for {isa:?}, run on {run_isa:?}: m={m} n={n} k={k} parallel={parallel}");
            }
        }
    }
    // The bf16 kernels have their own packing; k = 0 has nothing to pack.
    assert!(PackedF32::new(Isa::Avx512Bf16, 4, 4, &[0.0; 16], 4, 1).is_none());
    assert!(PackedF32::new(Isa::Bf16OnFma, 4, 4, &[0.0; 16], 4, 1).is_none());
    assert!(PackedF32::new(Isa::Generic, 0, 4, &[], 4, 1).is_none());
}

/// A pair holds depth 2p in its low half: the order `vdpbf16ps` pairs with the other operand's.
#[test]
fn bf16_pair_layout() {
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(bf16::pair(1.0, -2.0), 0xC000_3F80);
        assert_eq!(bf16::pair(1.0 + 1.0 / 256.0, 0.0), 0x3F80, "ties round to even");
        assert_eq!(bf16::pair(1.0 + 3.0 / 256.0, 0.0), 0x3F82, "ties round to even");
    }
}

/// The process-wide precision picks the bf16 kernel where the CPU has it, the f32 one elsewhere.
#[test]
fn precision_picks_the_kernel() {
    assert_eq!(Isa::for_precision(MatmulPrecision::F32), Isa::detect());
    let bf16 = Isa::for_precision(MatmulPrecision::Bf16);
    assert_eq!(bf16.is_bf16(), Isa::Avx512Bf16.available());
    assert_eq!(bf16 == Isa::Amx, Isa::Amx.available());
    let on_fma = Isa::Avx512Bf16.available() && !Isa::Amx.available() && bf16_dot_is_slow();
    assert_eq!(bf16 == Isa::Bf16OnFma, on_fma);
    assert_eq!(bf16.multiplies_bf16_pairs(), bf16.is_bf16() && !on_fma);
    assert!(bf16.available());
}

#[test]
#[should_panic(expected = "A too short")]
fn short_operand_panics() {
    let mut c = vec![0.0; 4];
    sgemm(2, 2, 2, &[1.0; 3], 2, 1, &[1.0; 4], 2, 1, &mut c, 2, false);
}

/// The fused output passes' shapes: whole and edge tiles, a wide C, and k = 0.
const EPILOGUE_SHAPES: [(usize, usize, usize); 6] =
    [(1, 1, 1), (7, 9, 5), (33, 70, 40), (130, 47, 96), (64, 512, 128), (5, 3, 0)];

/// The activation-gradient output pass equals the plain product followed by `activate_grad`
/// (the composite: z stored, then the backward rule), bit for bit, for every kernel, whole and
/// edge tiles, padded C, bias or not, threads or not, and a product with k = 0.
#[test]
fn act_grad_output_pass_equals_product_then_activate_grad() {
    let mut seed = 40;
    for isa in isas() {
        for &(m, n, k) in &EPILOGUE_SHAPES {
            for act in [Activation::Gelu, Activation::Relu, Activation::None] {
                for (bias, pad, parallel) in [(true, 0, true), (false, 2, false), (true, 1, false)] {
                    seed += 1;
                    let case = Case::new(m, n, k, seed % 2 == 0, seed % 3 == 0, pad, bias, seed);
                    let g = case.like_c(seed ^ 0xAB);
                    let mut want = case.run(false, Activation::None, isa, parallel);
                    for i in 0..m {
                        let r = i * case.ldc..i * case.ldc + n;
                        activate_grad(act, &mut want[r.clone()], &g[r]);
                    }
                    let got = case.run_with(&GemmOpts {
                        bias: case.bias.as_deref(),
                        act,
                        act_grad: Some(&g),
                        parallel,
                        isa: Some(isa),
                        ..GemmOpts::default()
                    });
                    assert_eq!(got, want, "{isa:?} {act:?} m={m} n={n} k={k} bias={bias} pad={pad}");
                }
            }
        }
    }
}

/// The activation output pass equals the plain product followed by `activate` on each row, bit
/// for bit (the inference model fuses it, the training model applies the op after), for every
/// kernel, whole and edge tiles, padded C, bias or not, threads or not, and k = 0.
#[test]
fn act_output_pass_equals_product_then_activate() {
    let mut seed = 70;
    for isa in isas() {
        for &(m, n, k) in &EPILOGUE_SHAPES {
            for act in [Activation::Gelu, Activation::Relu] {
                for (bias, pad, parallel) in [(true, 0, true), (false, 2, false), (true, 1, false)] {
                    seed += 1;
                    let case = Case::new(m, n, k, seed % 2 == 0, seed % 3 == 0, pad, bias, seed);
                    let mut want = case.run(false, Activation::None, isa, parallel);
                    for i in 0..m {
                        activate(act, &mut want[i * case.ldc..i * case.ldc + n]);
                    }
                    let got = case.run(false, act, isa, parallel);
                    assert_eq!(got, want, "{isa:?} {act:?} m={m} n={n} k={k} bias={bias} pad={pad}");
                }
            }
        }
    }
}

/// The output passes that end with an elementwise step on values laid out as C.
#[derive(Clone, Copy, Debug)]
enum ElementwisePass {
    /// `GemmOpts::scale`: C ⊙ s.
    Scale,
    /// `GemmOpts::residual`: C + r.
    Residual,
}

/// `pass` on every kernel equals the plain product (with its bias and activation) followed by
/// that elementwise step, bit for bit: whole and edge tiles, padded C, threads or not, k = 0.
/// Cases are drawn from `seed` on, their values from `seed ^ salt`.
fn elementwise_pass_equals_product_then_step(
    pass: ElementwisePass,
    mut seed: u64,
    salt: u64,
    shapes: &[(usize, usize, usize)],
    variants: &[(Activation, bool, usize, bool)],
) {
    for isa in isas() {
        for &(m, n, k) in shapes {
            for &(act, bias, pad, parallel) in variants {
                seed += 1;
                let case = Case::new(m, n, k, seed.is_multiple_of(2), seed.is_multiple_of(3), pad, bias, seed);
                let v = case.like_c(seed ^ salt);
                let mut want = case.run(false, act, isa, parallel);
                for i in 0..m {
                    for j in i * case.ldc..i * case.ldc + n {
                        match pass {
                            ElementwisePass::Scale => want[j] *= v[j],
                            ElementwisePass::Residual => want[j] += v[j],
                        }
                    }
                }
                let opts =
                    GemmOpts { bias: case.bias.as_deref(), act, parallel, isa: Some(isa), ..GemmOpts::default() };
                let got = case.run_with(&match pass {
                    ElementwisePass::Scale => GemmOpts { scale: Some(&v), ..opts },
                    ElementwisePass::Residual => GemmOpts { residual: Some(&v), ..opts },
                });
                assert_eq!(got, want, "{pass:?} {isa:?} {act:?} m={m} n={n} k={k} bias={bias} pad={pad}");
            }
        }
    }
}

/// The scaling output pass equals the plain product (with its bias and activation) followed by
/// an elementwise multiply.
#[test]
fn scale_output_pass_equals_product_then_multiply() {
    let variants =
        [(Activation::None, false, 0, true), (Activation::Gelu, true, 2, false), (Activation::None, true, 1, false)];
    elementwise_pass_equals_product_then_step(ElementwisePass::Scale, 90, 0x5C, &EPILOGUE_SHAPES, &variants);
}

/// The bias, which the f32 kernels add to a whole tile before storing it (and the residual
/// after it when no activation comes between), gives the bits of the product without a bias
/// followed by adding it in a separate pass: every kernel, whole and edge tiles, several depth
/// blocks, added to C or not, A read in place or packed, B packed per call or once, one thread
/// or two. Tested apart from the residual pass, whose expected values already carry a bias.
#[test]
fn bias_in_the_kernel_equals_product_then_add() {
    let shapes = [(1, 1, 1), (14, 32, 7), (28, 64, 300), (33, 70, 40), (130, 47, 600), (64, 512, 128)];
    let mut seed = 300u64;
    for isa in isas() {
        for (m, n, k) in shapes {
            for (accumulate, parallel, pad, ta) in
                [(false, true, 0, false), (true, false, 1, true), (true, true, 3, false)]
            {
                seed += 1;
                let case = Case::new(m, n, k, ta, seed.is_multiple_of(2), pad, true, seed);
                let bias = case.bias.as_deref().unwrap();
                let plain = GemmOpts { accumulate, parallel, isa: Some(isa), ..GemmOpts::default() };
                let mut want = case.run_with(&plain);
                for i in 0..m {
                    want[i * case.ldc..i * case.ldc + n].iter_mut().zip(bias).for_each(|(x, b)| *x += b);
                }
                let got = case.run_with(&GemmOpts { bias: Some(bias), ..plain });
                assert_eq!(got, want, "{isa:?} m={m} n={n} k={k} accumulate={accumulate} parallel={parallel}");
                if let Some(packed) = PackedF32::new(isa, k, n, &case.b, case.b_rs, case.b_cs) {
                    let got = case.run_with(&GemmOpts { bias: Some(bias), packed_f32: Some(&packed), ..plain });
                    assert_eq!(got, want, "{isa:?} prepacked m={m} n={n} k={k} accumulate={accumulate}");
                }
            }
        }
    }
}

/// The residual epilogue gives `r + (A·B + bias)`, the bits of the product followed by an add.
#[test]
fn residual_epilogue_equals_product_then_add() {
    let shapes: Vec<_> = EPILOGUE_SHAPES.iter().copied().chain([(9, 21, 0)]).collect();
    let variants =
        [(Activation::None, false, 0, true), (Activation::None, true, 2, false), (Activation::None, true, 1, true)];
    elementwise_pass_equals_product_then_step(ElementwisePass::Residual, 190, 0x2E, &shapes, &variants);
}

#[test]
fn new_output_equals_product_into_zeros_on_every_isa() {
    // Blocked and edge shapes, k = 0 (bias only) included; every ISA; with and without the
    // fused output pass. A large NaN-filled buffer is freed first, so the unfilled output is
    // likely to reuse dirty memory: any element the product failed to write would show.
    for &(m, n, k) in &[(1, 1, 1), (37, 45, 300), (200, 70, 33), (15, 33, 0), (500, 64, 128)] {
        let case = Case::new(m, n, k, false, true, 0, true, (m * n + k) as u64);
        for isa in isas() {
            for act in [Activation::None, Activation::Gelu] {
                drop(std::hint::black_box(vec![f32::NAN; 1 << 20]));
                let opts = GemmOpts { bias: case.bias.as_deref(), act, isa: Some(isa), ..GemmOpts::default() };
                #[rustfmt::skip]
                let got = sgemm_new(m, n, k, &case.a, case.a_rs, case.a_cs, &case.b, case.b_rs, case.b_cs, &opts);
                let mut want = vec![0.0f32; m * n];
                #[rustfmt::skip]
                sgemm_with(m, n, k, &case.a, case.a_rs, case.a_cs, &case.b, case.b_rs, case.b_cs, &mut want, n, &opts);
                assert_eq!(got.len(), m * n);
                let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "{isa:?} {m}x{n}x{k} {act:?}: sgemm_new differs from the product into zeros");
            }
        }
    }
}

#[test]
#[should_panic(expected = "nothing to accumulate")]
fn new_output_refuses_to_accumulate() {
    let opts = GemmOpts { accumulate: true, ..GemmOpts::default() };
    sgemm_new(1, 1, 1, &[1.0], 1, 1, &[1.0], 1, 1, &opts);
}

/// An ISA's edge kernel gives, for every edge shape (mr rows, nr columns, with and without
/// adding to C), the bits its whole-tile kernel gives on the same packed panels: the driver may
/// use either.
///
/// # Safety
/// The CPU must run both kernels, whose tile is `MR` x `NR`.
#[cfg(target_arch = "x86_64")]
unsafe fn edge_tiles_equal_the_whole_tile<const MR: usize, const NR: usize>(
    kernel: super::kernels::KernelFn,
    edge: super::kernels::EdgeFn,
) {
    let kc = 37;
    let mut rng = SplitMix64(11);
    let mut rand = |len: usize| (0..len).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect::<Vec<f32>>();
    let (a, b, c0) = (rand(MR * kc), rand(NR * kc), rand(MR * NR));
    for load_c in [false, true] {
        let mut whole = c0.clone();
        // a and b are packed panels of kc depths, C is MR x NR.
        kernel(kc, a.as_ptr(), b.as_ptr(), NR, whole.as_mut_ptr(), NR, load_c, super::kernels::Fused::NONE);
        for mr in 1..=MR {
            for nr in 1..=NR {
                let mut part = c0.clone();
                // The edge kernel writes at most MR x NR values.
                edge(mr, nr, kc, a.as_ptr(), b.as_ptr(), NR, part.as_mut_ptr(), NR, load_c);
                for i in 0..mr {
                    assert_eq!(part[i * NR..i * NR + nr], whole[i * NR..i * NR + nr], "mr={mr} nr={nr} row {i}");
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_edge_tiles_equal_the_whole_tile() {
    use super::kernels::avx2::{edge, kernel, MR, NR};
    if !Isa::Avx2Fma.available() {
        eprintln!("skipped: this CPU has no AVX2 + FMA");
        return;
    }
    // SAFETY: the CPU has AVX2 + FMA; the kernels' tile is MR x NR.
    unsafe { edge_tiles_equal_the_whole_tile::<MR, NR>(kernel, edge) }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_edge_tiles_equal_the_whole_tile() {
    use super::kernels::avx512::{edge, kernel, MR, NR};
    if !Isa::Avx512.available() {
        eprintln!("skipped: this CPU has no AVX-512F");
        return;
    }
    // SAFETY: the CPU has AVX-512F; the kernels' tile is MR x NR.
    unsafe { edge_tiles_equal_the_whole_tile::<MR, NR>(kernel, edge) }
}

/// A row-major A read in place by the rows kernels (rows not a multiple of 4 KiB apart) gives
/// the same bits as the packed path (the same A with rows 1024 floats apart, which is packed,
/// and 512 apart, packed on AVX2),
/// on every f32 ISA this CPU runs: whole and edge row panels, one and two depth blocks, column
/// edges, accumulation, the fused output pass and a thread split.
#[test]
fn a_read_in_place_equals_a_packed_bit_for_bit() {
    for isa in [Isa::Avx512, Isa::Avx2Fma, Isa::Generic].into_iter().filter(|i| i.available()) {
        for (seed, (m, n, k)) in
            [(3 * 14 + 5, 70, 300), (29, 33, 17), (14, 32, 256), (6, 16, 1)].into_iter().enumerate()
        {
            let in_place = Case::new(m, n, k, false, false, 3, true, seed as u64);
            assert_eq!((in_place.a_rs, in_place.a_cs), (k + 3, 1));
            let others = [1024, 512].map(|apart| (apart, in_place.with_a_rows_apart(apart)));
            for (accumulate, act, parallel) in [(false, Activation::None, false), (true, Activation::Gelu, true)] {
                let got = in_place.run(accumulate, act, isa, parallel);
                for (apart, other) in &others {
                    let want = other.run(accumulate, act, isa, parallel);
                    let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                    let what = format!("{isa:?} m={m} n={n} k={k} accumulate={accumulate}");
                    assert!(same, "{what}: rows {} and {apart} apart differ", k + 3);
                }
            }
        }
    }
}

/// Where the blocked loop reads a row-major A in place (the bits are the same either way, see
/// above): never with rows a multiple of 4 KiB apart; with rows 2 KiB apart only for a kernel
/// whose B panel does not stay in L1 (AVX-512's 32 columns, not AVX2's 16).
#[test]
fn blocked_loop_packs_a_whose_rows_share_l1_sets() {
    use super::driver::blocked_reads_a_in_place as in_place;
    for (a_rs, avx2, avx512) in [(515, true, true), (256, true, true), (512, false, true), (1024, false, false)] {
        assert_eq!(in_place::<16>(a_rs), avx2, "AVX2 (NR 16), rows {a_rs} apart");
        assert_eq!(in_place::<32>(a_rs), avx512, "AVX-512 (NR 32), rows {a_rs} apart");
    }
}

/// The AVX2 column kernel (whole tiles in one call) gives the bits of the per-tile loop it
/// replaces (the same kernels on each tile, then the output pass), on every path through the
/// driver: A read in place, packed or transposed; B packed in each call, read in place or
/// packed once; edge rows and columns, two depth blocks, two row blocks, no whole tile; every
/// output-pass step; one and two threads.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_column_kernel_equals_the_tile_loop_bit_for_bit() {
    use super::kernels::{avx2, Kernels};
    if !Isa::Avx2Fma.available() {
        eprintln!("skipped: this CPU has no AVX2 + FMA");
        return;
    }
    let per_tile = Kernels { column: None, ..avx2::KERNELS };
    let shapes = [(6 * 5 + 4, 16 * 3 + 7, 300), (12, 32, 17), (400, 40, 64), (5, 16, 8), (18, 16, 1)];
    for (seed, &(m, n, k)) in shapes.iter().enumerate() {
        // A in place (rows k + 3 apart), packed (rows 1024 apart), transposed; B plain or
        // transposed.
        for (ta, tb, a_far) in [(false, false, false), (false, false, true), (true, true, false)] {
            let mut case = Case::new(m, n, k, ta, tb, 3, true, seed as u64);
            if a_far {
                case = case.with_a_rows_apart(1024);
            }
            let (g, s, r) =
                (case.like_c(seed as u64 + 100), case.like_c(seed as u64 + 200), case.like_c(seed as u64 + 300));
            let packed = PackedF32::new(Isa::Avx2Fma, k, n, &case.b, case.b_rs, case.b_cs).expect("AVX2 packs B");
            for (step, threads) in [(0, 1), (1, 2), (2, 1), (3, 2), (4, 1)] {
                for prepacked in [false, true] {
                    let run = |kernels: Kernels| {
                        let mut c = case.c.clone();
                        let p = Problem {
                            m,
                            n,
                            k,
                            a: case.a.as_ptr(),
                            a_rs: case.a_rs,
                            a_cs: case.a_cs,
                            b: case.b.as_ptr(),
                            b_rs: case.b_rs,
                            b_cs: case.b_cs,
                            c: c.as_mut_ptr(),
                            ldc: case.ldc,
                            accumulate: step == 1 || step == 4,
                            bias: [1, 3, 4].contains(&step).then(|| case.bias.as_ref().unwrap().as_ptr()),
                            act: if [1, 2].contains(&step) { Activation::Gelu } else { Activation::None },
                            act_grad: (step == 2).then_some(g.as_ptr()),
                            scale: (step == 3).then_some(s.as_ptr()),
                            residual: [3, 4].contains(&step).then_some(r.as_ptr()),
                            packed_b: None,
                            packed_f32: prepacked.then_some(&packed as *const PackedF32),
                            col0: 0,
                        };
                        // SAFETY: the case's buffers hold the operands as described; AVX2 + FMA
                        // were checked above.
                        unsafe { driver::run::<{ avx2::MR }, { avx2::NR }>(kernels, &p, threads, false) };
                        c
                    };
                    let (got, want) = (run(avx2::KERNELS), run(per_tile));
                    let same = got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                    let what =
                        format!("m={m} n={n} k={k} ta={ta} tb={tb} a_far={a_far} step={step} prepacked={prepacked}");
                    assert!(same, "{what}: the column kernel and the tile loop differ");
                    // And both are the product (the tile loop has its own tests; this catches a
                    // column that skipped its tiles along with the loop).
                    if step == 0 {
                        let expected = Case { bias: None, ..case.clone() }.expected(false, Activation::None, false);
                        for i in 0..m {
                            for j in 0..n {
                                let (x, e) = (got[i * case.ldc + j] as f64, expected[i * case.ldc + j]);
                                assert!((x - e).abs() <= 1e-4 * (1.0 + e.abs()), "{what}: ({i}, {j}) {x} vs {e}");
                            }
                        }
                    }
                }
            }
        }
    }
}
