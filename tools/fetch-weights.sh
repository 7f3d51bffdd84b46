#!/usr/bin/env bash
# Downloads the trained weights dgnam needs and converts them into weights/*.dgnw:
#   CaffeNet (BVLC, unrestricted use), checked against the model zoo's SHA-1;
#   the DeePSiM fc6/fc7/pool5 generators (Dosovitskiy & Brox 2016, non-commercial
#   research use only, per their authors), checked by conversion: every blob's shape must
#   match the shipped generator prototxts.
# Usage: tools/fetch-weights.sh [--googlenet]     (about 700 MB of downloads)
set -euo pipefail
cd "$(dirname "$0")/.."
dl=weights/download
mkdir -p "$dl"

fetch() { # url destination
  local url=$1 dest=$2
  [ -s "$dest" ] && { echo "have $dest"; return 0; }
  echo "downloading $url"
  if command -v curl >/dev/null; then
    curl -fL --retry 3 -o "$dest.part" "$url" || { rm -f "$dest.part"; return 1; }
  else
    wget -O "$dest.part" "$url" || { rm -f "$dest.part"; return 1; }
  fi
  mv "$dest.part" "$dest"
}

check_sha1() { # file expected
  local got
  got=$(sha1sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "error: $1 has SHA-1 $got, expected $2 (a partial or different download; delete it and rerun)" >&2
    exit 1
  fi
}

cargo build --release --bin dgnam-convert --bin dgnam
convert=target/release/dgnam-convert

fetch http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel "$dl/bvlc_reference_caffenet.caffemodel"
check_sha1 "$dl/bvlc_reference_caffenet.caffemodel" 4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46
$convert --prototxt weights/caffenet.prototxt --caffemodel "$dl/bvlc_reference_caffenet.caffemodel" -o weights/caffenet.dgnw

zip="$dl/release_deepsim_v0.zip"
fetch https://lmb.informatik.uni-freiburg.de/resources/binaries/arxiv2016_alexnet_inversion_with_gans/release_deepsim_v0.zip "$zip" \
  || fetch http://s.anhnguyen.me/release_deepsim_v0.zip "$zip"
rm -rf "$dl/deepsim" && mkdir -p "$dl/deepsim"
python3 -m zipfile -e "$zip" "$dl/deepsim"
for g in fc6 fc7 pool5; do
  model=$(find "$dl/deepsim" -path "*/$g/generator.caffemodel" | head -n 1)
  [ -n "$model" ] || { echo "error: $zip has no $g/generator.caffemodel" >&2; exit 1; }
  $convert --prototxt "weights/generator-$g.prototxt" --caffemodel "$model" -o "weights/generator-$g.dgnw"
done

if [ "${1:-}" = "--googlenet" ]; then
  fetch http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel "$dl/bvlc_googlenet.caffemodel"
  check_sha1 "$dl/bvlc_googlenet.caffemodel" 405fc5acd08a3bb12de8ee5e23a96bec22f08204
  $convert --prototxt weights/googlenet.prototxt --caffemodel "$dl/bvlc_googlenet.caffemodel" -o weights/googlenet.dgnw
fi

target/release/dgnam info weights/caffenet.dgnw | tail -n 2
echo "ready: target/release/dgnam synthesize --units 945 --out-dir out"
