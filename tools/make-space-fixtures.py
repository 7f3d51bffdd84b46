#!/usr/bin/env python3
"""Builds tests/fixtures/onnx/space_*.npy: torch's view of a Caffe-space generator image in
torchvision's input space, at 224 (center crop) and 299 (bilinear resize), the reference
for dgnam's input-space conversion (src/synth/view.rs; tests/onnx.rs reads these files).

The 256x256 Caffe-space image is a formula the Rust test evaluates too, so it is not
stored. The references are computed in float64 and saved as float32, at every 9th row
and the last (the files stay small; every column is kept).

Run by hand (the Rust tests need no Python):
    pip install torch numpy
    python3 tools/make-space-fixtures.py
"""
import json
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "onnx")
# BVLC's ImageNet mean in BGR order (SPEC section 1) and torchvision's Normalize.
MEAN_BGR = np.array([104.0069879317889, 116.66876761696767, 122.6789143406786])
TV_MEAN = np.array([0.485, 0.456, 0.406])
TV_STD = np.array([0.229, 0.224, 0.225])
SIDE = 256


def caffe_image():
    """1 x 3 x 256 x 256, float32: pixel(c, y, x) in float64, rounded to float32, minus the
    mean rounded to float32 (as tests/onnx.rs computes it)."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(SIDE), np.arange(SIDE), indexing="ij")
    pixel = 127.5 + 100.0 * np.sin(0.05 * x + 0.3 * c) * np.cos(0.07 * y + 0.2 * c)
    return (pixel.astype(np.float32) - MEAN_BGR.astype(np.float32)[:, None, None])[None]


def torchvision_view(caffe, side):
    pixel = caffe.astype(np.float64) + MEAN_BGR[None, :, None, None]
    rgb = pixel[:, ::-1] / 255.0
    normalized = torch.from_numpy(((rgb - TV_MEAN[None, :, None, None]) / TV_STD[None, :, None, None]).copy())
    if side <= SIDE:
        o = (SIDE - side) // 2
        return normalized[:, :, o : o + side, o : o + side].numpy()
    resized = torch.nn.functional.interpolate(normalized, size=(side, side), mode="bilinear", align_corners=False, antialias=False)
    return resized.numpy()


def main():
    caffe = caffe_image()
    meta = {"source": "tools/make-space-fixtures.py", "torch": torch.__version__, "cases": []}
    for side in (224, 299):
        full = torchvision_view(caffe, side)[0]
        rows = sorted(set(range(0, side, 9)) | {side - 1})
        name = f"space_torchvision_{side}.npy"
        np.save(os.path.join(OUT, name), full[:, rows, :].astype(np.float32))
        meta["cases"].append({"side": side, "file": name, "rows": rows})
    with open(os.path.join(OUT, "space_torchvision.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
