//! The `facex` command end to end: analyze (the shipped example, directories, bad files, images
//! without faces), convert and forward.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("facex-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn analyze(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_facex")).arg("analyze").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn astronaut_with_tiny_weights_writes_json_mask_and_overlay() {
    let out = tempdir("astronaut");
    let img = repo().join("tests/fixtures/detect/astronaut.png");
    let weights = repo().join("tests/fixtures/facexformer-tiny/weights.safetensors");
    let (code, err) =
        analyze(&[img.to_str().unwrap(), "--weights", weights.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out.join("astronaut.json"));
    let faces = j["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1);
    let f = &faces[0];
    // The detector's box of the fixture, and every model output present with its size.
    let b: Vec<f64> = f["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!((b[0] - 181.05).abs() < 2.0 && (b[3] - 172.05).abs() < 2.0, "{b:?}");
    assert_eq!(f["landmarks68"].as_array().unwrap().len(), 68);
    assert_eq!(f["attributes"].as_array().unwrap().len(), 40);
    assert_eq!(f["occlusion_probabilities"].as_array().unwrap().len(), 29);
    assert_eq!(f["age"]["probabilities"].as_array().unwrap().len(), 8);
    assert!(j.get("model_weights_missing").is_none());
    // Landmarks land in (or near) the crop, in original image coordinates.
    let crop: Vec<f64> = f["crop_box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for p in f["landmarks68"].as_array().unwrap() {
        let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
        assert!(x > crop[0] - 2.0 * (crop[2] - crop[0]) && x < crop[2] + 2.0 * (crop[2] - crop[0]), "{x}");
        assert!(y > crop[1] - 2.0 * (crop[3] - crop[1]) && y < crop[3] + 2.0 * (crop[3] - crop[1]), "{y}");
    }
    let mask = image::open(out.join("astronaut.parsing.png")).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (512, 512));
    assert!(mask.pixels().all(|p| p.0[0] <= 10));
    let overlay = image::open(out.join("astronaut.overlay.png")).unwrap();
    assert_eq!((overlay.width(), overlay.height()), (512, 512));
}

#[test]
fn directory_with_a_bad_file_and_a_faceless_image_without_weights() {
    let dir = tempdir("dir-in");
    let out = tempdir("dir-out");
    std::fs::copy(repo().join("tests/fixtures/detect/astronaut.png"), dir.join("a.png")).unwrap();
    std::fs::write(dir.join("b.png"), b"this is not a png").unwrap();
    image::RgbImage::from_pixel(64, 48, image::Rgb([90, 90, 90])).save(dir.join("c.png")).unwrap();
    let (code, err) = analyze(&[dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // The corrupt file is reported by name and skipped; the others are processed.
    assert!(err.contains("b.png"), "{err}");
    assert!(!out.join("b.json").exists());
    let a = json(&out.join("a.json"));
    assert_eq!(a["faces"].as_array().unwrap().len(), 1);
    assert!(a["model_weights_missing"].as_str().unwrap().contains("kartiknarayan/facexformer"));
    assert!(a["faces"][0].get("landmarks68").is_none());
    // No face is a normal result: an empty list.
    let c = json(&out.join("c.json"));
    assert_eq!(c["faces"].as_array().unwrap().len(), 0);
}

#[test]
fn empty_directory_and_missing_file_are_clear_errors() {
    let dir = tempdir("empty");
    let (code, err) = analyze(&[dir.to_str().unwrap(), "--out", dir.join("out").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no images"), "{err}");
    let (code, err) = analyze(&["/nonexistent/x.png"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/x.png"), "{err}");
}

#[test]
fn corrupt_weights_are_reported_with_the_file_name() {
    let dir = tempdir("badweights");
    let w = dir.join("model.pt");
    let bytes = std::fs::read(repo().join("tests/fixtures/facexformer-tiny/model.pt")).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 3]).unwrap();
    let img = repo().join("tests/fixtures/detect/astronaut.png");
    let (code, err) =
        analyze(&[img.to_str().unwrap(), "--weights", w.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("model.pt"), "{err}");
}

fn facex(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_facex")).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn convert_then_forward_reproduces_the_fixture_outputs() {
    // model.pt -> safetensors (the fixture's config.json beside model.pt gives the decoder heads,
    // which the output then carries in its metadata: no config.json beside it is needed), then
    // `facex forward` on the fixture input: the outputs match the official ones.
    let dir = tempdir("convert");
    let fixture = repo().join("tests/fixtures/facexformer-tiny");
    let st = dir.join("tiny.safetensors");
    let (code, out, err) = facex(&["convert", fixture.join("model.pt").to_str().unwrap(), st.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"embed_dim\":32") && out.contains("stored in its metadata"), "{out}");
    let io = fixture.join("io.safetensors");
    let result = dir.join("out.safetensors");
    let (code, _, err) = facex(&[
        "forward",
        "--weights",
        st.to_str().unwrap(),
        "--input",
        io.to_str().unwrap(),
        "--output",
        result.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let ours = facex_suite_like_read(&result);
    let want = facex_suite_like_read(&io);
    for name in ["out.landmarks", "out.pose", "out.age", "out.segmentation"] {
        let (a, b) = (&ours[name], &want[name]);
        let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
        assert!(num / den < 1e-4, "{name}: {}", num / den);
    }
    // A corrupt input is an error naming the file.
    let bad = dir.join("bad.pt");
    std::fs::write(&bad, b"PK\x03\x04 truncated").unwrap();
    let (code, _, err) = facex(&["convert", bad.to_str().unwrap(), dir.join("x.safetensors").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.pt"), "{err}");
}

/// Every F32 tensor of a safetensors file as f32 values.
fn facex_suite_like_read(path: &Path) -> std::collections::HashMap<String, Vec<f32>> {
    let sd = facex::checkpoint::load_safetensors(path).unwrap();
    sd.iter()
        .filter(|(_, t)| t.dtype() == tensor::DType::F32)
        .map(|(k, t)| (k.to_string(), t.to_f32_vec().unwrap()))
        .collect()
}

#[test]
fn forward_on_the_reference_device_and_clear_device_errors() {
    let fixture = repo().join("tests/fixtures/facexformer-tiny");
    let dir = tempdir("forward-device");
    let (w, io) = (fixture.join("weights.safetensors"), fixture.join("io.safetensors"));
    let result = dir.join("out.safetensors");
    let run = |device: &str, dtype: &str| {
        facex(&[
            "forward",
            "--weights",
            w.to_str().unwrap(),
            "--input",
            io.to_str().unwrap(),
            "--output",
            result.to_str().unwrap(),
            "--device",
            device,
            "--dtype",
            dtype,
        ])
    };
    // The GPU graph on the CPU ops gives the official outputs too.
    let (code, _, err) = run("reference", "f32");
    assert_eq!(code, 0, "{err}");
    let (ours, want) = (facex_suite_like_read(&result), facex_suite_like_read(&io));
    for name in ["out.landmarks", "out.attributes", "out.segmentation"] {
        let (a, b) = (&ours[name], &want[name]);
        let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
        assert!(num / den < 1e-4, "{name}: {}", num / den);
    }
    let (code, _, err) = run("tpu", "f32");
    assert_ne!(code, 0);
    assert!(err.contains("unknown device `tpu`") && err.contains("cuda"), "{err}");
    // bf16 on the device graph and bf16 products on the CPU (the f32 kernels where the CPU lacks
    // AVX512-BF16): near the official f32 outputs, and not equal to them where bf16 ran. This
    // fixture's random tiny model is ill-conditioned: both land at 4-11% relative L2 (the device
    // graph rounds every activation to bf16, the CPU only the products' operands).
    for dev in ["reference", "cpu"] {
        let (code, _, err) = run(dev, "bf16");
        assert_eq!(code, 0, "{err}");
        let ours = facex_suite_like_read(&result);
        for name in ["out.landmarks", "out.attributes", "out.segmentation"] {
            let (a, b) = (&ours[name], &want[name]);
            let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
            let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
            assert!(num / den < 0.2, "bf16 {dev} {name}: {}", num / den);
            if dev == "reference" || tensor::cpu::gemm::Isa::Avx512Bf16.available() {
                assert!(num / den > 1e-6, "bf16 {name} equals f32: the bf16 kernel did not run");
            }
        }
    }
    let (code, _, err) = run("reference", "f8");
    assert_ne!(code, 0);
    assert!(err.contains("f8"), "{err}");
    // Without a GPU (as in CI), CUDA is a clear error; with one, the run succeeds.
    let (code, _, err) = run("cuda", "bf16");
    if code != 0 {
        assert!(err.contains("device cuda"), "{err}");
        println!("cuda: {err}");
    }
}

#[test]
fn analyze_on_the_reference_device_agrees_with_the_cpu_model() {
    let img = repo().join("tests/fixtures/detect/astronaut.png");
    let weights = repo().join("tests/fixtures/facexformer-tiny/weights.safetensors");
    let landmarks = |device: &str| -> Vec<f64> {
        let out = tempdir(&format!("analyze-{device}"));
        let (code, err) = analyze(&[
            img.to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{device}: {err}");
        let j = json(&out.join("astronaut.json"));
        j["faces"][0]["landmarks68"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
            .collect()
    };
    let (cpu, dev) = (landmarks("cpu"), landmarks("reference"));
    assert_eq!(cpu.len(), 136);
    let worst = cpu.iter().zip(&dev).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-3, "landmarks differ by {worst} px");
}

#[test]
fn directory_reads_every_decodable_format_and_names_what_it_skips() {
    // The astronaut as PNG and as binary PPM (lossless, so the same face to the last bit), a text
    // file and a sub-folder: both images are analysed, the two others are named and counted.
    let dir = tempdir("formats-in");
    let out = tempdir("formats-out");
    let img = image::open(repo().join("tests/fixtures/detect/astronaut.png")).unwrap().to_rgb8();
    img.save(dir.join("a.png")).unwrap();
    // Binary PPM written by hand (`image` would write a P7 PAM under this name).
    let mut ppm = format!("P6\n{} {}\n255\n", img.width(), img.height()).into_bytes();
    ppm.extend_from_slice(img.as_raw());
    std::fs::write(dir.join("b.ppm"), ppm).unwrap();
    std::fs::write(dir.join("notes.txt"), b"not an image").unwrap();
    std::fs::create_dir(dir.join("more")).unwrap();
    let (code, err) = analyze(&[dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("skipped") && err.contains("notes.txt"), "{err}");
    assert!(err.contains("more") && err.contains("directory"), "{err}");
    assert!(err.contains("2 images, 2 faces, 2 skipped (0 unreadable, 2 not images)"), "{err}");
    let (a, b) = (json(&out.join("a.json")), json(&out.join("b.json")));
    assert_eq!(b["faces"].as_array().unwrap().len(), 1);
    assert_eq!(a["faces"][0]["bbox"], b["faces"][0]["bbox"]);
    assert_eq!(a["faces"][0]["detector_score"], b["faces"][0]["detector_score"]);
    // Outputs are complete PNGs under their final names; no temporary file is left behind.
    assert_eq!(image::open(out.join("b.overlay.png")).unwrap().width(), 512);
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["a.json", "a.overlay.png", "b.json", "b.overlay.png"]);
}

#[test]
fn convert_killed_at_random_moments_never_leaves_a_partial_file() {
    // `facex convert` of a 10 MB safetensors file, SIGKILLed at random moments from its start
    // to past its usual end. The target must then be absent or byte-identical to an
    // uninterrupted conversion; temporary names (hidden, `.NAME.tmp-PID`) may remain.
    let dir = tempdir("kill");
    let input = dir.join("in.safetensors");
    let (code, _, err) = facex(&["init", "--config", "tiny", "--seed", "3", input.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let reference = dir.join("reference.safetensors");
    let start = std::time::Instant::now();
    let (code, _, err) = facex(&["convert", input.to_str().unwrap(), reference.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let full = start.elapsed();
    let want = std::fs::read(&reference).unwrap();
    assert!(want.len() > 10_000_000, "{}", want.len());

    let target = dir.join("out.safetensors");
    let mut rng = tensor::SplitMix64(20261202);
    let (mut killed_running, mut absent, mut complete) = (0, 0, 0);
    for _ in 0..40 {
        let _ = std::fs::remove_file(&target);
        let mut child = Command::new(env!("CARGO_BIN_EXE_facex"))
            .args(["convert", input.to_str().unwrap(), target.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(1.2 * rng.uniform()));
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        child.kill().unwrap(); // SIGKILL on Unix: no handler, no cleanup
        child.wait().unwrap();
        match std::fs::read(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => absent += 1,
            Err(e) => panic!("{e}"),
            Ok(bytes) => {
                assert!(bytes == want, "a partial or different file: {} of {} bytes", bytes.len(), want.len());
                complete += 1;
            }
        }
        // Besides the target, only temporary names of the killed writer.
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.contains("out.") {
                assert!(name == "out.safetensors" || name.starts_with(".out.safetensors.tmp-"), "{name}");
            }
        }
    }
    eprintln!("kill test: {killed_running} of 40 killed while running; target absent {absent}, complete {complete}");
    assert!(killed_running >= 10, "too few kills landed while the writer ran: {killed_running}");
    std::fs::remove_dir_all(&dir).ok();
}
