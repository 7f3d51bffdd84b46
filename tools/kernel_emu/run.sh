#!/usr/bin/env bash
# Runs the kernels of kernels/*.cu on the CPU under a small CUDA emulation (one std::thread
# per CUDA thread, block barriers, warp shuffles) against naive double-precision references.
# Checks kernel logic (tiling, index arithmetic, window rules) without a GPU; it cannot see
# GPU-only faults (misaligned vector loads, races the emulation's scheduling hides).
# Needs g++ with C++20.
#
# Usage: run.sh [CASES]  (the cases, one per line, from the file CASES or from stdin; the
# line formats are at the top of kernels_on_host.cpp). The test suite's cases are the tables
# in tests/cuda.rs, which runs them with every entry point checked as launched:
#   cargo test --release --test cuda host_emulation
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# x86-64: cuda_emu.h switches fibers by hand, which CET shadow stacks would refuse.
flags=()
[ "$(uname -m)" = x86_64 ] && flags+=(-fcf-protection=none)
# EMU_CXXFLAGS: extra g++ flags, e.g. -DDGNAM_EMU_NO_CP_ASYNC_WAIT (a mutant the suite
# runs to show that a missing cp.async wait fails).
g++ -std=c++20 -O1 -w "${flags[@]}" ${EMU_CXXFLAGS:-} "$dir/kernels_on_host.cpp" -o "$out/kernels_on_host"
"$out/kernels_on_host" "$@"
