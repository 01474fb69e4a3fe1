#!/usr/bin/env bash
# Rebuilds the seed corpora fuzz/corpus/<target>/ from real formats (see docs/fuzzing.md):
# the synthetic dataset writer (`facex data synth`), the MAT fixtures of data/tests, the legacy
# MTCNN checkpoint, and tiny checkpoints and images written by torch/safetensors/PIL.
# Needs target/release/facex (`cargo build --release -p facex`) and python3 with torch, numpy,
# safetensors and PIL. Kept small: the whole corpus is well under 2 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
out=fuzz/corpus
rm -rf "$out"
mkdir -p "$out"/{checkpoint_zip_pickle,safetensors,image,annotations,mat_v5,hdf5}
synth=$(mktemp -d)
trap 'rm -rf "$synth"' EXIT
target/release/facex data synth --out "$synth" --count 2 >/dev/null

# MAT: Level 5 and v7.3 (HDF5) fixtures, plus the synthetic COFW / 300W-LP files.
mats=data/tests/fixtures/mat
for f in "$mats"/types.mat "$mats"/cofw_v5/COFW.mat "$mats"/300w_lp/*/*.mat "$mats"/300w_lp/landmarks/AFW/*.mat \
    "$mats"/aflw2000/AFLW2000/*.mat; do
    cp "$f" "$out/mat_v5/$(echo "${f#*/mat/}" | tr / _)"
done
cp "$synth"/300w_lp/AFW/synth_000000.mat "$out/mat_v5/synth_300w_lp.mat"
for f in "$mats"/latest.mat "$mats"/hostile_big.mat "$mats"/hostile_loop.mat "$mats"/cofw/*.mat; do
    cp "$f" "$out/hdf5/$(basename "$f")"
done

# Checkpoints: MTCNN's legacy torch.save file (28 KB).
cp facex/models/mtcnn/pnet.pt "$out/checkpoint_zip_pickle/legacy_pnet.pt"

python3 - "$out" "$synth" <<'PY'
import io, os, sys
import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save as st_save

out, synth = sys.argv[1], sys.argv[2]
torch.manual_seed(0)

def w(path, data):
    with open(os.path.join(out, path), "wb") as f:
        f.write(data)

# torch.save zip files: a state dict (f32, f16, i64, bool, a strided view, a view with an offset),
# the official layout (state_dict_backbone beside other entries) and the legacy format.
base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
sd = {
    "conv.weight": torch.randn(2, 3, 1, 1),
    "conv.bias": torch.zeros(2),
    "half": torch.ones(3, dtype=torch.float16),
    "bn.num_batches_tracked": torch.tensor(5),
    "mask": torch.tensor([True, False]),
    "t": base.t(),
    "row": base[2],
}
for name, obj in [
    ("zip_state_dict.pt", sd),
    ("zip_official.pt", {"state_dict_backbone": {"a.weight": torch.randn(3, 2)}, "epoch": 3, "lr": 0.5,
                         "args": {"x": [1, 2, (3, "s")], "b": b"raw", "n": None}}),
]:
    buf = io.BytesIO(); torch.save(obj, buf); w("checkpoint_zip_pickle/" + name, buf.getvalue())
buf = io.BytesIO(); torch.save(sd, buf, _use_new_zipfile_serialization=False)
w("checkpoint_zip_pickle/legacy_state_dict.pt", buf.getvalue())

# safetensors: every dtype the loader converts, an empty tensor and metadata.
tensors = {
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3), "f16": np.ones(4, dtype=np.float16),
    "f64": np.array([1.5, -2.0]), "i64": np.array([1, 2, 3], dtype=np.int64),
    "i32": np.array([7], dtype=np.int32), "u8": np.array([1, 2], dtype=np.uint8),
    "b": np.array([True, False]), "empty": np.zeros((0, 3), dtype=np.float32),
}
w("safetensors/dtypes.safetensors", st_save(tensors, metadata={"format": "pt", "k": "v"}))
w("safetensors/one.safetensors", st_save({"x": np.array([[1.0]], dtype=np.float32)}))

# Images: 16 bytes of face box (x0 y0 x1 y1, f32 LE) then a small file in each decoded format.
box = np.array([6, 4, 26, 20], dtype="<f4").tobytes()
yy, xx = np.mgrid[0:24, 0:32]
rgb = Image.fromarray(np.stack([xx * 8, yy * 10, (xx + yy) * 4], -1).astype(np.uint8))
for fmt, mode, ext, kw in [("JPEG", "RGB", "jpg", {"quality": 80}), ("JPEG", "L", "grey.jpg", {}),
                           ("JPEG", "CMYK", "cmyk.jpg", {}), ("PNG", "RGB", "png", {}), ("PNG", "RGBA", "rgba.png", {}),
                           ("PNG", "P", "palette.png", {}), ("BMP", "RGB", "bmp", {}), ("GIF", "P", "gif", {}),
                           ("PPM", "RGB", "ppm", {}), ("TIFF", "RGB", "tif", {}), ("WEBP", "RGB", "webp", {"lossless": True})]:
    b = io.BytesIO()
    rgb.convert(mode).save(b, format=fmt, **kw)
    w("image/" + ext, box + b.getvalue())
b = io.BytesIO(); rgb.save(b, format="JPEG", progressive=True); w("image/progressive.jpg", box + b.getvalue())

# Annotations: a selector byte (see fuzz_targets/annotations.rs) then the file.
def ann(name, sel, data):
    w("annotations/" + name, bytes([sel]) + data)
def read(p):
    with open(os.path.join(synth, p), "rb") as f:
        return f.read()
pts = read("300w/afw/synth_000000.pts")
lapa = read("lapa/train/landmarks/synth_000000.txt")
ann("pts_text", 0, pts)
ann("lapa_text", 1, lapa)
ann("utkface_name", 2, sorted(n for n in os.listdir(os.path.join(synth, "utkface")) if n.endswith(".jpg"))[0].encode())
ann("celeba_attr", 3, read("celeba/list_attr_celeba.txt"))
ann("celeba_partition", 4, read("celeba/list_eval_partition.txt"))
ann("fairface_csv", 5, b"file,age,gender,race,service_test\ntrain/1.jpg,50-59,Male,East Asian,True\n"
                       b"train/2.jpg,more than 70,Female,Latino_Hispanic,False\n\"train/3.jpg\",3-9,Male,White,True\n")
wflw = " ".join(f"{10 + i % 50}.5" for i in range(196)) + " 5 6 90 95 0 1 0 0 1 0 51--Dresses/51_Dresses_wearingdress_51_377.jpg\n"
ann("wflw_list", 6, wflw.encode() * 2)
ann("celebamask_mapping", 7, b"idx orig_idx orig_file\n0 1 000001.jpg\n1 2 000002.jpg\n")
ann("pts_file", 8, pts)
ann("lapa_file", 9, lapa)
ann("cofw_mat", 10, open("data/tests/fixtures/mat/cofw_v5/COFW.mat", "rb").read())
ann("w300lp_mat", 11, read("300w_lp/AFW/synth_000000.mat"))
ann("aflw2000_mat", 12, open("data/tests/fixtures/mat/aflw2000/AFLW2000/image00002.mat", "rb").read())
PY
du -sh "$out"; for d in "$out"/*; do echo "$(basename "$d"): $(ls "$d" | wc -l) files, $(du -sh "$d" | cut -f1)"; done
