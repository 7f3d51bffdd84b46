// Minimal host emulation of the CUDA features the kernels use: one std::thread per CUDA
// thread, blocks run one after another, __syncthreads as a block barrier, warp shuffles
// through a per-warp exchange buffer.
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
#include <functional>
#include <memory>
#include <algorithm>
using std::min; using std::max;
struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __restrict__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline std::barrier<>* g_block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> g_warp_barriers;
inline double g_warp_buf[64][32];
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
template <typename T> T __shfl_xor_sync(unsigned, T v, int o) {
    int t = threadIdx.x, w = t / 32, l = t % 32;
    g_warp_buf[w][l] = (double)v;
    g_warp_barriers[w]->arrive_and_wait();
    T r = (T)g_warp_buf[w][l ^ o];
    g_warp_barriers[w]->arrive_and_wait();
    return r;
}
template <typename... A, typename... B>
void launch(void (*k)(A...), dim3 grid, dim3 block, B... args) {
    gridDim = grid; blockDim = block;
    unsigned nt = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; bz++) for (unsigned by = 0; by < grid.y; by++) for (unsigned bx = 0; bx < grid.x; bx++) {
        std::barrier<> bar(nt);
        g_block_barrier = &bar;
        g_warp_barriers.clear();
        for (unsigned w = 0; w < (nt + 31) / 32; w++) g_warp_barriers.emplace_back(new std::barrier<>(std::min(32u, nt - w * 32)));
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < nt; t++) ts.emplace_back([&, t] { threadIdx = {t, 0, 0}; blockIdx = {bx, by, bz}; k(args...); });
        for (auto& th : ts) th.join();
    }
}
