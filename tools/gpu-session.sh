#!/usr/bin/env bash
# Prepares one GPU session: builds .gpu/ with ../shared/tools/gpu-bundle.sh, then writes
# .gpu/session.sh, which on the GPU machine (from the repository root, $OUT set) runs, each
# step in its own process under a time limit and inside an overall deadline:
#   1. nvidia-smi, `dgnam kernels` for the device, `forward --device auto` twice
#      (cold, then from the PTX cache) and against `--device cpu`;
#   2. every ignored GPU test, one process per test (a sticky CUDA error in one cannot
#      fail the rest); the first failing test is rerun under compute-sanitizer;
#   3. the DGN-AM step benchmark in f32 and TF32, all 1000 units x 200 iterations of
#      synthesize (f32, and TF32 if time is left), the kernel benchmark at batch 64 in
#      both precisions, and every kernel version side by side (`bench --versions`);
#   4. a real out-of-memory (PyTorch holds most of the GPU) that synthesize must survive
#      by halving its batch.
# Logs and JSON land in $OUT. Usage: tools/gpu-session.sh [deadline seconds, default 380]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
deadline=${1:-380}
../shared/tools/gpu-bundle.sh
cat > .gpu/session.sh <<EOF
#!/usr/bin/env bash
cd "\$(dirname "\$0")/.."
OUT=\${OUT:-/tmp/out}; mkdir -p "\$OUT"
exec > >(tee -a "\$OUT/session.log") 2>&1
T0=\$(date +%s); DEADLINE=$deadline
EOF
cat >> .gpu/session.sh <<'EOF'
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/device.txt"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(dirname "$(find /usr /opt -name "libnvrtc.so.13*" 2>/dev/null | head -n 1)" 2>/dev/null); do [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
export REQUIRE_GPU=1 REQUIRE_NVRTC=1 RUST_BACKTRACE=1 DGNAM_CACHE_DIR=/tmp/dgnam-ptx
B=.gpu/bin
# step NAME LIMIT CMD...: runs CMD under min(LIMIT, time left), prints its status and time.
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( DEADLINE - ($(date +%s) - T0) ))
  (( left < limit )) && limit=$left
  if (( limit < 5 )); then echo "== $name: skipped (deadline)"; return 99; fi
  echo "== $name (limit ${limit}s)"
  local s=$(date +%s.%N)
  timeout "$limit" "$@"; local rc=$?
  echo "== $name: rc $rc, $(python3 -c "import time; print(round(time.time() - $s, 2))") s"
  return $rc
}
step kernels 60 $B/dgnam kernels
step convert 60 bash -c "$B/dgnam-convert --prototxt weights/caffenet.prototxt --random-weights 1 -o /tmp/c.dgnw && $B/dgnam-convert --prototxt weights/generator-fc6.prototxt --random-weights 2 -o /tmp/g.dgnw"
python3 -c "import numpy as np; np.save('/tmp/x.npy', np.random.default_rng(0).uniform(-100, 100, (1, 3, 227, 227)).astype(np.float32))"
step forward-cold 60 $B/dgnam forward --device auto --net /tmp/c.dgnw --input /tmp/x.npy --no-mean --layer fc8 --out-dir /tmp/fwd-gpu
echo "PTX cache files: $(ls /tmp/dgnam-ptx | wc -l)"
step forward-cached 60 $B/dgnam forward --device auto --net /tmp/c.dgnw --input /tmp/x.npy --no-mean --layer fc8 --out-dir /tmp/fwd-gpu2
step forward-cpu 60 $B/dgnam forward --device cpu --net /tmp/c.dgnw --input /tmp/x.npy --no-mean --layer fc8 --out-dir /tmp/fwd-cpu
python3 -c "
import glob, numpy as np
for g in sorted(glob.glob('/tmp/fwd-gpu/*.npy')):
    a, b = np.load(g), np.load(g.replace('fwd-gpu', 'fwd-cpu'))
    print('forward CLI', g.split('/')[-1], 'max|gpu-cpu|', float(np.abs(a - b).max()), 'max|cpu|', float(np.abs(b).max()))
"
failed=""
for t in $($B/test-cuda --ignored --list --format terse 2>/dev/null | sed -n 's/: test$//p'); do
  step "test $t" 240 $B/test-cuda --ignored --exact "$t" --test-threads=1 --nocapture || failed="$failed $t"
done
echo "FAILED TESTS:${failed:- none}"
first=$(echo $failed | awk '{print $1}')
if [ -n "$first" ] && command -v compute-sanitizer >/dev/null; then
  step "sanitizer $first" 120 compute-sanitizer --print-limit 20 $B/test-cuda --ignored --exact "$first" --test-threads=1
fi
# `dgnam gradcheck --device cuda`: every layer of CaffeNet and the fc6 generator (random
# weights, real shapes) forward and backward on the GPU against the CPU, at SPEC 6's bound.
for n in caffenet generator-fc6; do
  step "gradcheck $n" 120 $B/dgnam gradcheck --net weights/$n.prototxt --device cuda --json "$OUT/gradcheck-$n.json" || failed="$failed gradcheck-$n"
done
step bench-step-f32 90 $B/dgnam bench --device cuda --batch 1,8,32,64,128 --json "$OUT/bench-step-f32.json"
step bench-step-tf32 90 $B/dgnam bench --device cuda --precision tf32 --batch 8,32,64,128 --json "$OUT/bench-step-tf32.json"
step bench-step-bf16 60 $B/dgnam bench --device cuda --precision bf16 --batch 64,128 --json "$OUT/bench-step-bf16.json"
# PyTorch + cuDNN on the same GPU in the same run: f32, TF32 and BF16 (autocast).
step torch-reference 120 python3 benches/torch_reference.py --device cuda --batch 64,128 --iters 10 --json "$OUT/torch-reference.json"
# All 1000 classes at the paper's 200 iterations, images and montage written, in f32.
step synth-1000x200-f32 120 bash -c "time $B/dgnam synthesize --device cuda --net /tmp/c.dgnw --generator /tmp/g.dgnw --units all --iters 200 --batch 125 --out-dir /tmp/synth32 > /tmp/synth32.log 2>&1; rc=\$?; tail -n 5 /tmp/synth32.log; exit \$rc"
cp /tmp/synth32/summary.json "$OUT/summary-f32.json" 2>/dev/null
# A real out-of-memory: PyTorch holds all but 6 GiB of the GPU, so `--batch 1000` cannot
# fit; synthesize must say so, halve the batch until it fits, and still finish all 1000
# units (summary.json counts them).
rm -f /tmp/ballast.ready
python3 -c "
import torch, time
free, total = torch.cuda.mem_get_info()
keep = free - 6 * 2**30
x = torch.empty(keep, dtype=torch.uint8, device='cuda')
print('ballast: holding', round(keep / 2**30, 1), 'GiB of', round(total / 2**30, 1), flush=True)
open('/tmp/ballast.ready', 'w').close()
time.sleep(150)
" & ballast=$!
for _ in $(seq 60); do [ -e /tmp/ballast.ready ] && break; kill -0 $ballast 2>/dev/null || { echo "ballast: failed"; break; }; sleep 1; done
step oom-retry 120 bash -c "$B/dgnam synthesize --device cuda --net /tmp/c.dgnw --generator /tmp/g.dgnw --units all --iters 10 --batch 1000 --out-dir /tmp/synth-oom > /tmp/oom.log 2>&1; rc=\$?; grep -i 'out of GPU memory' /tmp/oom.log; tail -n 3 /tmp/oom.log; exit \$rc"
kill $ballast 2>/dev/null; wait $ballast 2>/dev/null
python3 -c "
import json
u = json.load(open('/tmp/synth-oom/summary.json'))['units']
print('oom-retry: units in summary.json:', len(u), '(1000 expected)')
" 2>&1 | tee "$OUT/oom-retry.txt"
cp /tmp/oom.log "$OUT/oom-retry.log" 2>/dev/null
step bench-kernels-f32-b64 90 $B/dgnam bench --device cuda --kernel-batch 64 --json "$OUT/bench-kernels-f32-b64.json"
# Every version of the versioned kernels (im2col, col2im) per layer, side by side, and the
# choices the tuner made in this session.
step bench-versions-b64 90 $B/dgnam bench --device cuda --versions --kernel-batch 64 --json "$OUT/bench-versions-b64.json"
step bench-versions-tf32-b64 90 $B/dgnam bench --device cuda --versions --precision tf32 --kernel-batch 64 --json "$OUT/bench-versions-tf32-b64.json"
cp /tmp/dgnam-ptx/kernel-versions.json "$OUT/" 2>/dev/null
step bench-kernels-tf32-b64 90 $B/dgnam bench --device cuda --precision tf32 --kernel-batch 64 --json "$OUT/bench-kernels-tf32-b64.json"
step synth-1000x200-tf32 120 bash -c "time $B/dgnam synthesize --device cuda --precision tf32 --net /tmp/c.dgnw --generator /tmp/g.dgnw --units all --iters 200 --batch 125 --out-dir /tmp/synth19 > /tmp/synth19.log 2>&1; rc=\$?; tail -n 5 /tmp/synth19.log; exit \$rc"
echo "total $(( $(date +%s) - T0 )) s; failed:${failed:- none}"
EOF
chmod +x .gpu/session.sh
echo "ready: run 'bash .gpu/session.sh' on the GPU machine with carry [\".gpu\"]"
