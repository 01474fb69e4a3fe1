#!/usr/bin/env python3
"""Write tests/fixtures/facexformer-hd24/ and tests/fixtures/facexformer-hd64/: official outputs of
two small FaceXFormer configs whose Swin attention heads are 24 and 64 wide (the tiny fixture's are
all 32), so that the device path is tested at head dims its specialised kernels do not cover.

    hd24: embed 12, depths [2,2,2,2], heads [1,1,2,4]  -> Swin head dims 12, 24, 24, 24;
          decoder dim 48, 2 heads                      -> decoder head dims 24 (self), 12 (cross)
    hd64: embed 16, depths [2,2,2,1], heads [1,1,1,2]  -> Swin head dims 16, 32, 64, 64;
          decoder dim 64, 1 head                       -> decoder head dims 64 (self), 32 (cross)

(A config with 24 or 64 in every stage would need stage 4 at 192 or 512 wide: megabytes of
weights. hd64's stage 4 has one block, which at 7x7 is unshifted anyway; stage 3 keeps the shifted
block with its mask at head dim 64.) The numbers come from /work/shared/fixtures/make_fixtures.py (the official model code,
float64 reference, `--no-grads --strict`); this script only trims its io.safetensors to stay
small: the first sample of the batch (in eval mode every sample is computed on its own), the
segmentation logits at every 3rd row and column (`out.segmentation.every3`; 3 is coprime to the
4x upsampling, so all interpolation phases are covered), the stage outputs and the decoder
tokens; the large intermediates (fused map, decoder image, positional encoding) are dropped.
Weights are copied as weights.safetensors only (model.pt is the same numbers).

    python3 scripts/make-headdim-fixtures.py [/work/shared/fixtures/make_fixtures.py]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from safetensors.torch import load_file, save_file

MAKE = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/fixtures/make_fixtures.py"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
CONFIGS = {
    "facexformer-hd24": ("12:2,2,2,2:1,1,2,4:48,2,96", 24),
    "facexformer-hd64": ("16:2,2,2,1:1,1,1,2:64,1,128", 64),
}

for name, (config, seed) in CONFIGS.items():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, MAKE, tmp, "--config", config, "--seed", str(seed), "--no-grads", "--strict"],
                       check=True)
        io = load_file(os.path.join(tmp, "io.safetensors"))
        keep = {"input": io["input"][:1].contiguous()}
        for k, v in io.items():
            if k.startswith("out.") and k != "out.segmentation":
                keep[k] = v[:1].contiguous()
            elif k.startswith("inter.stage") or k == "inter.decoder_tokens":
                keep[k] = v[:1].contiguous()
        keep["out.segmentation.every3"] = io["out.segmentation"][:1, :, ::3, ::3].contiguous()
        out = os.path.join(ROOT, name)
        os.makedirs(out, exist_ok=True)
        save_file(keep, os.path.join(out, "io.safetensors"))
        for f in ["weights.safetensors", "config.json", "float32_errors.json"]:
            shutil.copy(os.path.join(tmp, f), os.path.join(out, f))
        cfg = json.load(open(os.path.join(out, "config.json")))
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(name, cfg["backbone"], cfg["decoder"], f"{size / 1e6:.2f} MB")
