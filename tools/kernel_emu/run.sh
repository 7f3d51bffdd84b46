#!/usr/bin/env bash
# Runs every kernel of kernels/*.cu on the CPU under a small CUDA emulation (one std::thread
# per CUDA thread, block barriers, warp shuffles) against naive double-precision references.
# Checks kernel logic (tiling, index arithmetic, window rules) without a GPU; it cannot see
# GPU-only faults (misaligned vector loads, races the emulation's scheduling hides).
# Needs g++ with C++20. About a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
g++ -std=c++20 -O1 -pthread -w kernels_on_host.cpp -o "$out/kernels_on_host"
"$out/kernels_on_host"
