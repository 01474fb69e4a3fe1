//! `tensor::profile` keeps one process-wide table, and the ops of any test running beside this one
//! would count in it (or nest this test's ops under theirs), so this test has its own binary.

use tensor::profile::{enable, op, stage, take, Kind};

#[test]
fn outermost_ops_are_counted_once_per_stage_and_kind() {
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
