//! The pickle reader on hand-written opcodes: values, memo aliasing, forbidden globals, bounds,
//! and inputs built to cost time or memory.

use super::opcodes::long_value;
use super::*;
use crate::checkpoint::error::CheckpointError;

fn run(bytes: &[u8]) -> Result<Unpickled> {
    unpickle(bytes, 0, Path::new("test.pkl")).map(|(u, _)| u)
}

#[test]
fn ints_strings_and_containers() {
    // {'a': [1, -2, 300, 70000, 2**40], 'b': ('x', True, None, 1.5)}
    let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', 0x8c, 1, b'a', b']', b'(', b'K', 1, b'J'];
    p.extend((-2i32).to_le_bytes());
    p.extend([b'M', 0x2c, 0x01, b'J']);
    p.extend(70000i32.to_le_bytes());
    p.extend([0x8a, 6, 0, 0, 0, 0, 0, 1]);
    p.extend([b'e', 0x8c, 1, b'b', b'(', 0x8c, 1, b'x', 0x88, b'N', b'G']);
    p.extend(1.5f64.to_be_bytes());
    p.extend(b"tu.");
    let u = run(&p).unwrap();
    let a = u.dict_get(&u.root, "a").unwrap();
    let Some(Obj::List(items)) = u.obj(a) else { panic!("not a list") };
    assert_eq!(items, &[Value::Int(1), Value::Int(-2), Value::Int(300), Value::Int(70000), Value::Int(1 << 40)]);
    let b = u.dict_get(&u.root, "b").unwrap();
    let Some(Obj::Tuple(t)) = u.obj(b) else { panic!("not a tuple") };
    assert_eq!(t, &[Value::Str("x".into()), Value::Bool(true), Value::None, Value::Float(1.5)]);
}

#[test]
fn memo_aliases_containers() {
    // d = {}; memo[0] = d; outer = [d]; d['k'] = 1 after memoizing: both views see the key.
    let p = [0x80, 2, b']', b'}', b'q', 0, b'a', b'h', 0, 0x8c, 1, b'k', b'K', 1, b's', b'0', b'.'];
    let u = run(&p).unwrap();
    let Some(Obj::List(items)) = u.obj(&u.root) else { panic!("not a list") };
    assert_eq!(u.dict_get(&items[0], "k"), Some(&Value::Int(1)));
}

#[test]
fn long_values_sign_extend() {
    assert_eq!(long_value(&[0xff]), Value::Int(-1));
    assert_eq!(long_value(&[0x00, 0x80]), Value::Int(-32768));
    assert_eq!(long_value(&[0x7f]), Value::Int(127));
    assert_eq!(long_value(&[]), Value::Int(0));
    assert!(matches!(long_value(&[0; 9]), Value::BigInt(_)));
}

#[test]
fn forbidden_globals_are_named() {
    for (module, name) in [("os", "system"), ("builtins", "eval"), ("torch", "load"), ("subprocess", "Popen")] {
        let mut p = vec![0x80, 2, b'c'];
        p.extend(format!("{module}\n{name}\n").bytes());
        p.extend([0x8c, 2, b'l', b's', 0x85, b'R', b'.']);
        let err = run(&p).unwrap_err();
        match &err {
            CheckpointError::ForbiddenGlobal { global, offset, .. } => {
                assert_eq!(global, &format!("{module}.{name}"));
                assert_eq!(*offset, 2);
            }
            e => panic!("unexpected error {e}"),
        }
        assert!(err.to_string().contains(&format!("{module}.{name}")));
    }
    // STACK_GLOBAL too.
    let p = [0x80, 4, 0x8c, 8, b'b', b'u', b'i', b'l', b't', b'i', b'n', b's', 0x8c, 4, b'e', b'v', b'a', b'l', 0x93];
    assert!(matches!(run(&p), Err(CheckpointError::ForbiddenGlobal { global, .. }) if global == "builtins.eval"));
}

#[test]
fn rebuild_tensor_checks_bounds() {
    // _rebuild_tensor_v2(storage(numel=6), offset, (2,3), (3,1)): fits at offset 0, not at 1.
    let build = |offset: u8| {
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"torch._utils\n_rebuild_tensor_v2\n");
        p.extend([b'(', b'(', 0x8c, 7]);
        p.extend(b"storage");
        p.push(b'c');
        p.extend(b"torch\nFloatStorage\n");
        p.extend([0x8c, 1, b'0', 0x8c, 3, b'c', b'p', b'u', b'K', 6, b't', b'Q']);
        p.extend([b'K', offset, b'K', 2, b'K', 3, 0x86, b'K', 3, b'K', 1, 0x86, 0x89, b'N', b't', b'R', b'.']);
        run(&p)
    };
    let u = build(0).unwrap();
    let Some(Obj::Tensor(t)) = u.obj(&u.root) else { panic!("not a tensor") };
    assert_eq!((t.offset, t.shape.as_slice(), t.strides.as_slice()), (0, &[2, 3][..], &[3, 1][..]));
    assert_eq!(t.storage.dtype, StorageDType::F32);
    assert!(matches!(build(1), Err(CheckpointError::BadPickle { .. })));
}

/// A 1 MB string memoized once and fetched 200 000 times (BINGET, 2 bytes each): shared,
/// not copied (200 GB as copies; the test would abort).
#[test]
fn repeated_memo_strings_are_shared_not_copied() {
    let long = "x".repeat(1 << 20);
    let mut p = vec![0x80, 2, b']', b'(', b'X'];
    p.extend((long.len() as u32).to_le_bytes());
    p.extend(long.as_bytes());
    p.extend([b'q', 0]);
    for _ in 0..200_000 {
        p.extend([b'h', 0]);
    }
    p.extend(b"e.");
    let u = run(&p).unwrap();
    let Some(Obj::List(items)) = u.obj(&u.root) else { panic!("not a list") };
    assert_eq!(items.len(), 200_001);
    let (Value::Str(a), Value::Str(b)) = (&items[0], &items[200_000]) else { panic!("not strings") };
    assert!(Rc::ptr_eq(a, b));
}

/// Deep nesting is refused by name; a self-referential list is just a list (nothing walks it).
#[test]
fn deep_and_self_referential_structures() {
    let mut deep = vec![0x80, 2];
    deep.extend(std::iter::repeat_n(b'(', 100_000));
    deep.extend(std::iter::repeat_n(b't', 100_000));
    deep.push(b'.');
    let err = run(&deep).unwrap_err().to_string();
    assert!(err.contains("test.pkl") && err.contains("MARKs nested deeper than 1000"), "{err}");
    // 999 levels of tuples are fine.
    let mut ok = vec![0x80, 2];
    ok.extend(std::iter::repeat_n(b'(', 999));
    ok.extend(std::iter::repeat_n(b't', 999));
    ok.push(b'.');
    assert!(run(&ok).is_ok());
    // l = []; l.append(l), and the same through APPENDS 100 000 times.
    let mut p = vec![0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'('];
    for _ in 0..100_000 {
        p.extend([b'h', 0]);
    }
    p.extend(b"e.");
    let u = run(&p).unwrap();
    let Some(Obj::List(items)) = u.obj(&u.root) else { panic!("not a list") };
    assert_eq!(items.len(), 100_001);
    assert!(items.iter().all(|v| *v == u.root));
}

/// A memoized tuple of n values given to REDUCE n times: the arguments are not copied each
/// time (n^2 otherwise: minutes for a 1 MB pickle).
#[test]
fn reduce_does_not_copy_long_argument_tuples() {
    let n = 200_000;
    let mut p = vec![0x80, 2, b']', b'('];
    p.extend(b"cargparse\nNamespace\n");
    p.extend([b'q', 0, b'(']);
    p.extend(std::iter::repeat_n(b'N', n));
    p.extend([b't', b'q', 1, b'0']);
    for _ in 0..n {
        p.extend([b'h', 0, b'h', 1, b'R']);
    }
    p.extend(b"e.");
    // No timing assertion (speed belongs in benchmarks): a quadratic reader would take
    // minutes here, which the suite's run time shows.
    let u = run(&p).unwrap();
    let Some(Obj::List(items)) = u.obj(&u.root) else { panic!("not a list") };
    assert_eq!(items.len(), n + 1);
}

#[test]
fn malformed_input_is_an_error() {
    let cases: &[&[u8]] = &[
        &[],
        &[0x80],
        &[0x80, 2, b'.'],          // STOP on an empty stack
        &[0x80, 2, b's', b'.'],    // SETITEM with nothing
        &[0x80, 2, b'h', 3, b'.'], // unset memo
        &[0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff],
        &[0x80, 2, b'N', b'u', b'.'],          // SETITEMS without MARK
        &[0x80, 2, b'K', 1, b'(', b's', b'.'], // SETITEM across a MARK
        &[0x80, 2, b'I', b'1', b'\n', b'.'],   // text INT not supported
        &[0x80, 2, b'K', 1, b')', b'R', b'.'], // calling an int
        &[0x80, 2, b'c', b'o', b's'],          // unterminated GLOBAL
    ];
    for c in cases {
        assert!(run(c).is_err(), "{c:?} should fail");
    }
}
