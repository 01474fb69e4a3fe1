//! The MTCNN cascade of facenet-pytorch's `detect_face`, step for step, in f32 like the original.

use super::nets::{ONet, PNet, RNet, StateDict};
use super::nms::{nms, Overlap};
use super::{Error, Face, Result};
use crate::preprocess::RgbImage;
use std::path::{Path, PathBuf};
use tensor::Tensor;

/// Detector settings; the defaults are facenet-pytorch's (and the official inference script's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MtcnnConfig {
    /// Smallest face side searched for, in pixels.
    pub min_face_size: f64,
    /// Face probability thresholds of P-, R- and O-Net.
    pub thresholds: [f32; 3],
    /// Ratio between consecutive pyramid scales.
    pub factor: f64,
    /// Order faces by box area, largest first (else by probability).
    pub select_largest: bool,
    /// Most input pixels PNet sees at once; larger pyramid levels run in horizontal strips
    /// (same result), which bounds activation memory to a few hundred MB whatever the image.
    pub pnet_tile_pixels: usize,
}

impl Default for MtcnnConfig {
    fn default() -> Self {
        MtcnnConfig {
            min_face_size: 20.0,
            thresholds: [0.6, 0.7, 0.7],
            factor: 0.709,
            select_largest: true,
            pnet_tile_pixels: 1 << 20,
        }
    }
}

/// MTCNN with its three networks loaded.
pub struct Mtcnn {
    pnet: PNet,
    rnet: RNet,
    onet: ONet,
    pub config: MtcnnConfig,
}

/// facenet-pytorch's `fixed_batch_process` batch: R/O-Net crops go through in chunks this size.
const CROP_BATCH: usize = 512;

static PNET_PT: &[u8] = include_bytes!("../../models/mtcnn/pnet.pt");
static RNET_PT: &[u8] = include_bytes!("../../models/mtcnn/rnet.pt");
static ONET_PT: &[u8] = include_bytes!("../../models/mtcnn/onet.pt");

fn load_state_dict(path: &Path) -> Result<StateDict> {
    crate::checkpoint::load_pytorch(path, None).map_err(|source| Error::Checkpoint { path: path.into(), source })
}

/// Embedded weights are parsed straight from the binary; `origin` only names them in errors.
fn load_embedded(name: &str, bytes: &[u8]) -> Result<StateDict> {
    let origin = PathBuf::from(format!("<embedded>/{name}"));
    crate::checkpoint::load_pytorch_from_bytes(bytes, &origin, None)
        .map_err(|source| Error::Checkpoint { path: origin, source })
}

impl Mtcnn {
    /// The facenet-pytorch weights compiled into this binary.
    pub fn new_embedded() -> Result<Self> {
        Self::from_state_dicts(
            &load_embedded("pnet.pt", PNET_PT)?,
            &load_embedded("rnet.pt", RNET_PT)?,
            &load_embedded("onet.pt", ONET_PT)?,
        )
    }

    /// `pnet.pt`, `rnet.pt`, `onet.pt` (facenet-pytorch `torch.save` state dicts) from `dir`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Self::from_state_dicts(
            &load_state_dict(&dir.join("pnet.pt"))?,
            &load_state_dict(&dir.join("rnet.pt"))?,
            &load_state_dict(&dir.join("onet.pt"))?,
        )
    }

    pub fn from_state_dicts(pnet: &StateDict, rnet: &StateDict, onet: &StateDict) -> Result<Self> {
        Ok(Mtcnn {
            pnet: PNet::load(pnet)?,
            rnet: RNet::load(rnet)?,
            onet: ONet::load(onet)?,
            config: MtcnnConfig::default(),
        })
    }

    pub fn with_config(mut self, config: MtcnnConfig) -> Self {
        self.config = config;
        self
    }

    /// Load an image file (as RGB, JPEGs as PIL decodes them) and detect faces in it.
    pub fn detect_file(&self, path: impl AsRef<Path>) -> Result<Vec<Face>> {
        self.detect(&super::load_rgb(path)?)
    }

    /// All faces found, largest first (or most probable first without `select_largest`).
    /// An image with no face, or too small to hold one, gives an empty list.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let image = image_tensor(img)?;
        let cfg = &self.config;

        // Stage 1: PNet over the pyramid, NMS per scale then across scales.
        let mut cands: Vec<Cand> = Vec::new();
        for scale in pyramid(w, h, cfg.min_face_size, cfg.factor) {
            let hs = (h as f64 * scale + 1.0) as usize;
            let ws = (w as f64 * scale + 1.0) as usize;
            let level = normalize(&image.interpolate_area((hs, ws))?)?;
            let found = self.pnet_candidates(&level, scale as f32)?;
            let keep = nms(&boxes_of(&found), &scores_of(&found), 0.5, Overlap::Union);
            cands.extend(keep.into_iter().map(|i| found[i]));
        }
        let keep = nms(&boxes_of(&cands), &scores_of(&cands), 0.7, Overlap::Union);
        let mut boxes: Vec<[f32; 5]> = keep
            .into_iter()
            .map(|i| {
                let Cand { b, score, reg } = cands[i];
                // Stage-1 regression uses widths without the +1 (unlike `bbreg`).
                let (rw, rh) = (b[2] - b[0], b[3] - b[1]);
                [b[0] + reg[0] * rw, b[1] + reg[1] * rh, b[2] + reg[2] * rw, b[3] + reg[3] * rh, score]
            })
            .collect();
        boxes.iter_mut().for_each(rerec);

        // Stage 2: RNet on 24x24 crops.
        let (boxes_ok, crops24) = crops(&image, &boxes, 24, w, h)?;
        let mut stage2: Vec<([f32; 5], [f32; 4])> = Vec::new();
        for (chunk_boxes, batch) in batches(&boxes_ok, &crops24)? {
            let (reg, prob) = self.rnet.forward(&batch)?;
            let (reg, prob) = (reg.to_f32_vec()?, prob.to_f32_vec()?);
            for (k, b) in chunk_boxes.iter().enumerate() {
                if prob[k] > cfg.thresholds[1] {
                    stage2.push(([b[0], b[1], b[2], b[3], prob[k]], reg[4 * k..4 * k + 4].try_into().unwrap()));
                }
            }
        }
        let s2b: Vec<[f32; 4]> = stage2.iter().map(|(b, _)| [b[0], b[1], b[2], b[3]]).collect();
        let s2s: Vec<f32> = stage2.iter().map(|(b, _)| b[4]).collect();
        let mut boxes: Vec<[f32; 5]> = nms(&s2b, &s2s, 0.7, Overlap::Union)
            .into_iter()
            .map(|i| {
                let (mut b, reg) = stage2[i];
                bbreg(&mut b, &reg);
                rerec(&mut b);
                b
            })
            .collect();

        // Stage 3: ONet on 48x48 crops, landmarks, then NMS with the 'Min' overlap.
        let (boxes_ok, crops48) = crops(&image, &boxes, 48, w, h)?;
        boxes.clear();
        let mut faces: Vec<Face> = Vec::new();
        for (chunk_boxes, batch) in batches(&boxes_ok, &crops48)? {
            let (reg, pts, prob) = self.onet.forward(&batch)?;
            let (reg, pts, prob) = (reg.to_f32_vec()?, pts.to_f32_vec()?, prob.to_f32_vec()?);
            for (k, b) in chunk_boxes.iter().enumerate() {
                if prob[k] <= cfg.thresholds[2] {
                    continue;
                }
                let mut b = [b[0], b[1], b[2], b[3], prob[k]];
                // Landmarks are relative to the box before O-Net's regression.
                let (wi, hi) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
                let p = &pts[10 * k..10 * k + 10];
                let landmarks = std::array::from_fn(|j| [wi * p[j] + b[0] - 1.0, hi * p[5 + j] + b[1] - 1.0]);
                bbreg(&mut b, reg[4 * k..4 * k + 4].try_into().unwrap());
                faces.push(Face { bbox: [b[0], b[1], b[2], b[3]], prob: b[4], landmarks });
            }
        }
        let fb: Vec<[f32; 4]> = faces.iter().map(|f| f.bbox).collect();
        let fs: Vec<f32> = faces.iter().map(|f| f.prob).collect();
        let mut faces: Vec<Face> = nms(&fb, &fs, 0.7, Overlap::Min).into_iter().map(|i| faces[i]).collect();

        if cfg.select_largest {
            // `np.argsort(area)[::-1]`: ascending sort, reversed.
            let area = |f: &Face| (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]);
            faces.sort_by(|a, b| area(a).partial_cmp(&area(b)).unwrap_or(std::cmp::Ordering::Equal));
            faces.reverse();
        }
        Ok(faces)
    }

    /// PNet on one pyramid level, in strips of output rows so activations stay bounded.
    /// Candidates come out in row-major order, as `mask.nonzero()` gives them.
    fn pnet_candidates(&self, level: &Tensor, scale: f32) -> Result<Vec<Cand>> {
        let (hs, ws) = (level.dim(2)?, level.dim(3)?);
        if hs < 12 || ws < 12 {
            return Ok(Vec::new());
        }
        // Output rows of the full level (conv 3, ceil pool 2/2, conv 3, conv 3).
        let pooled = (hs - 2 - 2).div_ceil(2) + 1;
        let out_rows = pooled - 4;
        let rows_per_tile = (self.config.pnet_tile_pixels / ws / 2).max(1);
        let thresh = self.config.thresholds[0];
        let mut out = Vec::new();
        let mut r0 = 0;
        while r0 < out_rows {
            let r1 = (r0 + rows_per_tile).min(out_rows);
            // Output row r sees input rows 2r..2r+12; strips start on even rows so the pooling
            // grid is the full level's. The last strip runs to the bottom (ceil-mode window).
            let in_end = if r1 == out_rows { hs } else { 2 * r1 + 10 };
            let strip = level.narrow(2, 2 * r0, in_end - 2 * r0)?;
            let (reg, prob) = self.pnet.forward(&strip)?;
            let (th, tw) = (prob.dim(1)?, prob.dim(2)?);
            debug_assert_eq!(th, r1 - r0);
            let (reg, prob) = (reg.to_f32_vec()?, prob.to_f32_vec()?);
            let plane = th * tw;
            for y in 0..th {
                for x in 0..tw {
                    let i = y * tw + x;
                    if prob[i] >= thresh {
                        let (gx, gy) = (x as f32, (r0 + y) as f32);
                        let b = [
                            ((2.0 * gx + 1.0) / scale).floor(),
                            ((2.0 * gy + 1.0) / scale).floor(),
                            ((2.0 * gx + 12.0) / scale).floor(),
                            ((2.0 * gy + 12.0) / scale).floor(),
                        ];
                        let reg = [reg[i], reg[plane + i], reg[2 * plane + i], reg[3 * plane + i]];
                        out.push(Cand { b, score: prob[i], reg });
                    }
                }
            }
            r0 = r1;
        }
        Ok(out)
    }
}

/// A PNet proposal: box in image pixels, score, and its regression offsets.
#[derive(Clone, Copy)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

fn boxes_of(c: &[Cand]) -> Vec<[f32; 4]> {
    c.iter().map(|c| c.b).collect()
}

fn scores_of(c: &[Cand]) -> Vec<f32> {
    c.iter().map(|c| c.score).collect()
}

/// The scales of facenet's pyramid: from `12 / min_face` down by `factor` while the shorter
/// side stays at least 12 pixels.
pub(crate) fn pyramid(w: usize, h: usize, min_face: f64, factor: f64) -> Vec<f64> {
    let m = 12.0 / min_face;
    let mut minl = w.min(h) as f64 * m;
    let mut scale = m;
    let mut scales = Vec::new();
    while minl >= 12.0 {
        scales.push(scale);
        scale *= factor;
        minl *= factor;
    }
    scales
}

/// The image as a float [1, 3, H, W] tensor of 0..255 values (facenet's `permute(0,3,1,2).float()`).
fn image_tensor(img: &RgbImage) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * w * h];
    let (r, rest) = data.split_at_mut(w * h);
    let (g, b) = rest.split_at_mut(w * h);
    for (i, px) in img.as_raw().as_chunks::<3>().0.iter().enumerate() {
        r[i] = px[0] as f32;
        g[i] = px[1] as f32;
        b[i] = px[2] as f32;
    }
    Ok(Tensor::from_vec(data, &[1, 3, h, w])?)
}

/// `(x - 127.5) * 0.0078125`, in that order.
fn normalize(x: &Tensor) -> Result<Tensor> {
    Ok(x.affine(1.0, -127.5)?.affine(0.0078125, 0.0)?)
}

/// facenet's `rerec`: make the box square around its centre, side the longer of w and h.
fn rerec(b: &mut [f32; 5]) {
    let (h, w) = (b[3] - b[1], b[2] - b[0]);
    let l = w.max(h);
    b[0] = b[0] + w * 0.5 - l * 0.5;
    b[1] = b[1] + h * 0.5 - l * 0.5;
    b[2] = b[0] + l;
    b[3] = b[1] + l;
}

/// facenet's `bbreg`: offsets scaled by the pixel-inclusive width and height.
fn bbreg(b: &mut [f32; 5], reg: &[f32; 4]) {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    b[0] += reg[0] * w;
    b[1] += reg[1] * h;
    b[2] += reg[2] * w;
    b[3] += reg[3] * h;
}

/// facenet's `pad` then crop and area-resize: the box truncated to integers, its 1-based start
/// clamped to 1 and its end to the image; returns the boxes whose crop is non-empty, each with
/// its `size x size` crop [1,3,size,size] normalised. (facenet-pytorch would misalign boxes and
/// crops if one were empty; such boxes are dropped here.)
fn crops(image: &Tensor, boxes: &[[f32; 5]], size: usize, w: usize, h: usize) -> Result<(Vec<[f32; 5]>, Vec<Tensor>)> {
    let mut kept = Vec::new();
    let mut out = Vec::new();
    for b in boxes {
        let t = |v: f32| v.trunc() as i64;
        let (x, y) = (t(b[0]).max(1), t(b[1]).max(1));
        let (ex, ey) = (t(b[2]).min(w as i64), t(b[3]).min(h as i64));
        if ey > y - 1 && ex > x - 1 {
            let (x0, y0) = ((x - 1) as usize, (y - 1) as usize);
            let crop = image.narrow(2, y0, ey as usize - y0)?.narrow(3, x0, ex as usize - x0)?;
            out.push(normalize(&crop.interpolate_area((size, size))?)?);
            kept.push(*b);
        }
    }
    Ok((kept, out))
}

/// A chunk of boxes with their crops stacked into one batch.
type Batch<'a> = (&'a [[f32; 5]], Tensor);

/// Boxes and crops in chunks of `CROP_BATCH`, each chunk's crops stacked into one batch.
fn batches<'a>(boxes: &'a [[f32; 5]], crops: &[Tensor]) -> Result<Vec<Batch<'a>>> {
    boxes
        .chunks(CROP_BATCH)
        .zip(crops.chunks(CROP_BATCH))
        .map(|(b, c)| {
            let refs: Vec<&Tensor> = c.iter().collect();
            Ok((b, Tensor::cat(&refs, 0)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_matches_facenet() {
        // 512x512, min face 20: m = 0.6, minl = 307.2 shrinking by 0.709 while >= 12.
        let s = pyramid(512, 512, 20.0, 0.709);
        assert_eq!(s.len(), 10);
        assert!((s[0] - 0.6).abs() < 1e-12 && (s[9] - 0.6 * 0.709f64.powi(9)).abs() < 1e-12);
        assert!(pyramid(1, 1, 20.0, 0.709).is_empty());
        assert_eq!(pyramid(20, 400, 20.0, 0.709).len(), 1);
    }

    #[test]
    fn rerec_squares_around_centre() {
        let mut b = [10.0, 20.0, 30.0, 60.0, 0.9];
        rerec(&mut b);
        assert_eq!(b, [0.0, 20.0, 40.0, 60.0, 0.9]);
    }

    #[test]
    fn bbreg_uses_inclusive_size() {
        let mut b = [10.0, 20.0, 19.0, 39.0, 0.5];
        bbreg(&mut b, &[0.1, -0.1, 0.5, 0.0]);
        assert_eq!(b, [11.0, 18.0, 24.0, 39.0, 0.5]);
    }
}
