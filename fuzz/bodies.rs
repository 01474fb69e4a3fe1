//! The body of every fuzz target, as plain functions: one input in, errors ignored, a panic or an
//! abort is the finding. Two engines run them: libFuzzer (`fuzz/fuzz_targets/*.rs`, nightly,
//! coverage-guided, by hand or `scripts/fuzz.sh`) and the bounded mutation run in CI
//! (`tests/fuzz_bounded.rs`, the pinned stable toolchain, no instrumentation). Both include this
//! file with `#[path]`, so they cannot test different things.
#![allow(dead_code)] // each libFuzzer binary uses one body

use data::datasets::{self, lapa, utkface, w300};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A target's body: one input, anything may be wrong with it.
pub type Body = fn(&[u8]);

/// Every target: its name (the folder of its seeds under `fuzz/corpus/`) and its body.
pub const TARGETS: [(&str, Body); 6] = [
    ("checkpoint_zip_pickle", checkpoint_zip_pickle),
    ("safetensors", safetensors),
    ("image", image),
    ("annotations", annotations),
    ("mat_v5", mat_v5),
    ("hdf5", hdf5),
];

/// `model.pt`: the torch.save zip container or the legacy format, the restricted pickle reader,
/// the tensor copies.
pub fn checkpoint_zip_pickle(data: &[u8]) {
    let _ = facex::checkpoint::load_pytorch_from_bytes(data, "fuzz.pt", None);
}

/// A `.safetensors` file: header, metadata, every tensor.
pub fn safetensors(data: &[u8]) {
    let _ = facex::checkpoint::safetensors_metadata(data, "fuzz.safetensors");
    let _ = facex::checkpoint::load_safetensors_from_bytes(data, "fuzz.safetensors");
}

/// The image path of `facex analyze`: the first 16 bytes are a face box (four little-endian f32),
/// the rest an image file; decode, the official crop of the box and of the whole image.
pub fn image(data: &[u8]) {
    let Some((head, file)) = data.split_at_checked(16) else { return };
    let face_box: [f32; 4] = std::array::from_fn(|i| f32::from_le_bytes(head[4 * i..4 * i + 4].try_into().unwrap()));
    let Ok(img) = facex::detect::decode_rgb(file) else { return };
    let _ = facex::preprocess::preprocess_face(&img, face_box);
    let whole = [0.0, 0.0, img.width() as f64, img.height() as f64];
    let _ = facex::preprocess::preprocess_crop(&img, whole);
}

/// MATLAB Level 5 `.mat` (v5/v6, v7 zlib).
pub fn mat_v5(data: &[u8]) {
    let _ = data::mat::read_bytes(Path::new("fuzz.mat"), data);
}

const HDF5_SIGNATURE: &[u8] = b"\x89HDF\r\n\x1a\n";

/// MAT v7.3 (the HDF5 subset); an input without the HDF5 signature gets one in front.
pub fn hdf5(data: &[u8]) {
    let path = Path::new("fuzz.mat");
    if data.starts_with(HDF5_SIGNATURE) || data.get(512..520) == Some(HDF5_SIGNATURE) {
        let _ = data::mat::read_bytes(path, data);
    } else {
        let _ = data::mat::read_bytes(path, &[HDF5_SIGNATURE, data].concat());
    }
}

const SELECTORS: u8 = 13;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// The folder of synthetic dataset layouts for [`annotations`], made once per process.
pub fn annotations_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("facex-fuzz-annotations-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let base = root.join("synth");
        data::synth::write_dataset(&base, 2, 7).unwrap();
        for (sel, from) in [(3, "celeba"), (4, "celeba"), (7, "celeba"), (8, "300w"), (9, "lapa"), (11, "300w_lp")] {
            copy_dir(&base.join(from), &root.join(sel.to_string()));
        }
        for sel in [5, 6, 10] {
            std::fs::create_dir_all(root.join(sel.to_string())).unwrap();
        }
        std::fs::create_dir_all(root.join("7/CelebAMask-HQ-mask-anno/0")).unwrap();
        let aflw = root.join("12/AFLW2000");
        std::fs::create_dir_all(&aflw).unwrap();
        std::fs::copy(base.join("300w_lp/AFW/synth_000000.jpg"), aflw.join("image00002.jpg")).unwrap();
        root
    })
}

/// Every dataset annotation parser, through the reader a user runs (`data::datasets::open`).
///
/// Input: one selector byte, then the bytes of one annotation file. [`annotations_root`] lays
/// out one small synthetic copy of each dataset, one folder per selector; each input replaces
/// the selected annotation file there and reads the split. Every other file stays as written,
/// so a run is deterministic.
///
/// | selector | file | reader |
/// |---|---|---|
/// | 0 | 300W `.pts` text | `w300::parse_pts` |
/// | 1 | LaPa landmarks text | `lapa::parse_landmarks` |
/// | 2 | UTKFace file name | `utkface::parse_name` |
/// | 3 | CelebA `list_attr_celeba.txt` | `celeba` |
/// | 4 | CelebA `list_eval_partition.txt` | `celeba` |
/// | 5 | FairFace `fairface_label_train.csv` | `fairface` |
/// | 6 | WFLW `list_98pt_rect_attr_train.txt` | `wflw` |
/// | 7 | `CelebA-HQ-to-CelebA-mapping.txt` | `celebamask_hq` |
/// | 8 | 300W `.pts` file | `300w` |
/// | 9 | LaPa landmarks file | `lapa` |
/// | 10 | `COFW.mat` | `cofw` |
/// | 11 | 300W-LP `.mat` | `300w_lp` |
/// | 12 | AFLW2000 `.mat` | `aflw2000` |
pub fn annotations(input: &[u8]) {
    let Some((&sel, body)) = input.split_first() else { return };
    let sel = sel % SELECTORS;
    let text = String::from_utf8_lossy(body);
    let dir = annotations_root().join(sel.to_string());
    let (file, name, split) = match sel {
        0 => return drop(w300::parse_pts(&text)),
        1 => return drop(lapa::parse_landmarks(&text)),
        2 => return drop(utkface::parse_name(&text)),
        3 => ("list_attr_celeba.txt", "celeba", "train"),
        4 => ("list_eval_partition.txt", "celeba", "train"),
        5 => ("fairface_label_train.csv", "fairface", "train"),
        6 => ("list_98pt_rect_attr_train.txt", "wflw", "train"),
        7 => ("CelebA-HQ-to-CelebA-mapping.txt", "celebamask_hq", "train"),
        8 => ("afw/synth_000000.pts", "300w", "train"),
        9 => ("train/landmarks/synth_000000.txt", "lapa", "train"),
        10 => ("COFW.mat", "cofw", "train"),
        11 => ("AFW/synth_000000.mat", "300w_lp", "train"),
        _ => ("AFLW2000/image00002.mat", "aflw2000", "test"),
    };
    std::fs::write(dir.join(file), body).unwrap();
    let _ = datasets::open(name, &dir, split);
}
