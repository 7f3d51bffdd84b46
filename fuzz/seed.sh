#!/usr/bin/env bash
# Builds fuzz/corpus/<target>/ from the repository's fixtures: small files only, large ones
# cut to their first bytes (the structure the fuzzer mutates is at the start).
set -euo pipefail
cd "$(dirname "$0")/.."
C=fuzz/corpus
F=tests/fixtures/caffe
mkdir -p $C/prototxt $C/caffemodel $C/binaryproto $C/weights $C/npy $C/onnx
cp tests/fixtures/onnx/*.onnx $C/onnx/
for p in $(find tests/fixtures weights -name '*.prototxt' -size -16k); do
    cp "$p" "$C/prototxt/$(echo "$p" | tr / _)"
done
cp $F/opencv_layers/*.caffemodel $C/caffemodel/
for m in lenet_mnist lenet_mnist_v1 cifar10_quick_v1; do
    head -c 8192 $F/$m/*.caffemodel > $C/caffemodel/$m.head
done
cp $F/cifar10_quick_v1/mean.binaryproto $C/binaryproto/
head -c 2048 $F/cifar10_quick_v1/mean.binaryproto > $C/binaryproto/mean.head
for n in convolution deconvolution inner_product; do
    cargo run -q --release --bin dgnam-convert -- --prototxt $F/opencv_layers/layer_$n.prototxt \
        --caffemodel $F/opencv_layers/layer_$n.caffemodel -o $C/weights/$n.dgnw
done
python3 - "$C/npy" <<'PY'
import struct, sys
out = sys.argv[1]
def npy(name, descr, shape, values, version=1):
    dims = "".join(f"{d}, " for d in shape)
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}".encode()
    fmt = "<" + descr[-2:].replace("f4", "f").replace("f8", "d") * len(values)
    body = struct.pack(fmt, *values)
    size = b"<H" if version == 1 else b"<I"
    with open(f"{out}/{name}", "wb") as f:
        f.write(b"\x93NUMPY" + bytes([version, 0]) + struct.pack(size.decode(), len(header) + 1) + header + b"\n" + body)
npy("f4_2x3.npy", "<f4", (2, 3), [0.5 * i for i in range(6)])
npy("f8_3.npy", "<f8", (3,), [1.0, -2.0, 3.5])
npy("scalar.npy", "<f4", (), [7.0])
npy("v2_1x2x2x2.npy", "<f4", (1, 2, 2, 2), list(range(8)), version=2)
PY
head -c 4096 $F/imagenet_mean/ilsvrc_2012_mean.npy > $C/npy/mean.head
du -sh $C/*
