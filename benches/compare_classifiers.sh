#!/usr/bin/env bash
# dgnam against PyTorch on torchvision classifiers, on this CPU, back to back, the same thread
# count, f32, random weights: the forward pass and the backward pass of one logit per sample
# to the input (`dgnam bench --generator none` and benches/torch_classifier.py). Each model is
# exported to ONNX by PyTorch and converted by dgnam-convert; each side then runs ROUNDS
# times, alternating, and the best median of each is compared.
#
#   benches/compare_classifiers.sh [MODELS (efficientnet_b0,mobilenet_v2)] [BATCHES (1,8)] [ITERS (4)] [ROUNDS (2)]
#
# Needs a release build (cargo build --release) and python3 with torch, torchvision and onnx.
# BIN=path picks another dgnam binary. ISA=avx2 caps both sides at AVX2, as in compare_cpu.sh
# (build BIN with --no-default-features so that its GEMM has no AVX-512 kernels either).
set -euo pipefail
cd "$(dirname "$0")/.."
models=${1:-efficientnet_b0,mobilenet_v2}
batches=${2:-1,8}
iters=${3:-4}
rounds=${4:-2}
threads=${THREADS:-$(nproc)}
bin=${BIN:-target/release/dgnam}
convert=${CONVERT:-target/release/dgnam-convert}
case "${ISA:-native}" in
  native) ;;
  avx2) export DGNAM_CPU=v3 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ;;
  *) echo "compare_classifiers.sh: ISA is native or avx2, not '$ISA'" >&2; exit 1 ;;
esac
[ -x "$bin" ] && [ -x "$convert" ] || { echo "compare_classifiers.sh: build first: cargo build --release" >&2; exit 1; }
python3 -c "import torch, torchvision, onnx" 2>/dev/null \
  || { echo "compare_classifiers.sh: python3 cannot import torch, torchvision and onnx" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "CPU: $cpu, $(nproc) cores, $threads threads each side, ISA ${ISA:-native}"
for model in ${models//,/ }; do
  THREADS=$threads python3 benches/torch_classifier.py "$model" --batch 1 --iters 1 --export "$out/$model.onnx" >/dev/null 2>"$out/err" \
    || { cat "$out/err" >&2; exit 1; }
  "$convert" --onnx "$out/$model.onnx" -o "$out/$model.dgnw" >/dev/null 2>"$out/err" || { cat "$out/err" >&2; exit 1; }
  for r in $(seq 1 "$rounds"); do
    RAYON_NUM_THREADS=$threads "$bin" bench --device cpu --net "$out/$model.dgnw" --generator none --batch "$batches" \
      --iters "$iters" --json "$out/$model-dgnam-$r.json" >/dev/null 2>"$out/err" || { cat "$out/err" >&2; exit 1; }
    THREADS=$threads python3 benches/torch_classifier.py "$model" --batch "$batches" --iters "$iters" \
      --json "$out/$model-torch-$r.json" >/dev/null 2>"$out/err" || { cat "$out/err" >&2; exit 1; }
  done
done
python3 - "$out" "$models" "$rounds" <<'PY'
import json, sys
out, models, rounds = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
print(f"{'model':<20} {'batch':>5} {'dgnam ms':>10} {'torch ms':>10} {'dgnam/torch':>12}")
for m in models:
    d, t = {}, {}
    for r in range(1, rounds + 1):
        for s in json.load(open(f"{out}/{m}-dgnam-{r}.json"))["steps"]:
            d[s["batch"]] = min(d.get(s["batch"], 1e9), s["median_s"] * 1e3)
        for s in json.load(open(f"{out}/{m}-torch-{r}.json")):
            t[s["batch"]] = min(t.get(s["batch"], 1e9), s["median_ms"])
    for b in sorted(d):
        print(f"{m:<20} {b:5} {d[b]:10.1f} {t[b]:10.1f} {d[b] / t[b]:12.2f}")
PY
