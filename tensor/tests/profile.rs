//! `tensor::profile` keeps one process-wide table, and the ops of any test running beside this one
//! would count in it (or nest this test's ops under theirs), so this test has its own binary.

use std::sync::Mutex;
use tensor::profile::{enable, op, stage, take, Kind};

/// The tests of this file take turns: each switches the process-wide accounting on and off.
static TURN: Mutex<()> = Mutex::new(());

#[test]
fn outermost_ops_are_counted_once_per_stage_and_kind() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    enable(false);
    drop(op(Kind::Gemm, 1.0, 0.0));
    enable(true);
    assert!(take().is_empty(), "nothing is recorded while accounting is off");
    {
        let _s = stage("encoder");
        let _outer = op(Kind::Conv, 10.0, 4.0);
        let _inner = op(Kind::Gemm, 99.0, 99.0); // part of the conv
    }
    {
        let _s = stage("decoder");
        drop(op(Kind::Softmax, 0.0, 8.0));
        drop(op(Kind::Softmax, 0.0, 8.0));
        {
            let _h = stage("heads");
            drop(op(Kind::Gemm, 6.0, 0.0));
        }
        drop(op(Kind::Gelu, 0.0, 2.0)); // back in "decoder"
    }
    enable(false);
    let t = take();
    let cells: Vec<(&str, Kind, u64, f64, f64)> =
        t.iter().map(|r| (r.stage, r.kind, r.calls, r.flops, r.bytes)).collect();
    assert_eq!(
        cells,
        vec![
            ("encoder", Kind::Conv, 1, 10.0, 4.0),
            ("decoder", Kind::Softmax, 2, 0.0, 16.0),
            ("heads", Kind::Gemm, 1, 6.0, 0.0),
            ("decoder", Kind::Gelu, 1, 0.0, 2.0),
        ]
    );
    assert!(t.iter().all(|r| r.seconds >= 0.0 && r.seconds.is_finite()));
    // Every guard is gone, so the next op is outermost again (the nesting depth is back at 0).
    enable(true);
    drop(op(Kind::Copy, 0.0, 1.0));
    enable(false);
    let t = take();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!((t[0].stage, t[0].kind, t[0].calls), ("other", Kind::Copy, 1));
}

#[test]
fn gemm_calls_are_tabled_by_shape_and_operand_layout() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    use tensor::cpu::gemm::sgemm;
    use tensor::profile::take_gemm_shapes;
    let (m, n, k) = (3, 5, 4);
    let (a, b) = (vec![1.0f32; m * k], vec![1.0f32; 4 * k * n]);
    let mut c = vec![0.0f32; m * n];
    enable(false);
    sgemm(m, n, k, &a, k, 1, &b, n, 1, &mut c, n, false);
    enable(true);
    sgemm(m, n, k, &a, k, 1, &b, n, 1, &mut c, n, false); // A, B row-major
    sgemm(m, n, k, &a, k, 1, &b, 1, k, &mut c, n, false); // B = a [n, k] matrix transposed
    sgemm(m, n, k, &a, k, 1, &b, n, 1, &mut c, n, true);
    sgemm(m, n, k, &a, 1, m, &b, 2 * n, 2, &mut c, n, false); // A transposed, B strided
                                                              // Two calls side by side on rayon workers (as a conv runs one per image): a row of their own.
    rayon::scope(|s| {
        for _ in 0..2 {
            s.spawn(|_| sgemm(m, n, k, &a, k, 1, &b, n, 1, &mut vec![0.0; m * n], n, false));
        }
    });
    enable(false);
    assert_eq!(c[0], 4.0);
    let t = take_gemm_shapes();
    let rows: Vec<_> = t.iter().map(|r| (r.m, r.n, r.k, r.layout, r.concurrent, r.calls)).collect();
    assert_eq!(
        rows,
        vec![
            (3, 5, 4, ['N', 'N'], false, 2),
            (3, 5, 4, ['N', 'T'], false, 1),
            (3, 5, 4, ['T', 'S'], false, 1),
            (3, 5, 4, ['N', 'N'], true, 2),
        ]
    );
    assert!(t.iter().all(|r| r.seconds >= 0.0 && r.seconds.is_finite()));
    let _ = take();
}

/// The copy and elementwise kinds' bytes are what each op moves (read and write, in the tensor's
/// dtype), so their bandwidth column means something: an index_select or gather once counted
/// none, an add of a bias its output's size twice.
#[test]
fn copies_and_elementwise_ops_count_the_bytes_they_move() {
    use tensor::{DType, Tensor};
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let x = Tensor::arange(12, DType::F32).reshape(&[4, 3]).unwrap();
    let pick = Tensor::from_f64_vec(&[2.0, 0.0], &[2], DType::I64);
    let col = Tensor::from_f64_vec(&[1.0, 0.0, 2.0, 1.0], &[4, 1], DType::I64);
    let half = Tensor::arange(6, DType::BF16);
    let counts = |kind: Kind, what: &str, bytes: usize, op: &dyn Fn() -> Tensor| {
        enable(true);
        let out = op();
        enable(false);
        let t = take();
        assert_eq!(t.len(), 1, "{what}: {t:?}");
        assert_eq!((t[0].kind, t[0].bytes), (kind, bytes as f64), "{what}");
        assert!(out.elem_count() > 0);
    };
    counts(Kind::Copy, "index_select", 2 * 6 * 4, &|| x.index_select(0, &pick).unwrap());
    counts(Kind::Copy, "gather", 2 * 4 * 4 + 8 * 4, &|| x.gather(1, &col).unwrap());
    counts(Kind::Copy, "cat", 2 * 24 * 4, &|| Tensor::cat(&[&x, &x], 0).unwrap());
    counts(Kind::Copy, "roll", 2 * 12 * 4, &|| x.roll(&[1], &[0]).unwrap());
    counts(Kind::Copy, "contiguous", 2 * 12 * 4, &|| x.t().unwrap().contiguous());
    counts(Kind::Copy, "cat bf16", 2 * 12 * 2, &|| Tensor::cat(&[&half, &half], 0).unwrap());
    // The elementwise kind likewise: a broadcast bias is read once, not once per output value.
    let bias = Tensor::arange(3, DType::F32);
    counts(Kind::Elementwise, "add", (12 + 12 + 12) * 4, &|| x.add(&x).unwrap());
    counts(Kind::Elementwise, "add a bias", (12 + 3 + 12) * 4, &|| x.add(&bias).unwrap());
    counts(Kind::Elementwise, "exp bf16", 2 * 6 * 2, &|| half.exp().unwrap());
}
