use super::*;
use crate::SplitMix64;

fn rand(shape: &[usize], seed: u64, amp: f32) -> Tensor {
    let mut rng = SplitMix64(seed);
    let len = shape.iter().product();
    Tensor::from_vec((0..len).map(|_| (rng.uniform() as f32 * 2.0 - 1.0) * amp).collect(), shape).unwrap()
}

/// The composite twin: the ops the autograd model records.
fn composite(qkv: &Tensor, heads: usize, bias: Option<&Tensor>, mask: Option<&Tensor>, scale: f32) -> Tensor {
    let s = qkv.shape();
    let (b, n, d) = (s[0], s[1], s[2] / (3 * heads));
    let parts = qkv.reshape(&[b, n, 3, heads, d]).unwrap().permute(&[2, 0, 3, 1, 4]).unwrap();
    let q = parts.select(0, 0).unwrap().affine(scale as f64, 0.0).unwrap();
    let k = parts.select(0, 1).unwrap();
    let v = parts.select(0, 2).unwrap();
    let mut att = q.matmul(&k.transpose(-2, -1).unwrap()).unwrap();
    if let Some(bias) = bias {
        att = att.add(bias).unwrap();
    }
    if let Some(m) = mask {
        let nw = m.shape()[0];
        let m = m.reshape(&[nw, 1, n, n]).unwrap();
        att = att.reshape(&[b / nw, nw, heads, n, n]).unwrap().add(&m).unwrap().reshape(&[b, heads, n, n]).unwrap();
    }
    let o = att.softmax(-1).unwrap().matmul(&v).unwrap();
    o.permute(&[0, 2, 1, 3]).unwrap().contiguous().reshape(&[b, n, heads * d]).unwrap()
}

/// f64 loops straight from the definition.
fn reference(qkv: &Tensor, heads: usize, bias: Option<&Tensor>, mask: Option<&Tensor>, scale: f32) -> Vec<f64> {
    let s = qkv.shape();
    let (b, n, d) = (s[0], s[1], s[2] / (3 * heads));
    let c = heads * d;
    let x = qkv.to_vec::<f32>().unwrap();
    let bias = bias.map(|t| t.to_vec::<f32>().unwrap());
    let mask = mask.map(|t| (t.shape()[0], t.to_vec::<f32>().unwrap()));
    let mut out = vec![0.0f64; b * n * c];
    for w in 0..b {
        for h in 0..heads {
            for i in 0..n {
                let at = |t: usize, part: usize, e: usize| x[(w * n + t) * 3 * c + part * c + h * d + e] as f64;
                let mut sc: Vec<f64> = (0..n)
                    .map(|j| {
                        let dot: f64 = (0..d).map(|e| at(i, 0, e) * at(j, 1, e)).sum();
                        let bb = bias.as_ref().map_or(0.0, |bv| bv[(h * n + i) * n + j] as f64);
                        let mm = mask.as_ref().map_or(0.0, |(nw, mv)| mv[((w % nw) * n + i) * n + j] as f64);
                        scale as f64 * dot + bb + mm
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                sc.iter_mut().for_each(|v| *v = (*v - mx).exp());
                let sum: f64 = sc.iter().sum();
                for e in 0..d {
                    out[(w * n + i) * c + h * d + e] = (0..n).map(|j| sc[j] / sum * at(j, 2, e)).sum();
                }
            }
        }
    }
    out
}

fn check(b: usize, n: usize, heads: usize, d: usize, bias: bool, nw: Option<usize>, seed: u64) {
    let qkv = rand(&[b, n, 3 * heads * d], seed, 1.5);
    let bias = bias.then(|| rand(&[heads, n, n], seed + 1, 2.0));
    // A Swin-like mask: 0 or -100 (some rows see only part of the window).
    let mask = nw.map(|nw| {
        let m = rand(&[nw, n, n], seed + 2, 1.0);
        let v: Vec<f32> = m.to_vec::<f32>().unwrap().iter().map(|&x| if x > 0.3 { -100.0 } else { 0.0 }).collect();
        Tensor::from_vec(v, &[nw, n, n]).unwrap()
    });
    let scale = (d as f32).powf(-0.5);
    let got = qkv.window_attention(heads, bias.as_ref(), mask.as_ref(), scale).unwrap();
    assert_eq!(got.shape(), [b, n, heads * d]);
    let got = got.to_vec::<f32>().unwrap();
    let twin = composite(&qkv, heads, bias.as_ref(), mask.as_ref(), scale).to_vec::<f32>().unwrap();
    let want = reference(&qkv, heads, bias.as_ref(), mask.as_ref(), scale);
    for (idx, ((&g, &t), &w)) in got.iter().zip(&twin).zip(&want).enumerate() {
        let what = format!("b={b} n={n} heads={heads} d={d} nw={nw:?}: out[{idx}]");
        assert!((g as f64 - w).abs() <= 2e-5 * (1.0 + w.abs()), "{what} = {g}, f64 reference {w}");
        assert!((g - t).abs() <= 2e-5 * (1.0 + t.abs()), "{what} = {g}, composite twin {t}");
    }
}

/// Swin's windows (49 tokens, head dim 32) with the bias and with the shift mask, and the
/// edges of the register tiles: token counts around 16, 32, 48 and 64, other head dims
/// (16, 48, 64 on the tiled path; 5 and 24 on the plain loops), more than 64 tokens.
#[test]
fn fused_matches_composite_and_f64() {
    check(8, 49, 4, 32, true, Some(4), 1);
    check(3, 49, 2, 32, true, None, 2);
    check(4, 49, 2, 32, false, Some(2), 3);
    for (n, d) in [(1, 16), (15, 16), (16, 32), (17, 32), (33, 48), (48, 64), (64, 32), (20, 5), (30, 24), (70, 32)] {
        check(2, n, 3, d, true, Some(2), n as u64 * 7 + d as u64);
    }
}

/// f64 gradients of Σ out ∘ g by the textbook rules, for (qkv, bias).
fn reference_backward(
    qkv: &Tensor,
    heads: usize,
    bias: Option<&Tensor>,
    mask: Option<&Tensor>,
    scale: f32,
    g: &Tensor,
) -> (Vec<f64>, Vec<f64>) {
    let s = qkv.shape();
    let (b, n, d) = (s[0], s[1], s[2] / (3 * heads));
    let c = heads * d;
    let x: Vec<f64> = qkv.to_vec::<f32>().unwrap().iter().map(|&v| v as f64).collect();
    let g: Vec<f64> = g.to_vec::<f32>().unwrap().iter().map(|&v| v as f64).collect();
    let bias = bias.map(|t| t.to_vec::<f32>().unwrap());
    let mask = mask.map(|t| (t.shape()[0], t.to_vec::<f32>().unwrap()));
    let (mut dx, mut db) = (vec![0.0f64; x.len()], vec![0.0f64; heads * n * n]);
    let sc = scale as f64;
    for w in 0..b {
        for h in 0..heads {
            let at = |t: usize, part: usize| (w * n + t) * 3 * c + part * c + h * d;
            let dot = |i: usize, pi: usize, j: usize, pj: usize| {
                (0..d).map(|e| x[at(i, pi) + e] * x[at(j, pj) + e]).sum::<f64>()
            };
            let mut p = vec![0.0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    let bb = bias.as_ref().map_or(0.0, |bv| bv[(h * n + i) * n + j] as f64);
                    let mm = mask.as_ref().map_or(0.0, |(nw, mv)| mv[((w % nw) * n + i) * n + j] as f64);
                    p[i * n + j] = sc * dot(i, 0, j, 1) + bb + mm;
                }
                let mx = p[i * n..(i + 1) * n].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = p[i * n..(i + 1) * n].iter().map(|v| (v - mx).exp()).sum();
                p[i * n..(i + 1) * n].iter_mut().for_each(|v| *v = (*v - mx).exp() / sum);
            }
            let go = |i: usize, e: usize| g[(w * n + i) * c + h * d + e];
            for i in 0..n {
                // dP[i, j] = dO_i · v_j; dS = P (dP - Σ P dP).
                let dp: Vec<f64> = (0..n).map(|j| (0..d).map(|e| go(i, e) * x[at(j, 2) + e]).sum()).collect();
                let inner: f64 = (0..n).map(|j| p[i * n + j] * dp[j]).sum();
                for j in 0..n {
                    let ds = p[i * n + j] * (dp[j] - inner);
                    db[(h * n + i) * n + j] += ds;
                    for e in 0..d {
                        dx[at(i, 0) + e] += sc * ds * x[at(j, 1) + e];
                        dx[at(j, 1) + e] += sc * ds * x[at(i, 0) + e];
                        dx[at(j, 2) + e] += p[i * n + j] * go(i, e);
                    }
                }
            }
        }
    }
    (dx, db)
}

/// The f64 rules above against central differences of the f64 forward: checks the formulas.
#[test]
fn reference_backward_matches_finite_differences() {
    let (b, n, heads, d) = (2, 5, 2, 3);
    let qkv = rand(&[b, n, 3 * heads * d], 11, 1.0);
    let bias = rand(&[heads, n, n], 12, 1.0);
    let mask = rand(&[2, n, n], 13, 1.0);
    let g = rand(&[b, n, heads * d], 14, 1.0);
    let scale = 0.7;
    let (dx, db) = reference_backward(&qkv, heads, Some(&bias), Some(&mask), scale, &g);
    let gv: Vec<f64> = g.to_vec::<f32>().unwrap().iter().map(|&v| v as f64).collect();
    let loss = |x: &Tensor, bb: &Tensor| -> f64 {
        reference(x, heads, Some(bb), Some(&mask), scale).iter().zip(&gv).map(|(o, g)| o * g).sum()
    };
    let nudge = |t: &Tensor, i: usize, by: f32| {
        let mut v = t.to_vec::<f32>().unwrap();
        v[i] += by;
        Tensor::from_vec(v, t.shape()).unwrap()
    };
    let h = 1e-2f32;
    for i in (0..qkv.elem_count()).step_by(7) {
        let fd = (loss(&nudge(&qkv, i, h), &bias) - loss(&nudge(&qkv, i, -h), &bias)) / (2.0 * h as f64);
        assert!((fd - dx[i]).abs() < 2e-4 * (1.0 + fd.abs()), "dqkv[{i}]: rule {}, differences {fd}", dx[i]);
    }
    for i in (0..bias.elem_count()).step_by(5) {
        let fd = (loss(&qkv, &nudge(&bias, i, h)) - loss(&qkv, &nudge(&bias, i, -h))) / (2.0 * h as f64);
        assert!((fd - db[i]).abs() < 2e-4 * (1.0 + fd.abs()), "dbias[{i}]: rule {}, differences {fd}", db[i]);
    }
}

fn check_backward(b: usize, n: usize, heads: usize, d: usize, nw: Option<usize>, seed: u64) {
    let qkv = rand(&[b, n, 3 * heads * d], seed, 1.5);
    let bias = rand(&[heads, n, n], seed + 1, 2.0);
    let mask = nw.map(|nw| rand(&[nw, n, n], seed + 2, 3.0));
    let g = rand(&[b, n, heads * d], seed + 3, 1.0);
    let scale = (d as f32).powf(-0.5);
    let (dx, db) = qkv.window_attention_backward(heads, Some(&bias), mask.as_ref(), scale, &g).unwrap();
    assert_eq!((dx.shape(), db.shape()), (qkv.shape(), &[heads, n, n][..]));
    let (want_dx, want_db) = reference_backward(&qkv, heads, Some(&bias), mask.as_ref(), scale, &g);
    let scale_of = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (name, got, want) in [("dqkv", dx, want_dx), ("dbias", db, want_db)] {
        let tol = 1e-5 * (1.0 + scale_of(&want)) * (n as f64).sqrt();
        for (i, (&g, &w)) in got.to_vec::<f32>().unwrap().iter().zip(&want).enumerate() {
            assert!((g as f64 - w).abs() <= tol, "b={b} n={n} heads={heads} d={d}: {name}[{i}] = {g}, want {w}");
        }
    }
}

/// The fused backward against the f64 rules: Swin's windows, tile edges, the plain loops, and
/// more windows than gradient chunks.
#[test]
fn fused_backward_matches_f64() {
    check_backward(4, 49, 2, 32, Some(2), 21);
    check_backward(3, 49, 3, 32, None, 22);
    check_backward(70, 16, 1, 16, Some(5), 23);
    for (n, d) in [(1, 16), (17, 48), (33, 64), (64, 16), (20, 5), (70, 32)] {
        check_backward(2, n, 2, d, Some(1), n as u64 + d as u64);
    }
}

/// Same inputs, same bits, whatever the thread count.
#[test]
fn backward_is_deterministic_across_thread_counts() {
    let qkv = rand(&[96, 49, 3 * 2 * 32], 31, 1.0);
    let bias = rand(&[2, 49, 49], 32, 1.0);
    let g = rand(&[96, 49, 64], 33, 1.0);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| qkv.window_attention_backward(2, Some(&bias), None, 0.2, &g).unwrap())
    };
    let ((a1, b1), (a3, b3)) = (run(1), run(3));
    assert_eq!(a1.to_vec::<f32>().unwrap(), a3.to_vec::<f32>().unwrap());
    assert_eq!(b1.to_vec::<f32>().unwrap(), b3.to_vec::<f32>().unwrap());
}

/// The backward's products with a transposed matrix (Pᵀ dO, dSᵀ Q read in place) give the bits
/// of the same product on the matrix transposed first, on every path this CPU has (the op's
/// dispatch, the AVX2 tiles called directly, the plain loops); and `score_grads` the bits of its
/// three plain passes (sequential row sums, then dS, the bias gradient, the scale).
#[test]
fn transposed_reads_and_score_grads_keep_the_bits() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (n, d) in [(49, 32), (17, 16), (64, 48), (9, 8), (49, 40)] {
        let dims = Dims { n, h: 1, d, nw: 1, scale: 0.3 };
        let stride = 2 * d + 3;
        let x = rand(&[n * stride], n as u64 + 7, 1.0).to_vec::<f32>().unwrap();
        let x = Rows { data: &x, offset: 1, stride };
        let m = rand(&[n * n], d as u64, 1.0).to_vec::<f32>().unwrap();
        let mt: Vec<f32> = (0..n * n).map(|k| m[k % n * n + k / n]).collect();
        let run = |f: &dyn Fn(RowsMut)| {
            let mut out = vec![9.0f32; n * stride];
            f(RowsMut { data: &mut out, offset: 2, stride });
            out
        };
        let want = run(&|o| weighted(&mt, false, x, o, dims));
        assert_eq!(bits(&run(&|o| weighted(&m, true, x, o, dims))), bits(&want), "n={n} d={d}");
        let want = run(&|o| weighted_plain(&mt, false, x, o, dims));
        assert_eq!(bits(&run(&|o| weighted_plain(&m, true, x, o, dims))), bits(&want), "plain n={n} d={d}");
        #[cfg(target_arch = "x86_64")]
        if avx2::available() && d % 8 == 0 {
            // SAFETY: AVX2 + FMA checked; d % 8 == 0; rows in bounds.
            let (got, want) = unsafe {
                (run(&|o| avx2::weighted(&m, true, x, o, dims)), run(&|o| avx2::weighted(&mt, false, x, o, dims)))
            };
            assert_eq!(bits(&got), bits(&want), "avx2 n={n} d={d}");
        }

        // Probabilities with exact zeros (a masked pair) and a row of them, gradients of both signs.
        let mut p = rand(&[n * n], 40 + n as u64, 1.0).to_vec::<f32>().unwrap();
        p.iter_mut().enumerate().for_each(|(k, v)| *v = if k % 7 == 3 || k < n { 0.0 } else { v.abs() });
        let g0 = rand(&[n * n], 50 + n as u64, 3.0).to_vec::<f32>().unwrap();
        let b0 = rand(&[n * n], 60 + n as u64, 1.0).to_vec::<f32>().unwrap();
        let (mut g, mut dbias) = (g0.clone(), b0.clone());
        score_grads(&p, &mut g, &mut dbias, 0.17, n);
        let (mut want_g, mut want_b) = (g0, b0);
        for i in 0..n {
            let (pr, gr) = (&p[i * n..][..n], &mut want_g[i * n..][..n]);
            let dot: f32 = pr.iter().zip(gr.iter()).map(|(p, g)| p * g).sum();
            gr.iter_mut().zip(pr).for_each(|(g, p)| *g = p * (*g - dot));
        }
        want_b.iter_mut().zip(&want_g).for_each(|(b, g)| *b += g);
        want_g.iter_mut().for_each(|g| *g *= 0.17);
        assert_eq!((bits(&g), bits(&dbias)), (bits(&want_g), bits(&want_b)), "score_grads n={n}");
    }
}

/// The AVX2 tiles against the plain loops, called directly (so they are checked on AVX-512
/// machines too, where the op itself takes the AVX-512 tiles): row and column tails of the 6 x 16
/// tiles, a last chunk of 8 columns, rows read at a stride inside a wider buffer.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_tiles_match_plain_loops() {
    if !avx2::available() {
        eprintln!("skipped: this CPU has no AVX2 + FMA");
        return;
    }
    for (n, d) in
        [(1, 8), (5, 8), (6, 16), (7, 24), (12, 8), (17, 32), (30, 8), (40, 16), (41, 8), (49, 32), (49, 40), (64, 16)]
    {
        let dims = Dims { n, h: 1, d, nw: 1, scale: 0.3 };
        let stride = 3 * d + 5;
        let data = rand(&[n * stride + 2 * d], n as u64 * 31 + d as u64, 1.0).to_vec::<f32>().unwrap();
        let a = Rows { data: &data, offset: 1, stride };
        let b = Rows { data: &data, offset: d + 3, stride };
        let (mut want, mut got, mut kt) = (vec![0.0; n * n], vec![0.0; n * n], vec![0.0; d * 64]);
        dots_plain(a, b, 0.3, &mut want, dims);
        // SAFETY: AVX2 + FMA checked above; n <= 64, d % 8 == 0, rows in bounds.
        unsafe { avx2::dots(a, b, 0.3, &mut kt, &mut got, dims) };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "n={n} d={d}: dots[{i}] = {g}, plain {w}");
        }
        let m = rand(&[n * n], 7, 1.0).to_vec::<f32>().unwrap();
        let (mut want, mut got) = (vec![9.0; n * stride], vec![9.0; n * stride]);
        weighted_plain(&m, false, b, RowsMut { data: &mut want, offset: 2, stride }, dims);
        // SAFETY: as above.
        unsafe { avx2::weighted(&m, false, b, RowsMut { data: &mut got, offset: 2, stride }, dims) };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Values outside the output rows (9.0) must be untouched by both.
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "n={n} d={d}: weighted out[{i}] = {g}, plain {w}");
        }
    }
}

#[test]
fn bad_shapes_are_errors_naming_the_op() {
    let qkv = rand(&[2, 49, 3 * 2 * 32], 1, 1.0);
    let err = |r: Result<Tensor>| r.unwrap_err().to_string();
    assert!(err(qkv.window_attention(5, None, None, 1.0)).contains("window_attention"));
    assert!(err(qkv.window_attention(2, Some(&rand(&[3, 49, 49], 2, 1.0)), None, 1.0)).contains("bias"));
    assert!(err(qkv.window_attention(2, None, Some(&rand(&[3, 49, 49], 2, 1.0)), 1.0)).contains("nW"));
    assert!(err(qkv.window_attention(2, None, Some(&rand(&[2, 48, 49], 2, 1.0)), 1.0)).contains("mask"));
    assert!(err(rand(&[49, 192], 1, 1.0).window_attention(2, None, None, 1.0)).contains("[B, n, 3·heads·d]"));
    let g = rand(&[2, 49, 63], 3, 1.0);
    let e = qkv.window_attention_backward(2, None, None, 1.0, &g).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("window_attention_backward") && e.contains("63"), "{e}");
}

/// No windows, no tokens or no head dims: empty outputs of the right shapes, and a zero bias
/// gradient of the bias's shape (nothing to add into it).
#[test]
fn empty_inputs_give_empty_outputs() {
    let heads = 2;
    for (b, n, d) in [(0, 7, 8), (3, 0, 8), (3, 7, 0)] {
        let qkv = rand(&[b, n, 3 * heads * d], 1, 1.0);
        let bias = rand(&[heads, n, n], 2, 1.0);
        let out = qkv.window_attention(heads, Some(&bias), None, 0.5).unwrap();
        assert_eq!(out.shape(), [b, n, heads * d]);
        let g = rand(&[b, n, heads * d], 3, 1.0);
        let (dqkv, dbias) = qkv.window_attention_backward(heads, Some(&bias), None, 0.5, &g).unwrap();
        assert_eq!((dqkv.shape(), dbias.shape()), (&[b, n, 3 * heads * d][..], &[heads, n, n][..]));
        assert!(dbias.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0), "{b} {n} {d}");
    }
}

/// The window softmax (AVX-512 or AVX2 + FMA, padded rows) against `ops::softmax`'s rows: every
/// row length up to 64 (whole and partial vectors of 16 and 8), rows with Swin's -100 mask
/// entries (flushed to zero by both) and with -inf entries; the f32 sum may differ from the f64
/// one by a few ulp. Where the CPU has AVX-512, the AVX2 build must give the same bits.
#[test]
fn window_softmax_matches_the_plain_rows() {
    for n in [1, 2, 5, 8, 15, 16, 17, 31, 32, 33, 47, 48, 49, 50, 63, 64] {
        let mut scores = rand(&[n * n], n as u64, 4.0).to_vec::<f32>().unwrap();
        for i in 0..n {
            if i % 3 == 1 && n > 1 {
                // Half the row masked as Swin masks it, its last entry -inf.
                (0..n / 2).for_each(|j| scores[i * n + j] -= 100.0);
                scores[i * n + n - 1] = f32::NEG_INFINITY;
            }
        }
        let (mut want, mut got) = (vec![7.0; n * n + 3], vec![7.0; n * n + 3]);
        softmax_flushed_plain(&scores, &mut want, n);
        softmax_flushed(&scores, &mut got, Dims { n, h: 1, d: 16, nw: 1, scale: 1.0 });
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Values past the n x n block (7.0) must be untouched by both; flushed ones are 0 in both.
            assert!((g - w).abs() <= 1e-6 * w.abs(), "n={n}: probs[{i}] = {g}, plain {w}");
        }
        assert_eq!(want.iter().take(n * n).any(|&p| p == 0.0), n > 1, "n={n}: the test masks nothing");
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") && avx2::available() {
            let mut avx2_probs = vec![7.0; n * n + 3];
            // SAFETY: AVX2 and FMA checked; n <= 64; the slices hold n * n values.
            unsafe { avx2::softmax_rows(&scores, &mut avx2_probs, n) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&avx2_probs), bits(&got), "n={n}: AVX2 and AVX-512 differ");
        }
    }
    // NaN scores stay NaN (the flush keeps them).
    let mut got = vec![0.0; 4];
    softmax_flushed(&[f32::NAN, 0.0, 1.0, 2.0], &mut got, Dims { n: 2, h: 1, d: 16, nw: 1, scale: 1.0 });
    assert!(got[0].is_nan() && got[1].is_nan(), "{got:?}");
}
