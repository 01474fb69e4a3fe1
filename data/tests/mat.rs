//! MATLAB files: the Level 5 reader against files scipy wrote, the writer round trip, the v7.3
//! (HDF5) subset against h5py files written the way MATLAB writes them, the 300W-LP/AFLW2000 and
//! COFW readers, and malformed files (each a clear error naming the file, never a panic).
//!
//! The fixtures come from `scripts/make-mat-fixtures.py`; the values asserted here are the ones
//! its docstring lists.

use std::path::{Path, PathBuf};

use data::mat::{self, MatArray, MatData};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mat").join(rel)
}

/// A fresh scratch folder per test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("facex-mat-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn err_of(path: &Path, bytes: &[u8]) -> String {
    match mat::read_bytes(path, bytes) {
        Ok(f) => panic!("{} parsed ({} variables), expected an error", path.display(), f.vars.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn v5_reads_every_class_scipy_writes() {
    let f = mat::read(&fixture("types.mat")).unwrap();
    let get = |n: &str| f.get(n).unwrap();
    // Column-major: [[1, 2, 3], [4, 5, 6]] is stored 1, 4, 2, 5, 3, 6.
    assert_eq!(get("a_double"), &MatArray::double(&[2, 3], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
    assert_eq!(get("a_double"), &MatArray::double_rows(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    assert_eq!(get("a_single").data, MatData::Single(vec![1.5, -2.5]));
    assert_eq!(get("a_int8").data, MatData::Int8(vec![-128, 0, 127]));
    assert_eq!(get("a_uint16").data, MatData::UInt16(vec![0, 65535]));
    assert_eq!(get("a_int32").data, MatData::Int32(vec![-7, 7]));
    assert_eq!(get("a_uint64").data, MatData::UInt64(vec![1 << 63]));
    assert_eq!(get("a_logical").data, MatData::Logical(vec![1, 0, 1]));
    assert_eq!(get("a_char").to_text().as_deref(), Some("hello"));
    assert_eq!(get("a_char").dims, vec![1, 5]);
    let cell = get("a_cell").cells().unwrap();
    assert_eq!(get("a_cell").dims, vec![1, 2]);
    assert_eq!(cell[0], MatArray::double(&[1, 1], vec![7.0]));
    assert_eq!(cell[1].to_text().as_deref(), Some("xy"));
    let s = get("a_struct");
    assert_eq!(s.field("n").unwrap().to_f64(), Some(vec![3.0]));
    assert_eq!(s.field("s").unwrap().to_text().as_deref(), Some("ab"));
    assert_eq!(get("a_empty").dims, vec![0, 0]);
    assert!(get("a_empty").is_empty());
    let e = f.get("nope").unwrap_err().to_string();
    assert!(e.contains("types.mat") && e.contains("\"nope\"") && e.contains("a_double"), "{e}");
}

#[test]
fn v5_compressed_and_uncompressed_agree() {
    let plain = mat::read(&fixture("300w_lp/AFW/AFW_134212_1_0.mat")).unwrap();
    let zipped = mat::read(&fixture("300w_lp/AFW_Flip/AFW_134212_1_0.mat")).unwrap();
    let a = plain.numeric("pt2d", &[2, 68]).unwrap();
    let b = zipped.numeric("pt2d", &[2, 68]).unwrap();
    for i in 0..68 {
        let x = 100.0 + 2.0 * i as f64 + 0.25;
        assert_eq!((a[2 * i], a[2 * i + 1]), (x, 50.0 + 3.0 * i as f64 + 0.5));
        assert_eq!((b[2 * i], b[2 * i + 1]), (255.0 - x, 50.0 + 3.0 * i as f64 + 0.5));
    }
    assert_eq!(plain.numeric("Pose_Para", &[1, 7]).unwrap(), vec![0.1, -0.5, 0.25, 120.0, 130.0, 0.0, 0.0015]);
    assert_eq!(zipped.numeric("Pose_Para", &[1, 7]).unwrap(), vec![0.1, 0.5, -0.25, 120.0, 130.0, 0.0, 0.0015]);
    assert_eq!(plain.numeric("Shape_Para", &[10, 1]).unwrap(), (0..10).map(f64::from).collect::<Vec<_>>());
    let e = plain.numeric("pt2d", &[2, 67]).unwrap_err().to_string();
    assert!(e.contains("AFW_134212_1_0.mat") && e.contains("pt2d") && e.contains("[2, 68]"), "{e}");
}

#[test]
fn writer_round_trips_through_the_reader() {
    let dir = scratch("roundtrip");
    let path = dir.join("w.mat");
    let img = MatArray::uint8(&[2, 3, 3], (0..18).collect());
    let vars = vec![
        ("pt2d", MatArray::double_rows(2, 3, &[1.5, 2.5, 3.5, -1.0, 0.0, 1e300])),
        ("IsTr", MatArray::cell(&[2, 1], vec![img.clone(), MatArray::uint8(&[1, 1], vec![255])])),
        ("name", MatArray::text("AFW_1")),
        ("flags", MatArray { dims: vec![1, 2], data: MatData::Logical(vec![0, 1]) }),
        (
            "s",
            MatArray {
                dims: vec![1, 1],
                data: MatData::Struct { fields: vec!["a".into(), "bb".into()], values: vec![img, MatArray::text("z")] },
            },
        ),
    ];
    mat::write_v5(&path, &vars).unwrap();
    let back = mat::read(&path).unwrap();
    let names: Vec<&str> = back.vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pt2d", "IsTr", "name", "flags", "s"]);
    for ((_, want), (_, got)) in vars.iter().zip(&back.vars) {
        assert_eq!(want, got);
    }
    // Shapes the writer must refuse, naming the variable.
    let bad = mat::write_v5(&path, &[("x", MatArray::double(&[2, 2], vec![1.0]))]).unwrap_err().to_string();
    assert!(bad.contains("variable x") && bad.contains("[2, 2]"), "{bad}");
    let bad = mat::write_v5(&path, &[("1x", MatArray::double(&[1, 1], vec![1.0]))]).unwrap_err().to_string();
    assert!(bad.contains("\"1x\""), "{bad}");
}

/// A Level 5 file built by hand: a double array stored as `miUINT8` in the small-element form
/// (how MATLAB stores small integer-valued doubles), little- and big-endian.
fn handmade(big: bool, dims: [i32; 2], values: &[u8]) -> Vec<u8> {
    let u32b = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut body = Vec::new();
    body.extend(u32b(6)); // array flags: miUINT32, 8 bytes
    body.extend(u32b(8));
    body.extend(u32b(6)); // mxDOUBLE_CLASS
    body.extend(u32b(0));
    body.extend(u32b(5)); // dims: miINT32, 8 bytes
    body.extend(u32b(8));
    body.extend(u32b(dims[0] as u32));
    body.extend(u32b(dims[1] as u32));
    body.extend(u32b((2 << 16) | 1)); // name: small element, miINT8, 2 bytes
    body.extend(b"pq\0\0");
    body.extend(u32b(2)); // real part: miUINT8
    body.extend(u32b(values.len() as u32));
    body.extend(values);
    body.resize(body.len().next_multiple_of(8), 0);
    let mut file = b"MATLAB 5.0 MAT-file, handmade".to_vec();
    file.resize(124, b' ');
    file.extend(if big { [1, 0, b'M', b'I'] } else { [0, 1, b'I', b'M'] });
    file.extend(u32b(14));
    file.extend(u32b(body.len() as u32));
    file.extend(body);
    file
}

#[test]
fn v5_converts_storage_types_and_reads_both_endians() {
    for big in [false, true] {
        let bytes = handmade(big, [1, 3], &[0, 7, 255]);
        let f = mat::read_bytes(Path::new("hand.mat"), &bytes).unwrap();
        assert_eq!(f.get("pq").unwrap(), &MatArray::double(&[1, 3], vec![0.0, 7.0, 255.0]), "big endian: {big}");
    }
}

#[test]
fn v5_malformed_files_are_clear_errors() {
    let path = fixture("300w_lp/AFW/AFW_134212_1_0.mat");
    let bytes = std::fs::read(&path).unwrap();
    // Truncated inside the first variable and inside the header.
    let e = err_of(&path, &bytes[..200]);
    assert!(e.contains("AFW_134212_1_0.mat: variable pt2d: truncated"), "{e}");
    let e = err_of(&path, &bytes[..100]);
    assert!(e.contains("AFW_134212_1_0.mat: truncated: 100 bytes"), "{e}");
    // A header claiming 10^12 elements with three bytes present: an error, not an allocation.
    let e = err_of(Path::new("huge.mat"), &handmade(false, [1_000_000, 1_000_000], &[1, 2, 3]));
    assert!(e.contains("huge.mat: variable pq: 3 double values for dims [1000000, 1000000]"), "{e}");
    // A corrupted deflate stream: the variable's name still inflates, the rest does not.
    let zpath = fixture("300w_lp/AFW_Flip/AFW_134212_1_0.mat");
    let mut z = std::fs::read(&zpath).unwrap();
    for b in &mut z[128 + 8 + 200..128 + 8 + 240] {
        *b ^= 0x5a;
    }
    let e = err_of(&zpath, &z);
    assert!(e.contains("AFW_134212_1_0.mat") && e.contains("variable pt2d: corrupted zlib stream"), "{e}");
    // Not a MAT file at all.
    let e = err_of(Path::new("x.mat"), &[b'x'; 300]);
    assert!(e.contains("x.mat") && e.contains("Level 5"), "{e}");
}

#[test]
fn w300lp_reader_reads_the_layout_and_skips_a_wrong_shape() {
    let ds = data::datasets::open("300w_lp", &fixture("300w_lp"), "train").unwrap();
    assert_eq!(ds.records.len(), 2);
    assert_eq!(ds.bad.len(), 1);
    assert!(ds.bad[0].source.ends_with("HELEN/HELEN_bad_0.mat"), "{:?}", ds.bad[0]);
    assert!(ds.bad[0].reason.contains("HELEN_bad_0.mat") && ds.bad[0].reason.contains("[2, 67]"), "{:?}", ds.bad);
    let (afw, flip) = (&ds.records[0], &ds.records[1]);
    assert_eq!(afw.source, "AFW/AFW_134212_1_0.mat");
    assert_eq!(flip.source, "AFW_Flip/AFW_134212_1_0.mat");
    assert_eq!(afw.crop, data::CropFrom::Points);
    let data::Label::HeadPose { pitch_yaw_roll, points: Some(points) } = &afw.label else { panic!("{:?}", afw.label) };
    assert_eq!(*pitch_yaw_roll, [0.1, -0.5, 0.25]);
    assert_eq!(points.len(), 68);
    assert_eq!(points[0], [100.25, 50.5]);
    assert_eq!(points[67], [234.25, 251.5]);
    let deg = afw.raw["pose_degrees"].as_array().unwrap();
    assert!((deg[1].as_f64().unwrap() - (-28.64788975654116)).abs() < 1e-12, "{deg:?}");
    let data::Label::HeadPose { pitch_yaw_roll, points: Some(points) } = &flip.label else { panic!() };
    assert_eq!(*pitch_yaw_roll, [0.1, 0.5, -0.25]);
    assert_eq!(points[67], [255.0 - 234.25, 251.5]);
    assert!(data::datasets::open("300w_lp", &fixture("300w_lp"), "test").is_err());
}

#[test]
fn aflw2000_reader_keeps_out_of_range_poses_and_flags_them() {
    let ds = data::datasets::open("aflw2000", &fixture("aflw2000"), "test").unwrap();
    assert_eq!((ds.records.len(), ds.bad.len()), (2, 0));
    let flags: Vec<bool> = ds.records.iter().map(|r| r.raw["out_of_range"].as_bool().unwrap()).collect();
    assert_eq!(flags, [false, true]); // image00004: yaw 1.9 rad = 108.86 degrees
    let data::Label::HeadPose { pitch_yaw_roll, points: Some(points) } = &ds.records[0].label else { panic!() };
    assert_eq!(*pitch_yaw_roll, [-0.2, 0.3, 0.05]);
    assert_eq!(points[5], [205.0, 160.0]); // pt3d_68 rows 0-1: (200 + i, 150 + 2i)
                                           // The AFLW2000 folder itself is accepted as the root too.
    let ds = data::datasets::open("aflw2000", &fixture("aflw2000/AFLW2000"), "test").unwrap();
    assert_eq!(ds.records.len(), 2);
}

/// Check COFW train records against the script's formulas; `grey0` says whether image 0 is grey.
fn check_cofw_train(ds: &data::Dataset, file: &str, grey0: bool) {
    assert_eq!((ds.records.len(), ds.bad.len()), (2, 0), "{:?}", ds.bad);
    let r = &ds.records[0];
    assert_eq!(r.source, format!("{file}:1"));
    let data::Label::Visibility { points, occluded } = &r.label else { panic!("{:?}", r.label) };
    // 1-based x = 4 + k - 2n, y = 6 + k, shifted to 0-based.
    assert_eq!((points[0], points[28]), ([3.0, 5.0], [31.0, 33.0]));
    assert_eq!(&occluded[..4], &[1, 0, 0, 1]); // (k + n) % 3 == 0
    assert_eq!(r.crop, data::CropFrom::Box([2.0, 4.0, 32.0, 35.0])); // [3, 5, 30, 31] x, y, w, h
    let img = r.decode_image().unwrap();
    // Pixel (row 7, column 5) = (10*7 + 3*5 + 100*ch) % 256.
    let want = if grey0 { [85, 85, 85] } else { [85, 185, 29] };
    assert_eq!(img.get_pixel(5, 7).0, want);
    let data::Label::Visibility { points, occluded } = &ds.records[1].label else { panic!() };
    assert_eq!(points[0], [1.0, 5.0]);
    assert_eq!(&occluded[..4], &[0, 0, 1, 0]);
    let img = ds.records[1].decode_image().unwrap();
    assert_eq!(img.get_pixel(27, 2).0, [101, 101, 101]); // grey (10*2 + 3*27) % 256
}

#[test]
fn cofw_reader_reads_the_level5_file() {
    let root = fixture("cofw_v5");
    let train = data::datasets::open("cofw", &root, "train").unwrap();
    check_cofw_train(&train, "COFW.mat", true);
    assert_eq!(train.records[0].decode_image().unwrap().dimensions(), (32, 36));
    let test = data::datasets::open("cofw", &root, "test").unwrap();
    assert_eq!(test.records.len(), 1);
    assert_eq!(test.records[0].crop, data::CropFrom::Box([1.0, 2.0, 13.0, 16.0]));
}

#[test]
fn cofw_reader_reads_what_write_v5_writes() {
    let dir = scratch("cofw-writer");
    let img = MatArray::from_rgb_image(&image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8, y as u8, 9])));
    let mut phis = vec![10.0; 87];
    phis[58..].fill(0.0);
    phis[60] = 1.0;
    let vars = [
        ("IsTr", MatArray::cell(&[1, 1], vec![img])),
        ("phisTr", MatArray::double(&[1, 87], phis)),
        ("bboxesTr", MatArray::double(&[1, 4], vec![1.0, 1.0, 4.0, 3.0])),
    ];
    mat::write_v5(&dir.join("COFW.mat"), &vars).unwrap();
    let ds = data::datasets::open("cofw", &dir, "train").unwrap();
    let data::Label::Visibility { points, occluded } = &ds.records[0].label else { panic!() };
    assert_eq!((points[3], occluded[2], occluded[3]), ([9.0, 9.0], 1, 0));
    assert_eq!(ds.records[0].decode_image().unwrap().get_pixel(3, 2).0, [3, 2, 9]);
    assert_eq!(ds.records[0].crop, data::CropFrom::Box([0.0, 0.0, 4.0, 3.0]));
}

#[test]
fn v73_reads_matlab_style_hdf5() {
    let f = mat::read(&fixture("cofw/COFW_train_color.mat")).unwrap();
    let names: Vec<&str> = f.vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["IsTr", "bboxesTr", "phisTr"]); // `#refs#` is a group, not a variable
                                                       // Stored transposed, (2, 4) on disk: MATLAB's 2x4, column-major.
    assert_eq!(f.numeric("bboxesTr", &[2, 4]).unwrap(), vec![3.0, 1.0, 5.0, 4.0, 30.0, 29.0, 31.0, 30.0]);
    let phis = f.numeric("phisTr", &[2, 87]).unwrap();
    assert_eq!((phis[0], phis[1], phis[2 * 29], phis[2 * 58], phis[2 * 58 + 1]), (4.0, 2.0, 6.0, 1.0, 0.0));
    let cells = f.get("IsTr").unwrap().cells().unwrap();
    assert_eq!(f.get("IsTr").unwrap().dims, vec![2, 1]);
    assert_eq!((cells[0].dims.as_slice(), cells[1].dims.as_slice()), (&[48, 40, 3][..], &[36, 32][..]));
    // Chunked + deflate (image 0) and contiguous (image 1), column-major: (r, c, ch) at r + H c + H W ch.
    let MatData::UInt8(px) = &cells[0].data else { panic!("{:?}", cells[0].class_name()) };
    assert_eq!(px[7 + 48 * 5 + 48 * 40 * 2], ((70 + 15 + 200) % 256) as u8);
    let MatData::UInt8(px) = &cells[1].data else { panic!() };
    assert_eq!(px[35 + 36 * 31], ((350 + 93) % 256) as u8);
    // A compact dataset (the test file's image).
    let t = mat::read(&fixture("cofw/COFW_test_color.mat")).unwrap();
    let img = t.get("IsT").unwrap().cells().unwrap()[0].to_rgb_image().unwrap();
    assert_eq!((img.dimensions(), img.get_pixel(15, 19).0), ((16, 20), [(190 + 45) as u8, ((335) % 256) as u8, 179]));
    assert_eq!(t.numeric("bboxesT", &[1, 4]).unwrap(), vec![2.0, 3.0, 12.0, 14.0]);
}

#[test]
fn cofw_reader_reads_the_v73_files() {
    let train = data::datasets::open("cofw", &fixture("cofw"), "train").unwrap();
    check_cofw_train(&train, "COFW_train_color.mat", false);
    let test = data::datasets::open("cofw", &fixture("cofw"), "test").unwrap();
    assert_eq!((test.records.len(), test.records[0].crop), (1, data::CropFrom::Box([1.0, 2.0, 13.0, 16.0])));
}

#[test]
fn v73_malformed_files_are_clear_errors() {
    let path = fixture("cofw/COFW_train_color.mat");
    let bytes = std::fs::read(&path).unwrap();
    // Truncated: the root group's B-tree and heap are gone.
    let e = err_of(&path, &bytes[..700]);
    assert!(e.contains("COFW_train_color.mat: MAT v7.3 (HDF5): root group:"), "{e}");
    // A superblock version outside the subset (h5py's libver="latest" writes 3).
    let mut v3 = bytes.clone();
    v3[512 + 8] = 4;
    let e = err_of(&path, &v3);
    assert!(e.contains("superblock version 4 is not supported"), "{e}");
    // A corrupted deflate chunk (h5py's level-4 zlib streams start 78 5E): the variable is named.
    let z = bytes.windows(2).position(|w| w == [0x78, 0x5e]).expect("a zlib stream in the fixture");
    let mut bad = bytes.clone();
    for b in &mut bad[z + 2..z + 12] {
        *b ^= 0xa5;
    }
    let e = err_of(&path, &bad);
    assert!(e.contains("variable ") && e.contains("zlib"), "{e}");
}

/// Every truncation and many single-byte corruptions of each fixture: an `Ok` or an `Err`, never
/// a panic, and no allocation beyond what the bytes could hold (the test would abort).
#[test]
fn damaged_files_never_panic() {
    for rel in ["cofw/COFW_train_color.mat", "cofw/COFW_test_color.mat", "latest.mat", "cofw_v5/COFW.mat", "types.mat"]
    {
        let bytes = std::fs::read(fixture(rel)).unwrap();
        let path = Path::new(rel);
        for cut in (0..bytes.len()).step_by(13) {
            let _ = mat::read_bytes(path, &bytes[..cut]);
        }
        for at in (0..bytes.len()).step_by(5) {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                let _ = mat::read_bytes(path, &b);
            }
        }
    }
}

/// Found by `fuzz/` (target hdf5): a chunked dataset with a zero dim beside two dims whose product
/// overflows usize. Its element count is 0, but copying a chunk computed the row offsets from the
/// other dims and overflowed (a panic). An empty dataset now copies nothing.
#[test]
fn v73_empty_chunked_dataset_with_huge_dims_does_not_overflow() {
    let path = fixture("fuzz_zero_dim_chunked.mat");
    let _ = mat::read_bytes(&path, &std::fs::read(&path).unwrap());
}

#[test]
fn v73_hostile_files_end_in_errors() {
    // A cell whose references point to itself: bounded by the nesting depth, not a hang.
    let e = mat::read(&fixture("hostile_loop.mat")).unwrap_err().to_string();
    assert!(e.contains("hostile_loop.mat") && e.contains("variable loop") && e.contains("nested deeper"), "{e}");
    // 10^6 x 10^6 doubles declared, no chunk written: an error, not an 8 TB allocation.
    let e = mat::read(&fixture("hostile_big.mat")).unwrap_err().to_string();
    assert!(e.contains("variable big: dims [1000000, 1000000]") && e.contains("more than the file"), "{e}");
}

#[test]
fn v73_reads_hdf5_latest_format_too() {
    // Superblock v3, object header v2, link-message groups, layout v4 (fixed-array and
    // single-chunk indexes): HDF5 dims reversed, the same bytes, so every array is 0, 1, 2, ...
    let f = mat::read(&fixture("latest.mat")).unwrap();
    let names: Vec<&str> = f.vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["c", "x", "y", "z"]);
    let count = |n: usize| (0..n).map(|v| v as f64).collect::<Vec<_>>();
    assert_eq!(f.numeric("x", &[3, 2]).unwrap(), count(6));
    assert_eq!(f.numeric("y", &[10, 4]).unwrap(), count(40)); // partial edge chunks, shuffle + deflate
    assert_eq!(f.numeric("z", &[10, 1]).unwrap(), count(10));
    let c = f.get("c").unwrap().cells().unwrap();
    assert_eq!(c[0], MatArray::uint8(&[4, 3], (0..12).collect()));
}

#[test]
fn w300lp_falls_back_to_the_landmarks_file_and_needs_the_image() {
    let root = scratch("w300lp-fallback");
    std::fs::create_dir_all(root.join("AFW")).unwrap();
    std::fs::create_dir_all(root.join("landmarks/AFW")).unwrap();
    let pose = MatArray::double(&[1, 7], vec![0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    // `a` has no pt2d: its points come from landmarks/AFW/a_pts.mat (pts_2d 68x2 = pt2d').
    mat::write_v5(&root.join("AFW/a.mat"), &[("Pose_Para", pose.clone())]).unwrap();
    std::fs::copy(fixture("300w_lp/landmarks/AFW/AFW_134212_1_0_pts.mat"), root.join("landmarks/AFW/a_pts.mat"))
        .unwrap();
    std::fs::write(root.join("AFW/a.jpg"), b"").unwrap();
    // `b` has no image beside it.
    mat::write_v5(&root.join("AFW/b.mat"), &[("Pose_Para", pose)]).unwrap();
    let ds = data::datasets::open("300w_lp", &root, "train").unwrap();
    assert_eq!((ds.records.len(), ds.bad.len()), (1, 1));
    let data::Label::HeadPose { points: Some(points), pitch_yaw_roll } = &ds.records[0].label else { panic!() };
    assert_eq!((points[0], points[67], pitch_yaw_roll[0]), ([100.25, 50.5], [234.25, 251.5], 0.5));
    assert!(ds.bad[0].source.ends_with("b.mat") && ds.bad[0].reason.contains("no image"), "{:?}", ds.bad[0]);
}
