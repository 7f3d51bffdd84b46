#!/usr/bin/env python3
"""Regenerates weights/demo/digits.npy and weights/demo/digits-labels.npy: the UCI
handwritten digits that scikit-learn bundles (1797 8x8 images, BSD-3-Clause), laid out
the way MNIST digits sit in 28x28 and in the shipped LeNet's input space.

MNIST's recipe (LeCun et al.): the digit's bounding box is scaled, keeping its aspect
ratio, to fit a 20x20 box, then placed in a 28x28 field so that its centre of mass lies
at the field's centre. LeNet was trained on MNIST scaled by 0.00390625 (1/256), so its
input space is about [0, 1] with white ink on black: 8x8 values 0..16 map to 0..1.

Usage: pip install scikit-learn scipy && python3 tools/make-digits.py [OUT_DIR]
The result is stored as float16 (every value a multiple of about 1/2048, well below one
grey level) to keep the file small; dgnam reads float16 .npy files as float32.
"""
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.datasets import load_digits

FIELD, BOX = 28, 20


def mnist_like(img8):
    v = img8.astype(np.float64) / 16.0
    rows, cols = np.nonzero(v > 0)
    v = v[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    # grid_mode treats each 8x8 value as the mean of a square area, as the UCI blocks are.
    zoom = BOX / max(v.shape)
    big = ndimage.zoom(v, zoom, order=1, grid_mode=True, mode="grid-constant", cval=0.0)
    big = np.clip(big, 0.0, 1.0)
    h, w = big.shape
    cy, cx = ndimage.center_of_mass(big)
    top = int(round(FIELD / 2 - 0.5 - cy))
    left = int(round(FIELD / 2 - 0.5 - cx))
    top, left = min(max(top, 0), FIELD - h), min(max(left, 0), FIELD - w)
    out = np.zeros((FIELD, FIELD))
    out[top : top + h, left : left + w] = big
    return out


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "weights" / "demo")
    digits = load_digits()
    images = np.stack([mnist_like(im) for im in digits.images])[:, None, :, :]
    np.save(out_dir / "digits.npy", images.astype(np.float16))
    np.save(out_dir / "digits-labels.npy", digits.target.astype(np.float32))
    print(f"wrote {out_dir / 'digits.npy'}: {images.shape}, labels {np.bincount(digits.target).tolist()}")


if __name__ == "__main__":
    main()
