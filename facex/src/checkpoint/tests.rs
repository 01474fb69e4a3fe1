//! Checkpoint loading against the in-repo fixtures: the tiny FaceXFormer saved by torch.save (zip)
//! and as safetensors, the MTCNN weights (legacy torch.save format), and hand-built archives for
//! dtypes, strided views, forbidden globals and malformed files.

use super::test_archive::{zip, Pickle};
use super::{
    infer_config, load_model_weights, load_pytorch, load_pytorch_from_bytes, load_safetensors,
    load_safetensors_from_bytes, load_weights, save_model_weights, save_safetensors, save_safetensors_with_metadata,
    validate, CheckpointError, StateDict, CONFIG_METADATA_KEY,
};
use crate::model::FacexConfig;
use std::path::{Path, PathBuf};
use tensor::{DType, Tensor};

/// A path from the workspace root (this crate lives in `facex/`).
fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn tiny(file: &str) -> PathBuf {
    repo("tests/fixtures/facexformer-tiny").join(file)
}

fn mtcnn(file: &str) -> PathBuf {
    repo("facex/models/mtcnn").join(file)
}

/// A fresh temporary folder for one test.
fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("facex-ckpt-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn raw_bytes(t: &Tensor) -> Vec<u8> {
    let c = t.contiguous();
    let es = c.dtype().size_in_bytes();
    let r = c.layout().contiguous_range().unwrap();
    c.cpu_storage().unwrap().as_bytes()[r.start * es..r.end * es].to_vec()
}

fn assert_same(a: &StateDict, b: &StateDict) {
    assert_eq!(a.len(), b.len());
    for (name, ta) in a.iter() {
        let tb = b.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(ta.shape(), tb.shape(), "{name}");
        assert_eq!(ta.dtype(), tb.dtype(), "{name}");
        assert_eq!(raw_bytes(ta), raw_bytes(tb), "{name}: values differ");
    }
}

#[test]
fn tiny_pt_and_safetensors_are_identical() {
    let pt = load_pytorch(tiny("model.pt"), None).unwrap();
    let st = load_safetensors(tiny("weights.safetensors")).unwrap();
    // The official key set (505) with depths [2,2,2,2] instead of [2,2,18,2]: 16 fewer blocks of 14.
    assert_eq!(pt.len(), 281);
    assert_same(&pt, &st);
    // Pickle order is the module order of the model.
    assert_eq!(pt.names().next(), Some("backbone.0.0.0.weight"));
    assert_eq!(pt.names().last(), Some("linear_fuse.weight"));
    let idx: Vec<&str> = pt.names().filter(|k| k.ends_with("relative_position_index")).collect();
    assert_eq!(idx.len(), 8);
    for k in idx {
        assert_eq!(pt.get(k).unwrap().dtype(), DType::I64);
        assert_eq!(pt.get(k).unwrap().shape(), &[2401]);
    }
    assert_eq!(pt.get("backbone.0.0.0.weight").unwrap().shape(), &[32, 3, 4, 4]);
    assert_eq!(pt.get("pe_layer.positional_encoding_gaussian_matrix").unwrap().shape(), &[2, 32]);
    // The fixture's parameter count (config.json "params") plus the index buffers.
    let buffers = 8 * 2401;
    assert_eq!(pt.num_elements() - buffers, 2_526_573 + 2 * 32);
    // load_weights dispatches on content.
    assert_same(&load_weights(tiny("model.pt")).unwrap(), &st);
    assert_same(&load_weights(tiny("weights.safetensors")).unwrap(), &pt);
}

#[test]
fn infer_config_gives_tiny() {
    for file in ["model.pt", "weights.safetensors"] {
        let (sd, config) = load_model_weights(tiny(file)).unwrap();
        assert_eq!(config, FacexConfig::tiny(), "{file}");
        // Without the side config, the decoder heads default to the official 8.
        let mut expected = FacexConfig::tiny();
        expected.decoder.heads = 8;
        assert_eq!(infer_config(&sd, None).unwrap(), expected);
        assert_eq!(infer_config(&sd, Some(4)).unwrap(), FacexConfig::tiny());
        // Heads that do not divide the widths are refused.
        assert!(infer_config(&sd, Some(3)).is_err());
    }
}

/// Weights saved with their config state their decoder heads in their metadata, which wins
/// over the default of 8 and needs no config file beside them; a malformed entry is an error
/// naming the file and the key.
#[test]
fn saved_weights_carry_their_config() {
    let dir = std::env::temp_dir().join(format!("facex-ckpt-meta-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sd = load_safetensors(tiny("weights.safetensors")).unwrap();
    let with = dir.join("with.safetensors");
    save_model_weights(&with, &sd, &FacexConfig::tiny()).unwrap();
    assert_eq!(load_model_weights(&with).unwrap().1, FacexConfig::tiny());
    let without = dir.join("without.safetensors");
    save_safetensors(&without, &sd).unwrap();
    assert_eq!(load_model_weights(&without).unwrap().1.decoder.heads, 8);
    let bad = dir.join("bad.safetensors");
    let meta = [(CONFIG_METADATA_KEY.to_string(), r#"{"decoder":{"heads":0}}"#.to_string())].into();
    save_safetensors_with_metadata(&bad, &sd, &meta).unwrap();
    let e = load_model_weights(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.safetensors") && e.contains(CONFIG_METADATA_KEY) && e.contains("heads is 0"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn infer_config_errors_name_the_key() {
    let mut sd = load_safetensors(tiny("weights.safetensors")).unwrap();
    sd.remove("backbone.0.5.1.norm1.weight");
    sd.remove("backbone.0.5.1.attn.relative_position_bias_table");
    // Stage 3 now has one block: still consistent.
    assert_eq!(infer_config(&sd, Some(4)).unwrap().backbone.depths, [2, 2, 1, 2]);
    sd.remove("backbone.0.5.0.norm1.weight");
    let err = infer_config(&sd, Some(4)).unwrap_err().to_string();
    assert!(err.contains("backbone.0.5"), "{err}");
    let mut sd = load_safetensors(tiny("weights.safetensors")).unwrap();
    sd.remove("face_decoder.mask_tokens.weight");
    let err = infer_config(&sd, None).unwrap_err().to_string();
    assert!(err.contains("face_decoder.mask_tokens.weight"), "{err}");
}

/// (file, key, shape, [(index, value)], sum of all elements): values read independently from the
/// legacy files with Python's pickle module; the MTCNN weights are stored column-major (strided).
#[test]
fn mtcnn_weights_load() {
    type Case = (&'static str, usize, &'static str, &'static [usize], &'static [(&'static [usize], f64)], f64);
    let cases: &[Case] = &[
        ("pnet.pt", 13, "conv1.weight", &[10, 3, 3, 3], &[(&[1, 2, 0, 1], 1.1879833936691284)], 2.34876704),
        ("pnet.pt", 13, "conv2.weight", &[16, 10, 3, 3], &[(&[3, 7, 1, 2], 0.19351449608802795)], -38.5657889),
        (
            "pnet.pt",
            13,
            "conv4_2.bias",
            &[4],
            &[(&[0], 0.02156050130724907), (&[3], -0.012187507003545761)],
            -0.0945487954,
        ),
        ("rnet.pt", 16, "dense4.weight", &[128, 576], &[(&[5, 100], -0.01331438310444355)], -73.5947546),
        ("rnet.pt", 16, "prelu4.weight", &[128], &[(&[0], -0.06932154297828674)], -15.9860979),
        ("onet.pt", 21, "dense5.weight", &[256, 1152], &[(&[200, 1000], -0.010433738119900227)], -147.486701),
        ("onet.pt", 21, "conv4.weight", &[128, 64, 2, 2], &[(&[127, 0, 1, 0], 0.028010599315166473)], -56.9071),
        ("onet.pt", 21, "dense6_3.bias", &[10], &[(&[0], 0.33987370133399963), (&[9], 0.746856689453125)], 5.41747501),
    ];
    for &(file, count, key, shape, values, sum) in cases {
        let sd = load_weights(mtcnn(file)).unwrap();
        assert_eq!(sd.len(), count, "{file}");
        let t = sd.get(key).unwrap_or_else(|| panic!("{file}: {key} missing"));
        assert_eq!(t.shape(), shape, "{file} {key}");
        assert_eq!(t.dtype(), DType::F32);
        assert!(t.is_contiguous());
        let v = t.to_f64_vec().unwrap();
        for (idx, expected) in values {
            let flat = idx.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i);
            assert_eq!(v[flat], *expected, "{file} {key}{idx:?}");
        }
        let s: f64 = v.iter().sum();
        assert!((s - sum).abs() <= 1e-6 * sum.abs().max(1.0), "{file} {key}: sum {s} vs {sum}");
    }
    let names: Vec<String> = load_weights(mtcnn("pnet.pt")).unwrap().names().map(String::from).collect();
    assert_eq!(names[..3], ["conv1.weight", "conv1.bias", "prelu1.weight"]);
}

#[test]
fn truncated_checkpoints_are_errors() {
    for file in [tiny("model.pt"), mtcnn("pnet.pt"), tiny("weights.safetensors")] {
        let bytes = std::fs::read(&file).unwrap();
        let n = bytes.len();
        let mut cuts: Vec<usize> = vec![0, 1, 2, 3, 4, 8, 15, 21, 100, 137, 1000, n / 2, n - 22, n - 8, n - 1];
        cuts.extend((1..40).map(|i| i * n / 40 + i));
        let is_st = file.extension().is_some_and(|e| e == "safetensors");
        for cut in cuts.into_iter().filter(|&c| c < n) {
            let res = if is_st {
                load_safetensors_from_bytes(&bytes[..cut], &file)
            } else {
                load_pytorch_from_bytes(&bytes[..cut], &file, None)
            };
            let err = res.expect_err(&format!("{} cut at {cut} loaded", file.display()));
            assert!(err.to_string().contains(file.to_str().unwrap()), "{err}");
        }
    }
    // The legacy file, cut at every 7th byte.
    let bytes = std::fs::read(mtcnn("pnet.pt")).unwrap();
    for cut in (0..bytes.len()).step_by(7) {
        assert!(load_pytorch_from_bytes(&bytes[..cut], "pnet.pt", None).is_err(), "cut at {cut}");
    }
    // Through real files and load_weights' dispatch.
    let dir = tmp_dir("truncated");
    for file in [tiny("model.pt"), mtcnn("pnet.pt"), tiny("weights.safetensors")] {
        let bytes = std::fs::read(&file).unwrap();
        let path = dir.join(file.file_name().unwrap());
        for cut in [0, 3, bytes.len() / 3, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = load_weights(&path).expect_err(&format!("{} cut at {cut} loaded", file.display()));
            assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flipping bytes anywhere in a pickle gives a result or an error, never a panic.
#[test]
fn corrupted_pickles_never_panic() {
    let bytes = std::fs::read(mtcnn("pnet.pt")).unwrap();
    // The legacy pickles end at byte 1938; the storages follow.
    for pos in 0..1938 {
        for x in [0xff, 0x01] {
            let mut b = bytes.clone();
            b[pos] ^= x;
            let _ = load_pytorch_from_bytes(&b, "pnet.pt", None);
        }
    }
    let zip = synthetic_zip(&synthetic_pickle());
    for pos in 0..zip.len() {
        for x in [0xff, 0x01, 0x80] {
            let mut b = zip.clone();
            b[pos] ^= x;
            let _ = load_pytorch_from_bytes(&b, "synthetic.pt", None);
        }
    }
}

// ---- hand-built torch.save archives --------------------------------------------------------

fn synthetic_pickle() -> Vec<u8> {
    let mut p = Pickle::default();
    p.op(b"\x80\x02}(").str("state_dict_backbone").op(b"}(");
    // A transposed view of a float64 storage, and a second tensor sharing it at an offset.
    p.str("a").tensor("DoubleStorage", "0", 6, 0, &[2, 3], &[1, 2]);
    p.str("b").tensor("IntStorage", "1", 5, 1, &[2, 2], &[2, 1]);
    p.str("c").tensor("BoolStorage", "2", 3, 0, &[3], &[1]);
    p.str("d").tensor("DoubleStorage", "0", 6, 4, &[2], &[1]);
    p.str("e").global("torch._utils", "_rebuild_parameter").op(b"(");
    p.tensor("HalfStorage", "3", 2, 0, &[2], &[1]).op(b"\x88").global("collections", "OrderedDict").op(b")RtR");
    p.str("f").tensor("FloatStorage", "4", 4, 0, &[2, 1, 2], &[0, 7, 1]); // a broadcast (stride 0) view
    p.op(b"u");
    // Optimizer state whose storage is not even in the archive: never read.
    p.str("optimizer").op(b"}(").str("exp_avg").tensor("FloatStorage", "99", 4, 0, &[4], &[1]).op(b"u");
    p.str("epoch").int(3).op(b"u.");
    p.0
}

fn synthetic_zip(pickle: &[u8]) -> Vec<u8> {
    let f64s: Vec<u8> = [10.5f64, 11.0, 12.0, 13.0, 14.0, 15.25].iter().flat_map(|x| x.to_le_bytes()).collect();
    let i32s: Vec<u8> = [1i32, -2, 3, -4, 5].iter().flat_map(|x| x.to_le_bytes()).collect();
    let f16s: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
    let f32s: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    zip(&[
        ("archive/data.pkl", pickle),
        ("archive/byteorder", b"little"),
        ("archive/data/0", &f64s),
        ("archive/data/1", &i32s),
        ("archive/data/2", &[1, 0, 1]),
        ("archive/data/3", &f16s),
        ("archive/data/4", &f32s),
        ("archive/version", b"3\n"),
    ])
}

#[test]
fn synthetic_zip_dtypes_views_and_ignored_keys() {
    let dir = tmp_dir("synthetic");
    let path = dir.join("synthetic.pt");
    std::fs::write(&path, synthetic_zip(&synthetic_pickle())).unwrap();
    let sd = load_weights(&path).unwrap();
    assert_eq!(sd.names().collect::<Vec<_>>(), ["a", "b", "c", "d", "e", "f"]);
    let a = sd.get("a").unwrap();
    assert_eq!((a.shape(), a.dtype()), (&[2, 3][..], DType::F32));
    assert_eq!(a.to_f64_vec().unwrap(), [10.5, 12.0, 14.0, 11.0, 13.0, 15.25]);
    let b = sd.get("b").unwrap();
    assert_eq!((b.shape(), b.dtype()), (&[2, 2][..], DType::I64));
    assert_eq!(b.to_vec::<i64>().unwrap(), [-2, 3, -4, 5]);
    assert_eq!(sd.get("c").unwrap().to_vec::<u8>().unwrap(), [1, 0, 1]);
    assert_eq!(sd.get("d").unwrap().to_f64_vec().unwrap(), [14.0, 15.25]);
    let e = sd.get("e").unwrap();
    assert_eq!(e.dtype(), DType::F16);
    assert_eq!(e.to_f64_vec().unwrap(), [1.5, -2.0]);
    assert_eq!(sd.get("f").unwrap().to_f32_vec().unwrap(), [1.0, 2.0, 1.0, 2.0]);
    // Asking for the optimizer state reads its (absent) storage: an error naming the entry.
    let err = load_pytorch(&path, Some("optimizer")).unwrap_err().to_string();
    assert!(err.contains("archive/data/99"), "{err}");
    let err = load_pytorch(&path, Some("nope")).unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("state_dict_backbone"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn forbidden_globals_are_refused_by_name() {
    let dir = tmp_dir("forbidden");
    let path = dir.join("evil.pt");
    let mut p = Pickle::default();
    p.op(b"\x80\x02}(").str("state_dict_backbone").global("os", "system").str("echo pwned").op(b"\x85Ru.");
    std::fs::write(&path, synthetic_zip(&p.0)).unwrap();
    let err = load_weights(&path).unwrap_err();
    assert!(matches!(&err, CheckpointError::ForbiddenGlobal { global, .. } if global == "os.system"), "{err}");
    assert!(err.to_string().contains("os.system") && err.to_string().contains("evil.pt"), "{err}");
    // The same through STACK_GLOBAL (protocol 4), hidden in an ignored key.
    let mut p = Pickle::default();
    p.op(b"\x80\x04}(").str("state_dict_backbone").op(b"}").str("other").str("builtins").str("eval");
    p.op(b"\x93").str("1+1").op(b"\x85Ru.");
    std::fs::write(&path, synthetic_zip(&p.0)).unwrap();
    let err = load_pytorch(&path, None).unwrap_err();
    assert!(matches!(&err, CheckpointError::ForbiddenGlobal { global, .. } if global == "builtins.eval"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_lists_every_problem() {
    let dir = tmp_dir("validate");
    let good = load_safetensors(tiny("weights.safetensors")).unwrap();
    let expected = good.shapes();
    validate(&expected, &good).unwrap();
    let mut bad = good.clone();
    bad.remove("face_decoder.pose_token.weight");
    bad.remove("linear_c.2.proj.bias");
    bad.insert("linear_c.0.proj.weight", Tensor::zeros(&[64, 31], DType::F32));
    bad.insert("extra.weight", Tensor::zeros(&[3], DType::F32));
    // relative_position_index may be absent (recomputed by the model).
    bad.remove("backbone.0.1.0.attn.relative_position_index");
    let path = dir.join("bad.safetensors");
    save_safetensors(&path, &bad).unwrap();
    let bad = load_safetensors(&path).unwrap();
    let err = validate(&expected, &bad).unwrap_err();
    let CheckpointError::Keys { missing, unexpected, misshaped } = &err else { panic!("{err}") };
    assert_eq!(missing, &["face_decoder.pose_token.weight", "linear_c.2.proj.bias"]);
    assert_eq!(unexpected, &["extra.weight"]);
    assert_eq!(misshaped, &[("linear_c.0.proj.weight".to_string(), vec![64, 32], vec![64, 31])]);
    let text = err.to_string();
    for needle in ["pose_token", "linear_c.2.proj.bias", "extra.weight", "[64, 32]", "[64, 31]"] {
        assert!(text.contains(needle), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn save_safetensors_round_trip() {
    let dir = tmp_dir("roundtrip");
    let mut sd = load_pytorch(tiny("model.pt"), None).unwrap();
    // Every dtype, and views that are not contiguous or start at an offset.
    let base = Tensor::randn(&[4, 6], 7, DType::F32);
    sd.insert("x.transposed", base.t().unwrap());
    sd.insert("x.narrowed", base.narrow(1, 2, 3).unwrap());
    sd.insert("x.f16", Tensor::randn(&[5], 1, DType::F16));
    sd.insert("x.bf16", Tensor::randn(&[2, 3], 2, DType::BF16));
    sd.insert("x.u8", Tensor::from_vec(vec![0u8, 7, 255], &[3]).unwrap());
    sd.insert("x.i64", Tensor::from_vec(vec![-5i64, 1 << 40], &[2]).unwrap());
    sd.insert("x.scalar", Tensor::scalar(2.5f32));
    sd.insert("x.empty", Tensor::zeros(&[0, 4], DType::F32));
    let path = dir.join("out.safetensors");
    save_safetensors(&path, &sd).unwrap();
    let back = load_weights(&path).unwrap();
    assert_same(&sd, &back);
    assert_eq!(back.names().collect::<Vec<_>>(), sd.names().collect::<Vec<_>>(), "order is kept");
    assert_eq!(back.get("x.transposed").unwrap().to_f32_vec().unwrap(), base.t().unwrap().to_f32_vec().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_errors_name_the_file() {
    let dir = tmp_dir("errors");
    let missing = dir.join("nothing-here.pt");
    let err = load_weights(&missing).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }) && err.to_string().contains("nothing-here.pt"), "{err}");
    let garbage = dir.join("garbage.bin");
    std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
    let err = load_weights(&garbage).unwrap_err();
    assert!(err.to_string().contains("garbage.bin"), "{err}");
    let err = load_pytorch(&garbage, None).unwrap_err();
    assert!(err.to_string().contains("garbage.bin"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
