#!/usr/bin/env python3
"""Real multi-face, partial-face, grey and rotated photos with facenet-pytorch's MTCNN output,
for tests/detect.rs.

Needs: torch, torchvision, pillow, tqdm and `pip install facenet-pytorch --no-deps` (2.6.0; its
weights are the ones in facex/models/mtcnn). Run from the repository root:

    python scripts/make-detect-fixtures.py

The photos come from two registry packages, fetched with `pip download` (sdists):
  - face_recognition 1.3.0 (MIT, Adam Geitgey): tests/test_images/obama*.jpg, biden.jpg
    (official White House portraits, public domain as works of the US government);
  - insightface 2.1 (MIT library): insightface/data/images/t1.jpg (a six-person group photo
    the library ships as its demo image).
plus skimage's `astronaut` (NASA, public domain) already in tests/fixtures/detect/astronaut.png.

Each photo is cropped/resized/converted with PIL and stored as PNG, so that our decoder sees the
exact pixels facenet-pytorch saw; two JPEGs are kept as shipped, to check that our JPEG decoding
is PIL's (libjpeg-turbo) to the bit. Each `NAME.detect.json` holds
facenet-pytorch's boxes, probabilities and five points, largest face first
(`MTCNN(select_largest=True)`), with all values as float32 widened to float.
"""
import glob
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np
import torch
from PIL import Image
from facenet_pytorch import MTCNN

OUT = "tests/fixtures/detect"
PACKAGES = ["face_recognition==1.3.0", "insightface==2.1"]


def fetch(tmp):
    """The two sdists, unpacked under tmp; returns a dict name -> path of the source photos."""
    subprocess.run(
        ["pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp, *PACKAGES],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for f in glob.glob(os.path.join(tmp, "*.tar.gz")):
        with tarfile.open(f) as t:
            t.extractall(tmp, filter="data")
    fr = os.path.join(tmp, "face_recognition-1.3.0/tests/test_images")
    ins = os.path.join(tmp, "insightface-2.1/insightface/data/images")
    return {
        "t1": os.path.join(ins, "t1.jpg"),
        "partial": os.path.join(fr, "obama_partial_face.jpg"),
        "partial2": os.path.join(fr, "obama_partial_face2.jpg"),
        "obama3": os.path.join(fr, "obama3.jpg"),
        "biden": os.path.join(fr, "biden.jpg"),
    }


def scaled(im, width):
    return im.resize((width, round(im.height * width / im.width)), Image.BILINEAR)


def photos(src):
    """name -> (PIL image as stored, note). Sizes keep every PNG small (the set is < 1.5 MB)."""
    rgb = lambda k: Image.open(src[k]).convert("RGB")
    astronaut = Image.open(os.path.join(OUT, "astronaut.png")).convert("RGB")
    out = {}
    # Six faces of different sizes, some turned, two partly hidden.
    out["group"] = (scaled(rgb("t1"), 480), "insightface t1.jpg, 1280x886 -> 480 wide")
    # The face cut by the left border (and the image's top third only).
    p = rgb("partial")
    out["partial-left"] = (scaled(p.crop((0, 0, p.width, p.height * 2 // 5)), 300), "obama_partial_face.jpg, top 2/5")
    # Cut by the right border, grey (stored as a grey PNG; facenet gets it as RGB).
    p = rgb("partial2")
    grey = scaled(p.crop((0, 0, p.width, p.height * 2 // 5)), 300).convert("L")
    out["partial-grey"] = (grey, "obama_partial_face2.jpg, top 2/5, greyscale")
    # A small face in a wide scene.
    p = rgb("obama3")
    out["small-face"] = (scaled(p.crop((0, 0, p.width, p.height // 2)), 480), "obama3.jpg, top half")
    # Rotated by 25 degrees (bicubic, black corners).
    p = rgb("biden")
    p = scaled(p.crop((0, 0, p.width, p.height * 2 // 5)), 320)
    out["rotated"] = (p.rotate(25, resample=Image.BICUBIC, expand=True), "biden.jpg, top 2/5, rotated 25 deg")
    # Two astronauts side by side, the right one cut by the right border, the left one smaller.
    canvas = Image.new("RGB", (420, 260), (40, 60, 80))
    canvas.paste(astronaut.resize((256, 256), Image.BILINEAR), (0, 2))
    canvas.paste(astronaut.crop((0, 0, 320, 512)).resize((200, 320), Image.BILINEAR), (300, -20))
    out["two-astronauts"] = (canvas, "skimage astronaut twice, one cut by the right border")
    return out


# Two JPEGs kept byte for byte: decoders differ on them (see facex/src/detect/decode.rs).
JPEGS = {
    "group-original": ("t1", "insightface t1.jpg as shipped (JPEG)"),
    "portrait-second-face": ("obama", "obama.jpg as shipped (JPEG): a small second face at 0.82"),
}


def main():
    torch.set_num_threads(1)
    mtcnn = MTCNN(select_largest=True, keep_all=True, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        src = fetch(tmp)
        src["obama"] = os.path.join(os.path.dirname(src["partial"]), "obama.jpg")
        pics = {name: (None, note) for name, (_, note) in JPEGS.items()}
        pics.update(photos(src))
        for name, (im, note) in pics.items():
            if im is None:
                path = os.path.join(OUT, f"{name}.jpg")
                shutil.copyfile(src[JPEGS[name][0]], path)
            else:
                path = os.path.join(OUT, f"{name}.png")
                im.save(path, optimize=True)
            # Exactly what our loader reads back, as RGB.
            rgb = Image.open(path).convert("RGB")
            boxes, probs, points = mtcnn.detect(rgb, landmarks=True)
            if boxes is None:
                boxes, probs, points = np.zeros((0, 4)), [], np.zeros((0, 5, 2))
            j = {
                "image": os.path.basename(path),
                "source": note,
                "width": rgb.width,
                "height": rgb.height,
                "mtcnn": {"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7], "factor": 0.709},
                "boxes": [[float(v) for v in b] for b in boxes],
                "probs": [float(p) for p in probs],
                "landmarks5": [[[float(v) for v in p] for p in pts] for pts in points],
            }
            with open(os.path.join(OUT, f"{name}.detect.json"), "w") as f:
                json.dump(j, f, indent=1)
            print(f"{name}: {rgb.width}x{rgb.height}, {len(j['probs'])} faces, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
