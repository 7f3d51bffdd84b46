#!/usr/bin/env bash
# dgnam's DGN-AM step against PyTorch's on this CPU, back to back, the same thread count,
# f32, random weights at real shapes (the fc6 generator + CaffeNet, one fc8 unit per sample).
# Each side runs ROUNDS times, alternating, and the best median of each is compared.
#
#   benches/compare_cpu.sh [BATCHES (1,8)] [ITERS (5)] [ROUNDS (2)]
#
# Needs a release build (cargo build --release) and python3 with torch. BIN=path picks
# another dgnam binary. ISA=avx2 caps both sides at AVX2 on an AVX-512 machine: dgnam's loops
# (DGNAM_CPU=v3; build BIN with --no-default-features so its GEMM has no AVX-512 kernels
# either) and PyTorch's (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2).
set -euo pipefail
cd "$(dirname "$0")/.."
batches=${1:-1,8}
iters=${2:-5}
rounds=${3:-2}
threads=${THREADS:-$(nproc)}
bin=${BIN:-target/release/dgnam}
case "${ISA:-native}" in
  native) ;;
  avx2) export DGNAM_CPU=v3 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ;;
  *) echo "compare_cpu.sh: ISA is native or avx2, not '$ISA'" >&2; exit 1 ;;
esac
[ -x "$bin" ] || { echo "compare_cpu.sh: build first: cargo build --release" >&2; exit 1; }
python3 -c "import torch" 2>/dev/null || { echo "compare_cpu.sh: python3 cannot import torch (pip install torch)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "CPU: $cpu, $(nproc) cores, $threads threads each side, ISA ${ISA:-native}"
for r in $(seq 1 "$rounds"); do
  RAYON_NUM_THREADS=$threads "$bin" bench --device cpu --batch "$batches" --iters "$iters" --json "$out/dgnam-$r.json" >/dev/null 2>"$out/err" \
    || { cat "$out/err" >&2; exit 1; }
  OMP_NUM_THREADS=$threads python3 benches/torch_reference.py --device cpu --batch "$batches" --iters "$iters" --json "$out/torch-$r.json" >/dev/null 2>"$out/err" \
    || { cat "$out/err" >&2; exit 1; }
done
python3 - "$out" "$rounds" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def best(prefix):
    b = {}
    for r in range(1, rounds + 1):
        for s in json.load(open(f"{out}/{prefix}-{r}.json"))["steps"]:
            b[s["batch"]] = min(b.get(s["batch"], 1e9), s["median_s"])
    return b
d, t = best("dgnam"), best("torch")
print(f"{'batch':>5} {'dgnam ms':>10} {'torch ms':>10} {'dgnam/torch':>12}")
for batch in sorted(d):
    print(f"{batch:5} {d[batch]*1e3:10.1f} {t[batch]*1e3:10.1f} {d[batch]/t[batch]:12.2f}")
PY
