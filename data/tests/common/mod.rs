//! Writers of tiny datasets in their native layouts, byte for byte as the real files are laid
//! out (column widths, header lines, 1-based `.pts`), and small images, in a temporary folder.

#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::{GrayImage, Luma, Rgb, RgbImage};

/// A fresh folder under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("facex-data-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Write a file, creating its folders.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// An RGB image with a gradient (format from the extension: `.jpg` or `.png`).
pub fn write_rgb(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, 128]));
    img.save(path).unwrap();
}

/// A grey PNG whose pixels are `f(x, y)`.
pub fn write_gray(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    GrayImage::from_fn(w, h, |x, y| Luma([f(x, y)])).save(path).unwrap();
}

/// A binary part mask (255 inside `[x0, x1) x [y0, y1)`), as CelebAMask-HQ's part PNGs.
pub fn write_part(path: &Path, size: u32, rect: [u32; 4]) {
    let [x0, y0, x1, y1] = rect;
    write_gray(path, size, size, |x, y| if x >= x0 && x < x1 && y >= y0 && y < y1 { 255 } else { 0 });
}

/// Cut a file down to its first `keep` bytes (a truncated download).
pub fn truncate(path: &Path, keep: usize) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..keep.min(bytes.len())]).unwrap();
}

/// A 300W `.pts` file of 1-based points, as iBUG writes them (`n_points:` has two spaces).
pub fn pts_text(points_1based: &[[f32; 2]]) -> String {
    let mut s = format!("version: 1\nn_points:  {}\n{{\n", points_1based.len());
    for p in points_1based {
        s += &format!("{:.3} {:.3}\n", p[0], p[1]);
    }
    s + "}\n"
}

/// A LaPa landmark file: the count, then `x y` lines.
pub fn lapa_landmarks_text(points: &[[f32; 2]]) -> String {
    let mut s = format!("{}\n", points.len());
    for p in points {
        s += &format!("{} {}\n", p[0], p[1]);
    }
    s
}

/// One WFLW list line: 98 points, the box, the six flags, the image path.
pub fn wflw_line(points98: &[[f32; 2]], bbox: [i32; 4], flags: [u8; 6], image: &str) -> String {
    let mut f: Vec<String> = points98.iter().flat_map(|p| [format!("{:.6}", p[0]), format!("{:.6}", p[1])]).collect();
    f.extend(bbox.iter().map(|v| v.to_string()));
    f.extend(flags.iter().map(|v| v.to_string()));
    f.push(image.to_string());
    f.join(" ") + "\n"
}

/// CelebA's 40 attribute names, in its order.
pub const CELEBA_ATTRIBUTES: &str = "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips \
Big_Nose Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair \
Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose \
Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat \
Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young";

/// `list_attr_celeba.txt`: count, names (with the trailing space the real file has), rows of
/// right-aligned `-1`/` 1` columns.
pub fn celeba_attr_text(names: &str, rows: &[(&str, Vec<i32>)]) -> String {
    let mut s = format!("{}\n{} \n", rows.len(), names);
    for (file, values) in rows {
        s += file;
        for v in values {
            s += &format!(" {v:>2}");
        }
        s += "\n";
    }
    s
}

/// `list_bbox_celeba.txt`.
pub fn celeba_bbox_text(rows: &[(&str, [i32; 4])]) -> String {
    let mut s = format!("{}\nimage_id x_1 y_1 width height\n", rows.len());
    for (file, b) in rows {
        s += &format!("{file} {:>5}{:>4}{:>4}{:>4}\n", b[0], b[1], b[2], b[3]);
    }
    s
}

/// `list_landmarks_celeba.txt` / `list_landmarks_align_celeba.txt`.
pub fn celeba_landmarks_text(rows: &[(&str, [i32; 10])]) -> String {
    let mut s = format!(
        "{}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n",
        rows.len()
    );
    for (file, v) in rows {
        s += file;
        for x in v {
            s += &format!(" {x:>4}");
        }
        s += "\n";
    }
    s
}

/// `list_eval_partition.txt`.
pub fn celeba_partition_text(rows: &[(&str, u8)]) -> String {
    rows.iter().map(|(f, p)| format!("{f} {p}\n")).collect()
}

/// `CelebA-HQ-to-CelebA-mapping.txt`: fixed-width columns.
pub fn hq_mapping_text(rows: &[(u32, u32, &str)]) -> String {
    let mut s = format!("{:<12}{:<12}{:<12}\n", "idx", "orig_idx", "orig_file");
    for (idx, orig, file) in rows {
        s += &format!("{idx:<12}{orig:<12}{file:<12}\n");
    }
    s
}
