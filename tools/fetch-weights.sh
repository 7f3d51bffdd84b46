#!/usr/bin/env bash
# Downloads the trained weights dgnam needs and converts them into weights/*.dgnw:
#   CaffeNet (BVLC, unrestricted use), checked against the BVLC model zoo's SHA-1; when
#     every BVLC address fails, the ONNX model zoo's caffenet-9.onnx (converted from the
#     same BVLC weights through Caffe2, BSD-3), checked against the sha256 that the zoo's
#     git-lfs pointer records, becomes weights/caffenet.dgnw with --input-space caffe;
#   the DeePSiM fc6/fc7/pool5 generators (Dosovitskiy & Brox 2016, non-commercial
#     research use only, per their authors), for which no digest is published: they are
#     checked by conversion (every blob's shape must match the shipped prototxts).
# Each file has a list of addresses tried in turn (these hosts have gone down before:
# caffe issues 5159, 6430, 6864); a download that fails or does not match its digest is
# deleted and the next address is tried. Every file that passes is recorded with its
# sha256 in weights/download/SHA256SUMS, and a later run checks it against that record.
#
# Usage: tools/fetch-weights.sh [--googlenet] [--zoo]    (about 700 MB of downloads)
#   --googlenet  BVLC GoogLeNet too (weights/googlenet.dgnw)
#   --zoo        the ONNX zoo's CaffeNet as well (weights/caffenet-zoo.dgnw), and both
#                CaffeNets compared on the same input (fc8 and prob to 1e-4)
set -euo pipefail
cd "$(dirname "$0")/.."
dl=weights/download
mkdir -p "$dl"
sums="$dl/SHA256SUMS"
touch "$sums"
googlenet=0 zoo=0
for a in "$@"; do
  case "$a" in
    --googlenet) googlenet=1 ;;
    --zoo) zoo=1 ;;
    *) echo "error: unknown option $a (usage: tools/fetch-weights.sh [--googlenet] [--zoo])" >&2; exit 2 ;;
  esac
done

download() { # url destination
  if command -v curl >/dev/null; then
    curl -fL --retry 2 --connect-timeout 20 -o "$2" "$1"
  else
    wget -T 20 -O "$2" "$1"
  fi
}

# digest_ok FILE KIND VALUE: KIND is sha256, sha1, or none (checked later by conversion).
digest_ok() {
  local got
  case "$2" in
    sha256) got=$(sha256sum "$1" | cut -d' ' -f1) ;;
    sha1) got=$(sha1sum "$1" | cut -d' ' -f1) ;;
    none) return 0 ;;
  esac
  [ "$got" = "$3" ] && return 0
  echo "  $1: $2 $got, expected $3" >&2
  return 1
}

# recorded_ok FILE: the file matches the sha256 recorded when it was first fetched.
recorded_ok() {
  local want got
  want=$(awk -v f="$(basename "$1")" '$2 == f { print $1 }' "$sums")
  [ -z "$want" ] && return 0
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$want" ] && return 0
  echo "error: $1 has sha256 $got, but $want was recorded in $sums when it was fetched (delete both to fetch again)" >&2
  exit 1
}

record() { # file
  local f
  f=$(basename "$1")
  grep -q "  $f\$" "$sums" || sha256sum "$1" | awk -v f="$f" '{ print $1 "  " f }' >> "$sums"
}

# fetch DEST KIND VALUE URL...: the first address whose download matches the digest.
fetch() {
  local dest=$1 kind=$2 value=$3 url
  shift 3
  if [ -s "$dest" ]; then
    recorded_ok "$dest"
    digest_ok "$dest" "$kind" "$value" || { echo "error: $dest does not match (delete it and rerun)" >&2; exit 1; }
    echo "have $dest"
    record "$dest"
    return 0
  fi
  for url in "$@"; do
    echo "downloading $url"
    if download "$url" "$dest.part" && digest_ok "$dest.part" "$kind" "$value"; then
      mv "$dest.part" "$dest"
      record "$dest"
      return 0
    fi
    rm -f "$dest.part"
    echo "  $url failed; trying the next address" >&2
  done
  return 1
}

cargo build --release --bin dgnam-convert --bin dgnam
convert=target/release/dgnam-convert
dgnam=target/release/dgnam

# The ONNX zoo's CaffeNet: opset 9, input data_0 1x3x224x224 (Caffe space), 243863553 bytes.
zoo_sha256=802138332cf3e423c82a9a80c76e4f9227dd4effb3aba55413601fa4345cfd36
zoo_path=vision/classification/caffenet/model/caffenet-9.onnx
fetch_zoo() {
  fetch "$dl/caffenet-9.onnx" sha256 "$zoo_sha256" \
    "https://github.com/onnx/models/raw/main/validated/$zoo_path" \
    "https://media.githubusercontent.com/media/onnx/models/main/validated/$zoo_path" \
    "https://github.com/onnx/models/raw/main/$zoo_path"
}

if fetch "$dl/bvlc_reference_caffenet.caffemodel" sha1 4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46 \
  http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel \
  https://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel; then
  $convert --prototxt weights/caffenet.prototxt --caffemodel "$dl/bvlc_reference_caffenet.caffemodel" -o weights/caffenet.dgnw
else
  echo "every BVLC address failed: falling back to the ONNX model zoo's CaffeNet (the same weights through Caffe2)" >&2
  fetch_zoo || { echo "error: no address of CaffeNet answered with the expected file" >&2; exit 1; }
  $convert --onnx "$dl/caffenet-9.onnx" --input-space caffe -o weights/caffenet.dgnw
  echo "note: weights/caffenet.dgnw is the zoo's net: 224x224 input, layers named after its ONNX tensors (dgnam info weights/caffenet.dgnw)" >&2
fi

zip="$dl/release_deepsim_v0.zip"
fetch "$zip" none - \
  https://lmb.informatik.uni-freiburg.de/resources/binaries/arxiv2016_alexnet_inversion_with_gans/release_deepsim_v0.zip \
  http://s.anhnguyen.me/release_deepsim_v0.zip \
  || { echo "error: no address of the DeePSiM generators answered" >&2; exit 1; }
rm -rf "$dl/deepsim" && mkdir -p "$dl/deepsim"
python3 -m zipfile -e "$zip" "$dl/deepsim"
for g in fc6 fc7 pool5; do
  model=$(find "$dl/deepsim" -path "*/$g/generator.caffemodel" | head -n 1)
  [ -n "$model" ] || { echo "error: $zip has no $g/generator.caffemodel" >&2; exit 1; }
  $convert --prototxt "weights/generator-$g.prototxt" --caffemodel "$model" -o "weights/generator-$g.dgnw"
done

if [ "$googlenet" = 1 ]; then
  fetch "$dl/bvlc_googlenet.caffemodel" sha1 405fc5acd08a3bb12de8ee5e23a96bec22f08204 \
    http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel \
    https://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel \
    || { echo "error: no address of GoogLeNet answered with the expected file" >&2; exit 1; }
  $convert --prototxt weights/googlenet.prototxt --caffemodel "$dl/bvlc_googlenet.caffemodel" -o weights/googlenet.dgnw
fi

if [ "$zoo" = 1 ]; then
  fetch_zoo || { echo "error: no address of the zoo's CaffeNet answered with the expected file" >&2; exit 1; }
  $convert --onnx "$dl/caffenet-9.onnx" --input-space caffe -o weights/caffenet-zoo.dgnw
  if [ -s "$dl/bvlc_reference_caffenet.caffemodel" ]; then
    # Both CaffeNets on one 224x224 input: the BVLC definition read at 224 (every shape
    # from conv1 on is the same as at 227) against the zoo's net.
    sed 's/dim: 227/dim: 224/g' weights/caffenet.prototxt > "$dl/caffenet-224.prototxt"
    $convert --prototxt "$dl/caffenet-224.prototxt" --caffemodel "$dl/bvlc_reference_caffenet.caffemodel" -o "$dl/caffenet-224.dgnw"
    python3 - "$dl" <<'EOF'
import struct, sys, random
d = sys.argv[1]
random.seed(0)
n = 3 * 224 * 224
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 224, 224), }"
header += " " * (63 - (len(header) + 10) % 64) + "\n"
with open(f"{d}/zoo-check-input.npy", "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack(f"<{n}f", *[random.gauss(0, 50) for _ in range(n)]))
EOF
    $dgnam forward --net "$dl/caffenet-224.dgnw" --input "$dl/zoo-check-input.npy" --layer prob --out-dir "$dl/zoo-check-bvlc"
    $dgnam forward --net weights/caffenet-zoo.dgnw --input "$dl/zoo-check-input.npy" --layer prob_1 --out-dir "$dl/zoo-check-zoo"
    python3 - "$dl" <<'EOF'
import struct, sys
def read(p):
    b = open(p, "rb").read()
    h = struct.unpack("<H", b[8:10])[0]
    return struct.unpack(f"<{(len(b) - 10 - h) // 4}f", b[10 + h:])
d = sys.argv[1]
a, z = read(f"{d}/zoo-check-bvlc/prob.npy"), read(f"{d}/zoo-check-zoo/prob_1.npy")
err = max(abs(x - y) for x, y in zip(a, z)) / max(abs(x) for x in a)
print(f"BVLC CaffeNet against the ONNX zoo's: prob differs by {err:.2e} of its largest value")
sys.exit(0 if err < 1e-4 else 1)
EOF
  fi
fi

$dgnam info weights/caffenet.dgnw | tail -n 2
echo "ready: $dgnam synthesize --units 945 --out-dir out"
