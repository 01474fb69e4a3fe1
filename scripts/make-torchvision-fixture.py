#!/usr/bin/env python3
"""Write tests/fixtures/torchvision/: a randomly initialised torchvision Swin saved by PyTorch, the
way `swin_b-68c6b09e.pth` is saved (a plain state dict, torch.save zip format), and its stage
outputs on a fixed input, so that `facex train`'s ImageNet initialisation is tested on the real
file format and key layout without the 350 MB download.

The architecture is torchvision's SwinTransformer (the class behind `swin_b`) at a small width:
embed 16, depths [1,1,1,1], heads [1,2,4,8], window 7, patch 4 (Swin-B is 128, [2,2,18,2],
[4,8,16,32]). Key names are the same at every size.

    pip install torch torchvision safetensors
    python3 scripts/make-torchvision-fixture.py
"""
import os

import torch
from safetensors.torch import save_file
from torchvision.models.swin_transformer import SwinTransformer

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "torchvision")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
model = SwinTransformer(
    patch_size=[4, 4], embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=[7, 7],
    stochastic_depth_prob=0.0, num_classes=10,
).eval()
# Random LayerNorm affines and bias tables, so that a swapped or ignored tensor shows up.
with torch.no_grad():
    for name, p in model.named_parameters():
        if p.dim() == 1 or "relative_position_bias_table" in name:
            p.add_(torch.randn_like(p) * 0.2)
torch.save(model.state_dict(), os.path.join(out, "swin_random.pth"))

x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
stages = {}
with torch.no_grad():
    h = x
    for i, layer in enumerate(model.features):
        h = layer(h)
        if i in (1, 3, 5, 7):  # after each stage's blocks: NHWC
            stages[f"stage{(i + 1) // 2}"] = h.permute(0, 3, 1, 2).contiguous()
save_file({"input": x, **stages}, os.path.join(out, "swin_random.io.safetensors"))
print("wrote", sorted(os.listdir(out)))
